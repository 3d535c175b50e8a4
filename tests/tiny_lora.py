"""A tiny model with LoRA units that all have a gradient, and a three-sentence batch.

Shared by the estimator tests (forward gradient, lean jvp rules, baselines); and the
same batch of four on the default recipe's pooled head (the learning tests)."""

from __future__ import annotations

import torch

from spry.config import Config
from spry.models import load_tokenizer, trainable_params
from spry.tasks.heads import load_model
from spry.seeds import seeded_global_rng


def model_and_batch(path: str, dtype: str = "float64", lora_dropout: float = 0.0):
    # The architecture's own head (recipe=paper): these tests check the estimators' math,
    # with tolerances set on it; the pooled head has its own tests (test_learning.py).
    cfg = Config(model=path, dtype=dtype, lora_r=2, lora_dropout=lora_dropout, recipe="paper")
    tok = load_tokenizer(cfg)
    with seeded_global_rng(0):
        model = load_model(cfg, num_labels=2, pad_token_id=tok.pad_token_id)
        # LoRA B starts at zero; give it values so every unit's gradient is non-trivial.
        for name, p in trainable_params(model).items():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
    model.eval()
    batch = dict(tok(["a fine film", "dull and far too long", "i loved it"], padding=True,
                     return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0, 1])
    return model, batch


def pooled_model_and_batch(path: str, **overrides):
    """(cfg, model, batch): the default recipe's pooled head in float64, no dropout, LoRA B
    at peft's zero start, and four labelled sentences."""
    cfg = Config(model=path, dtype="float64", lora_dropout=0.0, **{"peft": "lora", **overrides})
    tok = load_tokenizer(cfg)
    with seeded_global_rng(0):
        model = load_model(cfg, num_labels=2, pad_token_id=tok.pad_token_id)
    model.eval()
    batch = dict(tok(["a fine film", "dull and far too long", "i loved it", "bad"],
                     padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0, 1, 0])
    return cfg, model, batch
