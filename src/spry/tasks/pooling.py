"""What a classification head reads: the pooled feature a checkpoint declares.

A sentence-transformers checkpoint declares how its token states become a sentence
embedding (modules.json lists a Pooling module, 1_Pooling/config.json its mode, and a
Normalize module if the embedding is unit length). That embedding is what the model was
trained to produce; a classifier on BERT's [CLS] pooler instead reads a feature the
checkpoint never trained (all-MiniLM-L6-v2 on SST-2, no training, nearest class mean:
0.775 on the declared embedding, 0.618 on the pooler; docs/learning.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spry.config import Config, ConfigError

# Pooling flags of a sentence-transformers 1_Pooling/config.json, and the mode each names.
_ST_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
             "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last"}


@dataclass(frozen=True)
class Pooling:
    mode: str
    """cls, mean, max or last (the last real token)."""
    normalize: bool = False


def declared_pooling(model_dir: str | Path) -> Pooling | None:
    """The pooling a sentence-transformers checkpoint declares; None if it declares none.

    Read from the files rather than through sentence-transformers' module classes: the
    convention is two small JSON files, while the classes' import paths change between
    releases."""
    root = Path(model_dir)
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    pooling = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if pooling is None:
        return None
    path = root / str(pooling.get("path", "")) / "config.json"
    try:
        flags = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pooling: {root} declares a Pooling module but {path} cannot be "
                          f"read ({exc}); set pooling=mean, cls, max or last") from None
    modes = [mode for key, mode in _ST_MODES.items() if flags.get(key)]
    if len(modes) != 1:
        raise ConfigError(f"pooling: {path} declares {modes or 'no'} pooling modes; Spry reads "
                          "exactly one (mean, cls, max or lasttoken); set pooling=<one of them>")
    return Pooling(modes[0], normalize=any(t.endswith("Normalize") for t in types))


def resolve_pooling(cfg: Config, model_dir: str, model_config) -> Pooling:
    """cfg.pooling made concrete for this model (`auto`: declared, else the convention)."""
    if cfg.pooling != "auto":
        return Pooling(cfg.pooling)
    declared = declared_pooling(model_dir) if Path(model_dir).is_dir() else None
    if declared is not None:
        return declared
    # The architecture's convention: encoders read the first token, decoders the last.
    return Pooling("last" if _is_decoder(model_config) else "cls")


def _is_decoder(model_config) -> bool:
    """Decoder-only: a causal-LM architecture with no masked-LM one (BERT has both)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    kind = model_config.model_type
    return bool(getattr(model_config, "is_decoder", False)) or (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """(batch, tokens, hidden) states and their attention mask -> (batch, hidden)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling.mode == "mean":
        f = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    elif pooling.mode == "max":
        f = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
    elif pooling.mode == "cls":
        f = hidden[:, 0]
    else:  # last real token, whichever side the padding is on
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.long() * positions).argmax(1)
        f = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return F.normalize(f, dim=-1) if pooling.normalize else f


@dataclass
class PooledOutput:
    logits: torch.Tensor
    features: torch.Tensor
    """The pooled feature the head read (batch, hidden)."""


class PooledClassifier(nn.Module):
    """A transformer body, a declared pooling and one linear head named `classifier`.

    The body sits under its own `base_model_prefix` (`bert`, `model`, ...), so parameter
    and unit names read as in the architecture's own *ForSequenceClassification."""

    def __init__(self, body: nn.Module, num_labels: int, pooling: Pooling):
        super().__init__()
        self.body_name = body.base_model_prefix or "body"
        setattr(self, self.body_name, body)
        self.config = body.config
        self.pooling = pooling
        # The head is trained in full: in a bfloat16 body it stays float32 (as peft keeps
        # adapters), since a bf16 weight drops steps below 2⁻⁸ of its size (AdamW at 1e-4
        # on a class-mean head would not move it at all).
        self.classifier = nn.Linear(body.config.hidden_size, num_labels,
                                    dtype=torch.promote_types(body.dtype, torch.float32))

    def forward(self, input_ids=None, attention_mask=None, labels=None, **inputs) -> PooledOutput:
        body = getattr(self, self.body_name)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, **inputs)[0]
        features = pool(hidden, attention_mask, self.pooling).to(self.classifier.weight.dtype)
        return PooledOutput(self.classifier(features), features)


def load_pooled_classifier(cfg: Config, path: str, num_labels: int) -> PooledClassifier:
    from transformers import AutoConfig, AutoModel

    try:
        model_config = AutoConfig.from_pretrained(path)
        # Fused SDPA kernels have no forward-AD formula; eager attention does.
        body = AutoModel.from_pretrained(path, attn_implementation="eager",
                                         dtype=getattr(torch, cfg.dtype))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load {cfg.model!r} ({exc}); give a hub name (online), "
                          "a local directory, or all-minilm-l6-v2") from None
    return PooledClassifier(body, num_labels, resolve_pooling(cfg, path, model_config))


def is_pooled(model: nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, PooledClassifier)
