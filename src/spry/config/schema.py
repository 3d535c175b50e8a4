"""The schema: every setting of a run as a field of the frozen Config, its docstring the
setting's documentation (spry.settings reads them from this file's source)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from spry.config.checks import check_types, check_values, one_of
from spry.config.choices import METHODS, RECIPES, SERVER_OPTIMIZERS
from spry.config.defaults import CHOICE_DEFAULTS, RECIPE_DEFAULTS, resolved_default
from spry.config.loading import coerced_values, read_values


@dataclass(frozen=True)
class Config:
    recipe: str = "spry"
    """`spry`: this project's measured defaults for the settings below that are left unset
    (None); `paper`: the paper's exact recipe (docs/learning.md). Explicit values win."""

    # --- model and PEFT --------------------------------------------------------------
    model: str = "all-minilm-l6-v2"
    """Hub name, local directory, or a packaged alias (all-minilm-l6-v2)."""
    peft: str | None = None
    """What a client trains: `lora` adapters, `tinylora` (a few numbers per module, below),
    `ia3` scales, `bitfit` biases, or `head` only (the head over a frozen model). None:
    tinylora under recipe=spry (its forward gradients beat LoRA's, docs/learning.md),
    lora under recipe=paper."""
    lora_r: int = 1
    """LoRA rank r (the paper: 1)."""
    lora_alpha: float = 1.0
    """LoRA scaling alpha (the update is B A times alpha / r)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch's input, in [0, 1)."""
    lora_factors: str = "both"
    """peft=lora: which factors train. `both`: A and B (peft's start: A random, B = 0); `a`:
    every B frozen at seeded random values (peft's scale for A), A trained from 0: BA = 0 at
    the start, and A's gradient, non-zero from step one, lies in its inputs' span."""
    tinylora_r: int = 4
    """peft=tinylora (peft's TinyLoRA): a module's update is U√S·R·√S Vᵀ from its weight's
    rank-r SVD (frozen), R = Σ v_i P_i over fixed random r×r P_i; only v trains, from 0."""
    tinylora_u: int = 16
    """peft=tinylora: how many numbers v each module trains (u = r² spans every r×r R)."""
    target_modules: list[str] | None = None
    """None picks the paper's query/value modules for the architecture."""
    dtype: str = "float32"
    """The frozen model's dtype: float32, float64 or bfloat16."""
    device: str = "cpu"
    """torch device for the model and every client step (cpu, cuda, cuda:1, ...)."""
    task_head: str = "classifier"
    """`classifier`: a sequence-classification head (a trainable unit); `multilabel`: the
    same head with one sigmoid output a label, trained by binary cross-entropy, for texts
    with any number of labels (a label column of lists or of labels joined by
    label_separator, or several 0/1 label columns: label_column=toxic,insult);
    `regression`: the same pooled linear head with one output, trained by squared error on
    a numeric label column (a score, e.g. a similarity 0-5); `token`: the same linear head
    on every token, a tag a word (named entities, parts of speech: a column of words and
    one of their tags, or a CoNLL file), scored per word and, for BIO tags, per entity;
    `verbalizer`: a
    causal LM scores each label's word as the next token after the text (no head unit);
    `span`: extractive QA, start/end logits from the `qa_outputs` head (dataset=squad_v2);
    `generate`: QA on a causal LM, which writes the answer (dataset=squad_v2; no head unit)."""
    label_words: list[str] | None = None
    """task_head=verbalizer: one word per label, in label order (default: the recipe's
    words, else the label names); each is scored by its first token after a space."""

    pooling: str | None = None
    """task_head=classifier: which feature a linear head reads. `auto`: what a
    sentence-transformers model declares (modules.json, 1_Pooling/config.json), else the
    architecture's convention (first token for encoders, last real token for decoders);
    `cls`, `mean`, `max`, `last`: that pooling of the last hidden states, unnormalised;
    `model`: AutoModelForSequenceClassification's own head. None: the recipe's."""
    head_init: str | None = None
    """`class_means`: before round 1, clients send per-class sums and counts of their pooled
    features (one forward pass, no backward) and the server sets the head to the normalised
    class means (FedNCM, Legate et al. 2023), logged as round 0; `lda`: the same round, the
    clients also send their features' within-class scatter (its upper triangle, hidden²/2
    numbers) and the server solves linear discriminant analysis
    (spry.tasks.linear_head.lda_head); under task_head=regression `lda` is the least-squares
    (ridge) head from the same statistics, the score appended to the features, its ridge
    chosen by generalized cross-validation (spry.tasks.linear_head.ridge_head), and
    `class_means` does not apply;
    `random`: the architecture's random head. Both pooled inits need a pooled head
    (pooling other than `model`)."""
    head_init_scale: float = 10.0
    """class_means: the head's rows are the unit class means times this (a softmax
    temperature: features are normalised, so cosine logits times this scale)."""
    head_init_shrinkage: float = 0.5
    """lda: λ in Σ_λ = (1 − λ) Σ + λ (tr Σ / d) I, the within-class covariance shrunk toward
    a multiple of the identity (0: the sample covariance; 1: nearest class mean in Euclidean
    distance, with the class priors), as scikit-learn's
    LinearDiscriminantAnalysis(shrinkage=λ). 0.5: at least as good as class means on
    SST-2, AG News and MNLI at round 0, where 0 loses 1.9 points on MNLI
    (docs/learning.md). Not under task_head=regression, whose least-squares head takes the
    ridge that generalized cross-validation picks from the same statistics
    (docs/regression.md)."""
    head_init_lda_scale: float = 0.5
    """lda: the discriminant's logits times this (a softmax temperature). Gaussian class
    posteriors are overconfident on real features: at 1 the round-0 held-out loss is above
    the class means' on AG News and MNLI, at 0.5 below or level on AG News, SST-2 and MNLI
    (docs/learning.md); accuracy does not depend on it."""
    head_init_examples: int | None = 64
    """class_means, lda: at most this many training examples per client enter round 0's
    statistics (None: all), so round 0 costs a bounded forward pass per client."""
    head_gradient: str | None = None
    """`exact`: the linear head's gradient in closed form from the forward pass (pooled
    features, softmax, labels), so the estimator spends its perturbations on the adapters
    only; `estimator`: the head is one more tensor for the method's estimator."""

    # --- data ------------------------------------------------------------------------
    dataset: str = "sentiment"
    """A recipe (sentiment, sst2, ag_news, snli, mnli, yahoo, yelp_polarity, multirc,
    squad_v2), a hub id, a local csv/tsv/json/jsonl/parquet file, a .txt file of
    fastText's `__label__<label> text` lines, or (task_head=token) a CoNLL file of a word and
    its tag a line (.conll, .iob, .bio) or a Universal Dependencies .conllu (the text ones
    may be .gz/.bz2/.xz compressed), a folder of them named by split (train.csv, and test.csv or
    dev.csv as the held-out split; with several, the first labelled one of validation, dev,
    test; or as `datasets` lays out a hub repository, data/train-00000-of-00002.parquet),
    or a folder written by `datasets`' save_to_disk."""
    client_data: str = "partition"
    """Where a client's examples come from. `partition`: `dataset` is dealt to num_clients
    by the seed (Dirichlet α); every process that needs a client's data (the local engine,
    a SuperNode) reads `dataset` and keeps that client's share. `node` (engine=flower, a
    deployment): each SuperNode reads its own file, named on its command line
    (`flower-supernode --node-config 'partition-id=3 data-file="/data/mine.csv"'`), with the
    run's columns and label set, and keeps client_test_fraction of it as its local test
    split; the training data never leaves the node and the server reads none. Needs
    label_names (no one process sees every label); `dataset` is then only the run's name,
    and the held-out split is test_file where given."""
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
    """The column holding the label. None: the first of `label`, `labels`, `class`,
    `category`, `target`, `sentiment`, `stars`, `rating`, `y` that the data has.
    task_head=multilabel: a column listing each row's labels, or several 0/1 columns, one a
    label (label_column=toxic,insult,threat)."""
    label_separator: str = ","
    """task_head=multilabel: what joins a row's labels in a text cell (`joy,love`); a cell
    written as a list (`['joy', 'love']`) is read as one, and an empty cell is a row with
    no label."""
    column_names: list[str] | None = None
    """dataset=<a csv/tsv file> without a header row: its columns' names, in order (e.g.
    `column_names=text,label`); the first line is then read as data, and test_file the same
    way. None: the first line is the header."""
    label_names: list[str] | None = None
    """The label set in class order. None: a recipe's names, a hub dataset's ClassLabel
    names; for a file: the integers 0..max where its integer labels start at 0, else its
    distinct labels sorted (1-5 stars: five classes)."""
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
    partition_by: str | None = None
    """dataset=<a file, folder or hub id>: a column naming whose each row is (a user, a
    writer, a site): each of its values is one client, its rows that client's data, in
    place of the Dirichlet deal (the natural partition of LEAF's data sets; Flower
    Datasets' NaturalIdPartitioner). Client i is the i-th value in sorted order (numbers
    by value); num_clients must be the number of values; a client too small for a local
    test split (client_test_fraction) trains without one."""
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
    clients_per_round: int | None = None
    """M, the clients sampled each round (10, or num_clients where that is fewer)."""
    assignment: str = "rotating"
    """How units are dealt to a round's clients: `rotating` (offset by round), `static`,
    `random`, or `contiguous` for speed: each client a block of neighbouring units, so a
    client's tangent starts at its block (a forward-gradient step costs the layers from the
    client's lowest unit up; docs/memory.md), the blocks rotating over rounds."""
    unit_replicas: int = 1
    """Split methods: how many of the round's clients train each unit (1: the paper's
    split, each unit to one client; more: each unit's update is the mean of that many
    clients' estimates, each client perturbing that many times more units)."""
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
    weights at server_lr 1), `fedavgm` (a moving average of the rounds' mean updates,
    server_beta1), `fedadam`, `fedyogi` (adaptive steps on the pseudo-gradient)."""
    server_lr: float | None = None
    """The server's step size. None: 1.0 with server_optimizer=fedavg or fedavgm, 1e-2 with
    fedadam and fedyogi (the paper)."""
    server_beta1: float = 0.9
    """FedAvgM/FedAdam/FedYogi first-moment decay."""
    server_beta2: float = 0.99
    """FedAdam/FedYogi second-moment decay."""
    server_tau: float = 1e-3
    """FedAdam/FedYogi adaptivity (ε in the denominator)."""

    # --- client ----------------------------------------------------------------------
    tangents: int = 1
    """K, the number of jvps (perturbations) per step."""
    tangent_chunk: int | None = None
    """Forward gradients, K > 1: at most this many tangents share one primal pass. None: all
    K (MiniLM K=10: 22.6x inference, 638 MiB peak); 1: one at a time (30x, 272 MiB, the
    memory of K=1); between: ceil(K / tangent_chunk) primal passes (docs/memory.md)."""
    tangent_dtype: str | None = None
    """Forward gradients: the dtype of the tangent pass's matmuls (linear layers and
    attention), the primal pass staying in `dtype`. None: the tangents' own, an exact jvp.
    `bfloat16` makes them 3-4x cheaper where bf16 matrix units exist (CPUs with AMX or
    avx512_bf16, GPUs; on other CPUs it is slower), each directional derivative then off by
    ~0.3 % (docs/memory.md: a MiniLM step 1.7–1.8x inference instead of 2.5x, K=10 11x
    instead of 18x); learning measured in docs/learning.md."""
    tangent_sharing: str | None = None
    """Forward gradients: `example` draws an independent tangent for every example of the
    batch (per-example weight perturbation, Ren et al. 2023), averaging B estimates for the
    price of one jvp; `batch`: one tangent for the whole batch (the paper)."""
    guided_tangent: bool = False
    """Forward gradients: one more jvp a step, along the client's units' last global update
    Δ (sent with the weights): the estimate's component along Δ is then exact, the rest
    the random estimate's; still unbiased (spry.estimators.guided), one jvp dearer."""
    tangent_space: str = "parameters"
    """Forward gradients, tangent_sharing=example: a LoRA A factor's tangent. `parameters`:
    N(0, I) (unbiased); `inputs`: in the span of the example's own inputs to the layer, where
    A's gradient lies (biased: E[ĝ] = mean_i C_i ∇L_i, C_i ∝ X_iᵀX_i, a preconditioned
    descent direction; docs/learning.md). per_epoch only: the tangents depend on the data."""
    skip_zero_factors: bool | None = None
    """Forward gradients: no tangent on a LoRA A factor while its B is exactly zero (its
    gradient is then exactly zero: the tangent would add variance and no signal)."""
    train_dropout: bool | None = None
    """Dropout while a client trains. None: the recipe's: recipe=spry turns it off for the
    methods that estimate the gradient from the loss's values or directional derivatives
    (forward gradients, zeroth order; MeZO's client does the same), where a random mask is
    one more noise source in an already noisy estimate and a mask multiply on every
    tangent, and keeps it for backprop; recipe=paper keeps it for every method."""
    head_lr: float | None = None
    """The head's client learning rate. None: 1e-4 for a classifier head set in round 0
    (head_init class_means or lda) and trained by Adam(W) under recipe=spry (a faster one
    walks it off its start, docs/learning.md), 1e-3 for the token head (task_head=token,
    whose round-0 head starts further from its optimum: docs/tokens.md), client_lr
    otherwise."""
    client_optimizer: str = "adamw"
    """The client's local optimizer: `sgd`, `adam`, `adamw`."""
    client_lr: float | None = None
    """The client's learning rate. None: 1e-4 (the paper's, every method under
    recipe=paper); under recipe=spry 1e-2 for peft=tinylora with Adam(W), else 1e-3 for
    backprop and backprop_split, 3e-2 for fedsgd (one plain SGD step a round), 1e-4 for
    the estimators."""
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
    personalization: str | None = None
    """Which local model personalized accuracy scores. `global` (the paper): in an
    evaluated round each sampled client trains F epochs on its units from the round's new
    global model, then scores its test split — a second training round's work (at F=5, 5/6
    of a round's time). `round`: each client scores its test split with the model its own
    local training of the round left (local_epochs epochs from the global model it received,
    so F = local_epochs and the global model is the previous round's), before it uploads:
    no extra training. per_epoch communication only. None: `round` under recipe=spry
    (`global` with per_iteration), `global` under recipe=paper."""

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
    final round is evaluated, and a round is never cut short. Round 0 (head_init's
    statistics) counts toward it, as toward metrics.jsonl's elapsed_seconds. None: no cap."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating."""
    eval_dtype: str | None = None
    """`bfloat16`: evaluation's forward passes (the held-out split, the clients' test
    splits) run under bfloat16 autocast, training stays in `dtype`. On a CPU with AMX or a
    GPU a forward is several times faster, and a few borderline predictions may flip
    (docs/memory.md measures both). None: evaluate in `dtype`."""
    threads: int | None = None
    """torch threads for this run (torch.set_num_threads). None: torch's default."""
    engine: str = "local"
    """`local`: every client in this process; `flower`: Flower's simulation runtime
    (docs/flower.md)."""
    round_timeout: float | None = None
    """engine=flower: seconds to wait for a round's replies; a node that has not answered
    by then counts as failed. None waits for every node (dead ones: no more heartbeats)."""
    output_dir: str = "runs"
    """Where run directories are made."""
    run_name: str | None = None
    """The run directory's name under output_dir. None: <dataset>-<method>-<time>."""
    tensorboard: bool = False
    """Also write each round's metrics as TensorBoard event files, in RUN_DIR/tensorboard
    (`tensorboard --logdir runs`); needs `pip install tensorboard`."""

    # --- reliability (docs in spry.checkpoint and spry.validation) ---------------------
    checkpoint_every: int | None = None
    """Write checkpoint.pt into the run directory every this many rounds and after the last,
    atomically; `spry run --resume RUN_DIR` continues from it and ends as an uninterrupted
    run would. None: no checkpoints."""
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
            one_of(self, name, choices)  # the defaults below follow these
        # name -> the settings its default followed (config.yaml says so beside the value)
        defaulted: dict[str, str] = {}
        for name in (*RECIPE_DEFAULTS[self.recipe], *CHOICE_DEFAULTS):
            if getattr(self, name) is None:
                value, because = resolved_default(self, name)
                object.__setattr__(self, name, value)
                defaulted[name] = because
        object.__setattr__(self, "_defaulted", defaulted)
        check_types(self)
        check_values(self)

    @property
    def defaulted(self) -> dict[str, str]:
        """Settings left unset whose default followed other settings: name -> which
        (e.g. server_lr -> "server_optimizer=fedavg")."""
        return dict(self._defaulted)

    # --- the two doors ---------------------------------------------------------------
    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "Config":
        """Build from flat key/value pairs; strings are parsed as YAML scalars."""
        return cls(**coerced_values(cls, values))

    @classmethod
    def from_yaml(cls, path: str | Path | None = None,
                  overrides: list[str] | None = None) -> "Config":
        """Read a YAML file (optional) and apply `key=value` overrides on top."""
        return cls.from_flat(read_values(path, overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes`; a setting that was defaulted follows the new choices
        (replace(server_optimizer="fedavg") moves a defaulted server_lr to 1.0)."""
        unset = {name: None for name in self._defaulted if name not in changes}
        return dataclasses.replace(self, **unset, **changes)
