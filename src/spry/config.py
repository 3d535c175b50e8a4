"""One flat, frozen schema for a run, validated when built.

Two doors into the same schema: `Config.from_yaml(path, overrides)` for the CLI and
`Config.from_flat(mapping)` for engines that carry a flat key/value run config (Flower).
Defaults are the paper's (Panchal et al. 2024, Sec. 5 and App. C): LoRA r=1, alpha=1,
dropout 0.1 on query/value, K=1, AdamW lr 1e-4, FedYogi server, batch 8, max length 64,
one local epoch, five personalization epochs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A setting is wrong; the message names the field and the fix."""


METHODS = ("spry", "fedfgd", "backprop", "backprop_split", "fedsgd", "fedmezo", "baffle",
           "fwdllm")
PEFT_METHODS = ("lora", "ia3", "bitfit", "head")
ASSIGNMENTS = ("rotating", "static", "random")
HEAD_MODES = ("split", "shared")
SERVER_OPTIMIZERS = ("fedavg", "fedadam", "fedyogi")
CLIENT_OPTIMIZERS = ("sgd", "adam", "adamw")
COMMUNICATIONS = ("per_epoch", "per_iteration")
CONTEXTS = ("global", "local")
ENGINES = ("local", "flower")
DTYPES = ("float32", "float64", "bfloat16")
TASK_HEADS = ("classifier", "verbalizer", "span", "generate")
ON_ALL_CLIENTS_FAILED = ("continue", "stop")
RECIPES = ("spry", "paper")
POOLINGS = ("auto", "model", "cls", "mean", "max", "last")
HEAD_INITS = ("class_means", "random")
HEAD_GRADIENTS = ("exact", "estimator")
TANGENT_SHARINGS = ("example", "batch")

RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    # What this project measured to learn at CPU budgets (docs/learning.md): the head reads
    # the feature the model was trained to produce, starts from federated class means and
    # takes its exact gradient; forward gradients go to the adapters only, with one
    # tangent per example and none on a factor whose gradient is exactly zero.
    # The head is trained by every client (head=shared): its exact gradient costs nothing.
    "spry": dict(pooling="auto", head_init="class_means", head_gradient="exact",
                 tangent_sharing="example", skip_zero_factors=True, head="shared"),
    # The paper's recipe (Panchal et al. 2024): the architecture's own head, randomly
    # initialised, one shared tangent over every trainable tensor of the client.
    "paper": dict(pooling="model", head_init="random", head_gradient="estimator",
                  tangent_sharing="batch", skip_zero_factors=False, head="split"),
}

# Defaults that follow another choice (None in the schema): the server's step size follows
# its optimizer (FedAvg's mean replaces the weights; the paper's FedYogi steps 1e-2).
SERVER_LR = {"fedavg": 1.0, "fedadam": 1e-2, "fedyogi": 1e-2}
# The client's learning rate per recipe and method (None: every other method). The paper
# uses AdamW 1e-4 throughout; measured here (docs/learning.md), backprop learns faster at
# 1e-3, and fedsgd takes one plain SGD step a round (docs/baselines.md: 3e-2 its best).
CLIENT_LR = {"spry": {None: 1e-4, "backprop": 1e-3, "backprop_split": 1e-3, "fedsgd": 3e-2},
             "paper": {None: 1e-4}}
CHOICE_DEFAULTS = ("server_lr", "client_lr")


