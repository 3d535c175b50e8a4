"""train_dropout: whether a client trains with the model's dropout on (recipe=spry: off for
the estimators, on for backprop; recipe=paper: on)."""

from __future__ import annotations

import pytest

import spry.client as client
import spry.per_iteration.engine as per_iteration
from spry.config import Config
from spry.experiment import run
from spry.metrics import read_metrics


def test_the_recipes_defaults_and_an_explicit_value_wins():
    for method in ("spry", "fedfgd", "fedmezo", "baffle", "fwdllm"):
        cfg = Config(method=method)
        assert cfg.train_dropout is False
        assert cfg.defaulted["train_dropout"] == f"recipe=spry, method={method}"
    assert Config(method="backprop").train_dropout is True
    assert Config(method="backprop_split").train_dropout is True
    assert Config(recipe="paper").train_dropout is True
    assert Config(method="spry", train_dropout=True).train_dropout is True
    assert Config(method="backprop", train_dropout=False).train_dropout is False
    assert "train_dropout" not in Config(train_dropout=True).defaulted


def _spy_training_mode(monkeypatch, module) -> list[bool]:
    """Record model.training at every step the client takes."""
    seen: list[bool] = []
    real = module.step_estimate

    def step_estimate(model, *args, **kwargs):
        seen.append(model.training)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(module, "step_estimate", step_estimate)
    return seen


@pytest.mark.parametrize("overrides, training", [
    (dict(method="spry"), False),                          # the estimators: no dropout
    (dict(method="spry", train_dropout=True), True),
    (dict(method="backprop"), True),                       # backprop keeps it
    (dict(method="fedmezo", train_dropout=False), False),
])
def test_a_client_trains_in_the_mode_the_setting_asks(tiny_config, monkeypatch, overrides,
                                                       training):
    seen = _spy_training_mode(monkeypatch, client)
    run(tiny_config(rounds=1, personalization_epochs=0, **overrides), progress=False)
    assert seen and set(seen) == {training}


def test_per_iteration_steps_follow_it_too(tiny_config, monkeypatch):
    seen = _spy_training_mode(monkeypatch, per_iteration)
    run(tiny_config(rounds=1, personalization_epochs=0, communication="per_iteration",
                    server_optimizer="fedavg"), progress=False)
    assert seen and set(seen) == {False}


def test_without_dropout_a_step_does_not_depend_on_the_dropout_draws(tiny_config,
                                                                      monkeypatch):
    """The same run with other dropout draws (the dropout stream moved on its own: another
    seed would change the batches and tangents too) trains to the same loss only without
    dropout."""
    real = client.seeded_global_rng

    def train_loss(train_dropout: bool, shift: int) -> float:
        monkeypatch.setattr(client, "seeded_global_rng", lambda seed: real(seed + shift))
        out = run(tiny_config(rounds=1, personalization_epochs=0, train_dropout=train_dropout,
                              run_name=f"dropout-{train_dropout}-{shift}"), progress=False)
        return read_metrics(out)[-1]["train_loss"]

    assert train_loss(False, 0) == train_loss(False, 1)
    assert train_loss(True, 0) != train_loss(True, 1)
