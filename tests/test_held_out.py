"""The held-out split's metrics in metrics.jsonl are the final model's, example by example."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from spry.data import build_federated_data
from spry.experiment import run
from spry.metrics import read_metrics
from spry.models import load_tokenizer, load_trainable
from spry.tasks.heads import load_model


def test_test_loss_is_the_mean_cross_entropy_of_the_final_model(tiny_config):
    # Prepare: one round, then the saved global weights scored one example at a time
    # (no batching, no padding, no length order: independent of predict_labels).
    cfg = tiny_config(rounds=1, personalization_epochs=0)
    out = run(cfg, progress=False)
    row = read_metrics(out)[-1]
    tok = load_tokenizer(cfg)
    data = build_federated_data(cfg, tok)
    model = load_model(cfg, data.num_labels, tok.pad_token_id, data.task.label_words)
    load_trainable(model, load_file(str(out / "trainable.safetensors")))
    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for features, label in zip(data.test.features, data.test.labels):
            logits = model(**{k: torch.tensor([v]) for k, v in features.items()}).logits
            losses.append(float(F.cross_entropy(logits.float(), torch.tensor([label]))))
            correct += int(logits.argmax(-1).item() == label)
    # Assert
    assert row["test_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-4)
    assert row["test_accuracy"] == correct / len(losses)