@dataclass(frozen=True)
class Config:
    recipe: str = "spry"
    """`spry`: this project's measured defaults for the settings below that are left unset
    (None); `paper`: the paper's exact recipe (docs/learning.md). Explicit values win."""

    # --- model and PEFT --------------------------------------------------------------
    model: str = "all-minilm-l6-v2"
    """Hub name, local directory, or a packaged alias (all-minilm-l6-v2)."""
    peft: str = "lora"
    """What a client trains: `lora` adapters, `ia3` scales, `bitfit` biases, or `head` only
    (the classification head over a frozen model)."""
    lora_r: int = 1
    """LoRA rank r (the paper: 1)."""
    lora_alpha: float = 1.0
    """LoRA scaling alpha (the update is B A times alpha / r)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch's input, in [0, 1)."""
    target_modules: list[str] | None = None
    """None picks the paper's query/value modules for the architecture."""
    dtype: str = "float32"
    """The frozen model's dtype: float32, float64 or bfloat16."""
    device: str = "cpu"
    """torch device for the model and every client step (cpu, cuda, cuda:1, ...)."""
    task_head: str = "classifier"
    """`classifier`: a sequence-classification head (a trainable unit); `verbalizer`: a
    causal LM scores each label's word as the next token after the text (no head unit);
    `span`: extractive QA, start/end logits from the `qa_outputs` head (dataset=squad_v2);
    `generate`: QA on a causal LM, which writes the answer (dataset=squad_v2; no head unit)."""
    label_words: list[str] | None = None
    """task_head=verbalizer: one word per label, in label order (default: the recipe's
    words, else the label names); each is scored by its first token after a space."""

    pooling: str | None = None
    """task_head=classifier: which feature a linear head reads. `auto`: what a
    sentence-transformers model declares (modules.json, 1_Pooling/config.json: mean, cls or
    max, normalised or not), else the architecture's convention (the first token for
    encoders, the last real token for decoders); `cls`, `mean`, `max`, `last`: that pooling
    of the last hidden states, unnormalised; `model`: the architecture's own head
    (AutoModelForSequenceClassification, e.g. BERT's [CLS] pooler). None: the recipe's."""
    head_init: str | None = None
    """`class_means`: before round 1, clients send per-class sums and counts of their pooled
    features (one forward pass, no backward) and the server sets the head to the normalised
    class means (FedNCM, Legate et al. 2023), logged as round 0; `random`: the
    architecture's random head. Needs a pooled head (pooling other than `model`)."""
    head_init_scale: float = 10.0
    """class_means: the head's rows are the unit class means times this (a softmax
    temperature: features are normalised, so cosine logits times this scale)."""
    head_init_examples: int | None = 64
    """class_means: at most this many training examples per client enter the class means
    (None: all), so round 0 costs a bounded forward pass per client."""
    head_gradient: str | None = None
    """`exact`: the linear head's gradient in closed form from the forward pass (pooled
    features, softmax, labels), so the estimator spends its perturbations on the adapters
    only; `estimator`: the head is one more tensor for the method's estimator."""

    # --- data ------------------------------------------------------------------------
    dataset: str = "sentiment"
    """A recipe (sentiment, sst2, ag_news, snli, mnli, yahoo, yelp_polarity, multirc,
    squad_v2), a hub id, or a local csv/tsv/json/jsonl/parquet file."""
    data_dir: str | None = None
    """Where recipes find their local files; defaults to $SPRY_DATA_DIR."""
    test_file: str | None = None
    """dataset=<a file>: the global held-out test split, a file with the same columns."""
    test_fraction: float | None = None
    """Hold out this fraction of the training data as the global test split, seeded and
    stratified by label (for a single labelled file; not with test_file or a recipe's own
    test split). None: no split."""
    text_column: str | None = None
    """dataset=<a file or hub id>: the column holding the text. None: `text`, `sentence`, …,
    or the first column of a known pair layout (see pair_column)."""
    pair_column: str | None = None
    """The column holding the second text of a sentence pair. None: detected from the usual
    layouts (premise/hypothesis, sentence1/sentence2, question/passage, …), else none."""
    label_column: str | None = None
    """The column holding the label. None: `label`."""
    label_names: list[str] | None = None
    """The label set in class order. None: a recipe's names, a hub dataset's ClassLabel
    names, the integers 0..max, or the sorted distinct string labels."""
    max_length: int = 64
    """Tokens per example (longer texts are truncated)."""
    max_train_examples: int | None = None
    """Use a seeded random subset of at most this many training examples (None: all)."""
    max_test_examples: int | None = None
    """Use a seeded random subset of at most this many global test examples (None: all)."""
    num_clients: int = 100
    """N, the clients the training data is dealt to."""
    dirichlet_alpha: float = 0.1
    """Label skew across clients: Dirichlet(α) class proportions per client (0.1: strongly
    heterogeneous, 1.0: near-homogeneous)."""
    client_test_fraction: float = 0.2
    """Each client keeps this fraction of its examples as its local test split (the
    generalized and personalized accuracies are measured on them)."""

    # --- federation ------------------------------------------------------------------
    method: str = "spry"
    """`spry` (forward gradients, units split among the round's clients), `fedfgd` (forward
    gradients, no split), `backprop`, `backprop_split`, `fedsgd`, `fedmezo` (SPSA),
    `baffle`, `fwdllm`."""
    communication: str = "per_epoch"
    """`per_epoch`: clients send weights after local training; `per_iteration`: K scalars up
    and seeds down every step (docs/per_iteration.md)."""
    rounds: int = 10
    """Server rounds."""
    clients_per_round: int = 10
    """M, the clients sampled each round."""
    assignment: str = "rotating"
    """How units are dealt to a round's clients: `rotating` (offset by round), `static`,
    `random`."""
    max_replay_lag: int = 200
    """per_iteration: a client more than this many server steps behind downloads the
    weights (and optimizer state) instead of replaying the (seed, scalar) log."""
    context: str = "global"
    """What a client's forward pass reads for the trainable weights it does not train:
    `global` — their current global values, sent with its units (as the authors' client,
    which receives the whole model); `local` — only its units travel, the rest keep the
    values this client last received (a smaller downlink; stale context, so pair it with
    head=shared)."""
    head: str | None = None
    """`split`: the task head is one more unit, dealt to one client a round (the paper);
    `shared`: every client trains it. None: the recipe's."""
    server_optimizer: str = "fedyogi"
    """How the server applies the round's mean update: `fedavg` (the mean replaces the
    weights at server_lr 1), `fedadam`, `fedyogi` (adaptive steps on the pseudo-gradient)."""
    server_lr: float | None = None
    """The server's step size. None: 1.0 with server_optimizer=fedavg, 1e-2 with fedadam
    and fedyogi (the paper)."""
    server_beta1: float = 0.9
    """FedAdam/FedYogi first-moment decay."""
    server_beta2: float = 0.99
    """FedAdam/FedYogi second-moment decay."""
    server_tau: float = 1e-3
    """FedAdam/FedYogi adaptivity (ε in the denominator)."""

    # --- client ----------------------------------------------------------------------
    tangents: int = 1
    """K, the number of jvps (perturbations) per step."""
    tangent_sharing: str | None = None
    """Forward gradients: `example` draws an independent tangent for every example of the
    batch (per-example weight perturbation, Ren et al. 2023), averaging B estimates for the
    price of one jvp; `batch`: one tangent for the whole batch (the paper)."""
    guided_tangent: bool = False
    """Forward gradients: one more jvp a step, along the client's units' last global update
    Δ (sent with the weights): the estimate's component along Δ is then exact, the rest
    the random estimate's; still unbiased (spry.estimators.guided), one jvp dearer."""
    skip_zero_factors: bool | None = None
    """Forward gradients: no tangent on a LoRA A factor while its B is exactly zero (its
    gradient is then exactly zero: the tangent would add variance and no signal)."""
    head_lr: float | None = None
    """The head's client learning rate (None: client_lr)."""
    client_optimizer: str = "adamw"
    """The client's local optimizer: `sgd`, `adam`, `adamw`."""
    client_lr: float | None = None
    """The client's learning rate. None: 1e-4 (the paper's, every method under
    recipe=paper); under recipe=spry 1e-3 for backprop and backprop_split, 3e-2 for fedsgd
    (one plain SGD step a round), 1e-4 for the estimators."""
    weight_decay: float = 0.0
    """The client optimizer's weight decay."""
    batch_size: int = 8
    """Examples per client step."""
    local_epochs: int = 1
    """Passes over a client's training split per round (see max_steps)."""
    max_steps: int | None = None
    """Caps the local steps per round (None: whole epochs)."""
    keep_client_optimizer: bool = False
    """Keep each client's optimizer state (e.g. AdamW moments) per parameter across the
    rounds it takes part in; False starts a fresh optimizer every round."""
    personalization_epochs: int = 5
    """F; 0 skips personalized accuracy."""

    # --- zeroth-order baselines (method=fedmezo, baffle, fwdllm) -----------------------
    fd_epsilon: float = 1e-3
    """ε, the finite-difference step: L(w ± εv) (MeZO's default 1e-3)."""
    fwdllm_candidates: int = 10
    """FwdLLM: candidate perturbations scored (cosine to the last global update) per
    perturbation kept; the pool is fwdllm_max_perturbations × this."""
    fwdllm_max_perturbations: int = 10
    """FwdLLM: cap on perturbations per step (at least `tangents`, the minimum)."""
    fwdllm_variance_threshold: float = 0.5
    """FwdLLM: stop adding perturbations once the estimated variance of the mean gradient
    is at most this fraction of its squared norm."""

    # --- run -------------------------------------------------------------------------
    seed: int = 0
    """Seeds every random choice of the run (data split, partition, init, tangents)."""
    eval_every: int = 1
    """Evaluate every this many rounds; the final round is always evaluated."""
    max_wall_seconds: float | None = None
    """A wall-clock cap (compare methods at equal time): a round starts only when the run is
    expected to end it within the cap (expected: as long as the last round took), the
    final round is evaluated, and a round is never cut short. None: no cap."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating."""
    threads: int | None = None
    """torch threads for this run (torch.set_num_threads). None: torch's default."""
    engine: str = "local"
    """`local`: every client in this process; `flower`: Flower's simulation runtime
    (docs/flower.md)."""
    round_timeout: float | None = None
    """engine=flower: seconds to wait for a round's replies; a node that has not answered
    by then counts as failed. None waits for every node (the SuperLink reports a dead one
    once its heartbeats stop)."""
    output_dir: str = "runs"
    """Where run directories are made."""
    run_name: str | None = None
    """The run directory's name under output_dir. None: <dataset>-<method>-<time>."""
    tensorboard: bool = False
    """Also write each round's metrics as TensorBoard event files, in RUN_DIR/tensorboard
    (`tensorboard --logdir runs`); needs `pip install tensorboard`."""

    # --- reliability (docs in spry.checkpoint and spry.validation) ---------------------
    checkpoint_every: int | None = None
    """Write checkpoint.pt into the run directory every this many rounds and after the
    last round, atomically (a crash mid-write keeps the previous one); `spry run --resume
    RUN_DIR` continues from it and ends as an uninterrupted run would. None: no checkpoints."""
    max_update_norm: float | None = None
    """Reject (log, never average in) a client's update whose L2 norm is above this:
    per_epoch the change it proposes (returned − sent weights, over all its tensors),
    per_iteration its K directional derivatives. None: no bound."""
    client_timeout_seconds: float | None = None
    """engine=local: a client whose local training (per_iteration: one step) took longer
    counts as failed and its reply is dropped. Cooperative: the in-process client runs to
    the end, then its late reply is discarded. engine=flower bounds replies with round_timeout."""
    on_all_clients_failed: str = "continue"
    """A round in which no client's update was accepted (every client failed or was
    rejected) is written to metrics.jsonl either way; `continue` goes on, `stop` ends the
    run after it (the CLI exits with status 1; resume from the last checkpoint)."""

    def __post_init__(self) -> None:
        for name, choices in (("recipe", RECIPES), ("method", METHODS),
                              ("server_optimizer", SERVER_OPTIMIZERS)):
            _one_of(self, name, choices)  # the defaults below follow these
        # name -> the settings its default followed (config.yaml says so beside the value)
        defaulted: dict[str, str] = {}
        for name in (*RECIPE_DEFAULTS[self.recipe], *CHOICE_DEFAULTS):
            if getattr(self, name) is None:
                value, because = _resolved_default(self, name)
                object.__setattr__(self, name, value)
                defaulted[name] = because
        object.__setattr__(self, "_defaulted", defaulted)
        _check_types(self)
        _check_values(self)

    @property
    def defaulted(self) -> dict[str, str]:
        """Settings left unset whose default followed other settings: name -> which
        (e.g. server_lr -> "server_optimizer=fedavg")."""
        return dict(self._defaulted)

    # --- the two doors ---------------------------------------------------------------
    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "Config":
        """Build from flat key/value pairs; strings are parsed as YAML scalars."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(v, hints[k]) for k, v in values.items()})

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> "Config":
        """Read a YAML file (optional) and apply `key=value` overrides on top."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except OSError as exc:
                raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError as exc:
                raise ConfigError(f"--config: {path} is not UTF-8 text (byte {exc.start} is "
                                  f"{exc.object[exc.start:exc.start + 1]!r}); save it as "
                                  "UTF-8") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"--config: {path} must hold a mapping of key: value")
            values.update(loaded)
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} must look like key=value")
            values[key.strip()] = raw
        return cls.from_flat(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes`; a setting that was defaulted follows the new choices
        (replace(server_optimizer="fedavg") moves a defaulted server_lr to 1.0)."""
        unset = {name: None for name in self._defaulted if name not in changes}
        return dataclasses.replace(self, **unset, **changes)


def _resolved_default(cfg: Config, name: str) -> tuple[Any, str]:
    """(value, the settings it follows) for a setting left unset."""
    if name == "server_lr":
        return SERVER_LR[cfg.server_optimizer], f"server_optimizer={cfg.server_optimizer}"
    if name == "client_lr":
        lrs = CLIENT_LR[cfg.recipe]
        return lrs.get(cfg.method, lrs[None]), f"recipe={cfg.recipe}, method={cfg.method}"
    return _recipe_default(cfg, name), f"recipe={cfg.recipe}"


def _recipe_default(cfg: Config, name: str) -> Any:
    """The recipe's value for `name`, where this run can use it."""
    value = RECIPE_DEFAULTS[cfg.recipe][name]
    # Per-example tangents need per-example losses (the classifier head) and linear-layer
    # tensors (not IA3's scales, not BitFit's LayerNorm biases); per-iteration uploads K
    # scalars a step, so it keeps one tangent per batch and the head on the estimator.
    if name == "tangent_sharing" and (cfg.peft in ("ia3", "bitfit") or cfg.task_head != "classifier"
                                      or cfg.communication == "per_iteration"):
        return "batch"
    if name == "head_gradient" and cfg.communication == "per_iteration":
        return "estimator"
    if name == "head" and cfg.task_head in ("verbalizer", "generate"):
        return "split"  # no head unit to share
    # The architecture's own head (pooling=model) is no single linear layer on a pooled
    # feature: no class means, no closed-form gradient for it.
    if name == "head_init" and cfg.pooling == "model":
        return "random"
    if name == "head_gradient" and cfg.pooling == "model":
        return "estimator"
    return value


# --------------------------------------------------------------------------------------
def _coerce(value: Any, annotation: Any) -> Any:
    """Overrides arrive as strings: read them as YAML scalars (1e-4, true, [a, b], null),
    unless the field takes a string and the YAML reading would not fit (`run_name=no`)."""
    if not isinstance(value, str) or not value.strip():
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if _type_ok(parsed, annotation):
        return parsed
    if _type_ok(value, annotation):
        return value
    try:  # YAML 1.1 reads "1e-3" (no dot) as a string
        number = float(value)
    except ValueError:
        return parsed
    return number if _type_ok(number, annotation) else parsed


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _check_types(cfg: Config) -> None:
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _type_ok(value, hints[f.name]):
            want = _type_name(hints[f.name])
            raise ConfigError(f"{f.name}: expected {want}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}: must be a finite number, got {value!r}")
        if hints[f.name] is float and isinstance(value, int):
            object.__setattr__(cfg, f.name, float(value))


def _one_of(cfg: Config, name: str, choices: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"{name}: {getattr(cfg, name)!r} is not one of {', '.join(choices)}")


def _positive(cfg: Config, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name}: must be > 0, got {value}")


def _check_values(cfg: Config) -> None:
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard: true needs the tensorboard package: "
                          "pip install tensorboard (or set tensorboard=false)")
    _one_of(cfg, "method", METHODS)
    _one_of(cfg, "peft", PEFT_METHODS)
    _one_of(cfg, "assignment", ASSIGNMENTS)
    _one_of(cfg, "head", HEAD_MODES)
    _one_of(cfg, "server_optimizer", SERVER_OPTIMIZERS)
    _one_of(cfg, "client_optimizer", CLIENT_OPTIMIZERS)
    _one_of(cfg, "communication", COMMUNICATIONS)
    _one_of(cfg, "context", CONTEXTS)
    _one_of(cfg, "engine", ENGINES)
    _one_of(cfg, "dtype", DTYPES)
    _one_of(cfg, "on_all_clients_failed", ON_ALL_CLIENTS_FAILED)
    _one_of(cfg, "recipe", RECIPES)
    _check_head(cfg)
    _positive(cfg, "lora_r", "lora_alpha", "max_length", "num_clients", "dirichlet_alpha",
              "rounds", "clients_per_round", "tangents", "client_lr", "server_lr",
              "batch_size", "local_epochs", "max_steps", "eval_every", "eval_batch_size",
              "max_train_examples", "max_test_examples", "server_tau", "round_timeout",
              "checkpoint_every", "max_update_norm", "client_timeout_seconds", "threads")
    if cfg.test_fraction is not None and not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction: must be in (0, 1), got {cfg.test_fraction}")
    if cfg.engine == "flower" and cfg.client_timeout_seconds is not None:
        raise ConfigError("client_timeout_seconds: engine=local only; with engine=flower set "
                          "round_timeout instead")
    if cfg.engine == "flower" and cfg.checkpoint_every is not None:
        raise ConfigError("checkpoint_every: engine=local only (with engine=flower the client "
                          "state lives on the SuperNodes); remove it")
    if not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"lora_dropout: must be in [0, 1), got {cfg.lora_dropout}")
    if not 0 < cfg.client_test_fraction < 1:
        raise ConfigError(
            f"client_test_fraction: must be in (0, 1), got {cfg.client_test_fraction}")
    for name in ("server_beta1", "server_beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay: must be >= 0, got {cfg.weight_decay}")
    if cfg.personalization_epochs < 0:
        raise ConfigError(
            f"personalization_epochs: must be >= 0, got {cfg.personalization_epochs}")
    if cfg.communication == "per_iteration":
        if cfg.method not in ("spry", "fedfgd"):
            raise ConfigError(f"communication: per_iteration sends directional derivatives, which "
                              f"method={cfg.method!r} does not make; use method=spry or fedfgd")
        if cfg.server_optimizer != "fedavg":
            raise ConfigError("server_optimizer: per_iteration steps client_optimizer/client_lr at "
                              "the server every step and has no round-level server step; set "
                              "server_optimizer=fedavg")
        if cfg.engine != "local":
            raise ConfigError("engine: per_iteration runs on engine=local only for now")
    if cfg.clients_per_round > cfg.num_clients:
        raise ConfigError(
            f"clients_per_round: {cfg.clients_per_round} is more than num_clients "
            f"({cfg.num_clients}); lower clients_per_round or raise num_clients")
    if cfg.method in ("backprop", "fedsgd") and cfg.tangents != 1:
        raise ConfigError("tangents: only forward-gradient methods use K; leave it at 1 "
                          f"with method={cfg.method}")
    _check_zeroth_order(cfg)
    if cfg.target_modules is not None and cfg.peft not in ("lora", "ia3"):
        raise ConfigError(f"target_modules: only used by peft=lora or ia3, not {cfg.peft!r}; "
                          "remove it")
    if cfg.label_names is not None and len(set(cfg.label_names)) != len(cfg.label_names):
        raise ConfigError(f"label_names: has duplicates: {cfg.label_names}")
    _check_task_head(cfg)


def _check_task_head(cfg: Config) -> None:
    _one_of(cfg, "task_head", TASK_HEADS)
    if cfg.label_words is not None:
        if cfg.task_head != "verbalizer":
            raise ConfigError("label_words: only used by task_head=verbalizer; remove it or set "
                              "task_head=verbalizer")
        if len(set(cfg.label_words)) != len(cfg.label_words):
            raise ConfigError(f"label_words: has duplicates: {cfg.label_words}")
    if cfg.task_head in ("verbalizer", "generate"):
        if cfg.peft == "head":
            raise ConfigError(f"peft: task_head={cfg.task_head} has no head to train; use "
                              "peft=lora, ia3 or bitfit")
        if cfg.head == "shared":
            raise ConfigError(f"head: task_head={cfg.task_head} has no head unit to share; leave "
                              "head=split")
    qa_heads = ("span", "generate")
    if (cfg.dataset == "squad_v2") != (cfg.task_head in qa_heads):
        raise ConfigError(f"task_head: dataset={cfg.dataset!r} with task_head={cfg.task_head!r}; "
                          "SQuAD v2 pairs dataset=squad_v2 with task_head=span (an encoder's "
                          "extractive span head) or task_head=generate (a decoder writes the "
                          "answer)")
    if cfg.task_head in qa_heads and cfg.communication == "per_iteration":
        raise ConfigError(f"communication: task_head={cfg.task_head} runs per_epoch only for now")


def _check_head(cfg: Config) -> None:
    """The classification head's settings (pooling, head_init, head_gradient)."""
    _one_of(cfg, "pooling", POOLINGS)
    _one_of(cfg, "head_init", HEAD_INITS)
    _one_of(cfg, "head_gradient", HEAD_GRADIENTS)
    _one_of(cfg, "tangent_sharing", TANGENT_SHARINGS)
    _positive(cfg, "head_init_scale", "head_init_examples", "head_lr")
    if cfg.tangent_sharing == "example":
        if cfg.peft in ("ia3", "bitfit") or cfg.task_head != "classifier":
            raise ConfigError("tangent_sharing: example needs task_head=classifier and linear "
                              f"trainable tensors (peft=lora or head), not peft={cfg.peft!r}, "
                              f"task_head={cfg.task_head!r}; set tangent_sharing=batch")
        if cfg.communication == "per_iteration":
            raise ConfigError("tangent_sharing: per_iteration uploads K scalars a step; set "
                              "tangent_sharing=batch")
    if cfg.guided_tangent and (cfg.method not in ("spry", "fedfgd")
                               or cfg.communication != "per_epoch"):
        raise ConfigError("guided_tangent: needs a forward-gradient method (spry, fedfgd) with "
                          "communication=per_epoch; set guided_tangent=false")
    if cfg.head_gradient == "exact" and cfg.communication == "per_iteration":
        raise ConfigError("head_gradient: per_iteration uploads only directional derivatives; "
                          "set head_gradient=estimator")
    if cfg.task_head != "classifier":
        return  # the other heads have no pooled linear head; these settings do not apply
    if cfg.pooling == "model" and cfg.head_init == "class_means":
        raise ConfigError("head_init: class_means needs a pooled head (pooling=auto, cls, mean "
                          "or max); with pooling=model set head_init=random")
    if cfg.pooling == "model" and cfg.head_gradient == "exact":
        raise ConfigError("head_gradient: exact needs a pooled linear head (pooling=auto, cls, "
                          "mean or max); with pooling=model set head_gradient=estimator")


def _check_zeroth_order(cfg: Config) -> None:
    """The baselines' own settings (method=fedsgd, fedmezo, baffle, fwdllm)."""
    _positive(cfg, "fd_epsilon", "fwdllm_candidates", "fwdllm_max_perturbations",
              "fwdllm_variance_threshold")
    if cfg.method == "fedsgd" and cfg.client_optimizer != "sgd":
        raise ConfigError(f"client_optimizer: method=fedsgd takes one plain gradient step per "
                          f"round; {cfg.client_optimizer!r} would not send a gradient (Adam's "
                          "first step is sign(g)); set client_optimizer=sgd")
    if cfg.method == "fwdllm" and cfg.fwdllm_max_perturbations < cfg.tangents:
        raise ConfigError(f"fwdllm_max_perturbations: {cfg.fwdllm_max_perturbations} is below "
                          f"tangents ({cfg.tangents}), the minimum per step; raise it")
