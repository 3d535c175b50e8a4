"""Personalized accuracy: the paper's (F epochs from the new global model) and
personalization=round (the clients' own models after the round's training)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import spry.engines.node as node
from spry.client import evaluate
from spry.experiment import run
from spry.metrics import read_metrics


def _spy(monkeypatch):
    """Record every local_train call, and after each train message that asked for a score,
    the client's own score of the model it trained (correct, total)."""
    trained, scores = [], []
    real_local_train, real_train_client = node.local_train, node.train_client

    def local_train(*args, **kwargs):
        trained.append(kwargs.get("epochs", 1))
        return real_local_train(*args, **kwargs)

    def train_client(model, initial, state, ins, data, tokenizer, cfg):
        update = real_train_client(model, initial, state, ins, data, tokenizer, cfg)
        if ins.score_local:
            scores.append((ins.server_round, update.local_correct,
                           evaluate(model, data.test, tokenizer, cfg)))
        return update

    monkeypatch.setattr(node, "local_train", local_train)
    monkeypatch.setattr(node, "train_client", train_client)
    return trained, scores


def test_round_personalization_reuses_the_rounds_training(tiny_config, monkeypatch):
    # Prepare: the same run twice, personalized accuracy each way.
    base = dict(rounds=2, eval_every=2, personalization_epochs=1, max_steps=2)
    trained, scores = _spy(monkeypatch)
    paper = run(tiny_config(run_name="global", **base), progress=False)
    paper_calls = len(trained)
    trained.clear()
    ours = run(tiny_config(run_name="round", personalization="round", **base), progress=False)
    # Assert: no second training in the evaluated round (4 clients a round, 2 rounds),
    # where the paper's personalization trains its 4 clients once more.
    assert paper_calls == 2 * 4 + 4 and len(trained) == 2 * 4
    # Only the evaluated round asked the clients for a score, and each is the client's
    # own trained model's (the reply's number equals scoring that model again).
    assert {r for r, _, _ in scores} == {2} and len(scores) == 4
    assert all(local == again[0] for _, local, again in scores)
    rows = {r["round"]: r for r in read_metrics(ours)}
    assert "personalized_accuracy" not in rows[1] and rows[2]["personalized_from"] == "round"
    correct = sum(again[0] for _, _, again in scores)
    total = sum(again[1] for _, _, again in scores)
    assert rows[2]["personalized_accuracy"] == pytest.approx(correct / total)
    assert rows[2]["personalization_seconds"] > 0 and rows[1]["personalization_seconds"] == 0
    # Personalization never touches training: the two runs end on the same weights and
    # the same generalized accuracy.
    a, b = load_file(str(paper / "trainable.safetensors")), load_file(str(ours / "trainable.safetensors"))
    assert all(torch.equal(a[n], b[n]) for n in a)
    paper_rows = {r["round"]: r for r in read_metrics(paper)}
    assert rows[2]["generalized_accuracy"] == paper_rows[2]["generalized_accuracy"]
    assert "personalized_from" not in paper_rows[2]


def test_round_personalization_off_schedule_falls_back_to_the_papers(tiny_config,
                                                                      monkeypatch):
    # A round evaluated without having been scheduled (here: a wall-clock cap makes round 1
    # the last) asked no scores of its clients, so they personalize from the global model,
    # and the row says so.
    trained, _ = _spy(monkeypatch)
    out = run(tiny_config(rounds=3, eval_every=3, personalization="round",
                          personalization_epochs=1, max_wall_seconds=1e-3), progress=False)
    rows = read_metrics(out)
    last = rows[-1]
    assert last["round"] < 3 and last["personalized_from"] == "global"
    assert "personalized_accuracy" in last
    assert len(trained) == 4 * len(rows) + 4
