"""`spry export RUN_DIR OUT`: a finished run's model as a folder other tools load, without
Spry: the adapters merged into the weights (peft's merge_and_unload), the head beside them.

- A head on the model's pooled sentence embedding (pooling=auto and the other pooled
  modes, the default): a sentence-transformers folder, written by sentence-transformers
  itself — the body, its Pooling (and Normalize where the model declares it), then the
  head as a Dense layer without activation, so `SentenceTransformer(OUT).encode(texts)`
  returns the head's logits (for task_head=regression: the score; for task_head=multilabel
  one logit a label, its sigmoid the label's probability).
- pooling=model (the architecture's own *ForSequenceClassification head): the model's
  save_pretrained folder with id2label, read by transformers' text-classification
  pipeline.

Each folder also holds spry_export.json: the labels in logit order, the task head, the
activation that makes them predictions (softmax, sigmoid, none), the text columns and the
run it came from.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from spry.config import ConfigError
from spry.config.choices import SENTENCE_HEADS

EXPORT_INFO = "spry_export.json"
PROBLEM_TYPES = {"regression": "regression", "multilabel": "multi_label_classification"}
ACTIVATIONS = {"classifier": "softmax", "multilabel": "sigmoid", "regression": "none"}
"""What turns the logits into the run's predictions: the classes' probabilities, each
label's on its own (task_head=multilabel: a label where it passes 0.5), the score itself."""
ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "last": "lasttoken"}
"""Spry's pooling modes by sentence-transformers' names."""


def export(run_dir: str | Path, out: str | Path) -> Path:
    """Write RUN_DIR's final model to the folder `out` (new or empty); return it."""
    from spry.models import load_tokenizer
    from spry.predict import load_run_model, run_config
    from spry.tasks.pooling import PooledClassifier

    run_dir, out = Path(run_dir), Path(out)
    cfg = run_config(run_dir, [], command="export", heads=SENTENCE_HEADS)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"export: {out} exists and is not an empty folder; give a new "
                          "folder (nothing was overwritten)")
    tokenizer = load_tokenizer(cfg)
    model = load_run_model(run_dir, cfg, tokenizer)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.eval()
    names = list(cfg.label_names or ["score"])
    if isinstance(merged, PooledClassifier):
        if cfg.pair_column:
            raise ConfigError(
                f"export: this run reads text pairs ({cfg.text_column!r}, {cfg.pair_column!r}) "
                "through one encoder with a head on its pooled embedding, which "
                "sentence-transformers has no folder for (its embedding models read one text; "
                f"its cross-encoders a *ForSequenceClassification); `spry predict {run_dir}` "
                "reads it, and a run with pooling=model exports")
        _write_sentence_transformer(merged, tokenizer, cfg.max_length, out)
        kind = "sentence-transformers"
    else:
        merged.config.id2label = dict(enumerate(names))
        merged.config.label2id = {n: i for i, n in enumerate(names)}
        if cfg.task_head in PROBLEM_TYPES:  # how transformers' pipelines read the logits
            merged.config.problem_type = PROBLEM_TYPES[cfg.task_head]
        merged.save_pretrained(out)
        tokenizer.save_pretrained(out)
        kind = "transformers"
    info = {"format": kind, "labels": names, "task_head": cfg.task_head,
            "activation": ACTIVATIONS[cfg.task_head],
            "text_column": cfg.text_column, "pair_column": cfg.pair_column,
            "max_length": cfg.max_length, "run": str(run_dir.resolve()),
            "model": cfg.model, "peft": cfg.peft, "method": cfg.method}
    (out / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return out


def _write_sentence_transformer(model, tokenizer, max_length: int, out: Path) -> None:
    """The pooled classifier as sentence-transformers modules: Transformer (the merged
    body), Pooling, Normalize where declared, Dense (the head, identity activation)."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers ≥ 6 moved its modules; earlier releases keep `models`
        from sentence_transformers.sentence_transformer.modules import (Dense, Normalize,
                                                                        Pooling, Transformer)
    except ImportError:
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    body = getattr(model, model.body_name)
    head = model.classifier
    with tempfile.TemporaryDirectory() as tmp:
        body.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        modules = [Transformer(tmp, max_seq_length=max_length),
                   Pooling(body.config.hidden_size, ST_POOLING[model.pooling.mode])]
        if model.pooling.normalize:
            modules.append(Normalize())
        modules.append(Dense(head.in_features, head.out_features,
                             activation_function=torch.nn.Identity(),
                             init_weight=head.weight.detach().float(),
                             init_bias=head.bias.detach().float()))
        SentenceTransformer(modules=modules, device="cpu").save(str(out))
