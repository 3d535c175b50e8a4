"""Per-iteration Spry: scalars up, seeds down, replicas that stay in sync."""

from __future__ import annotations

import pytest
import torch

from spry.tasks.classifier import classification_loss
from spry.data import iterate_batches
from spry.estimators import forward_gradient
from spry.experiment import build, run
from spry.per_iteration.replay import (UPLOAD_HEADER_BYTES, ScalarUpload, StepRecord,
                                       rebuild_gradients)
from spry.seeds import tangent_seed
from spry.metrics import read_metrics
from spry.models import load_trainable, trainable_params
from spry.seeds import derive_seed, seeded_global_rng


def _per_iteration(tiny_config, **kw):
    base = dict(communication="per_iteration", server_optimizer="fedavg",
                personalization_epochs=0, client_lr=1e-2)
    base.update(kw)
    return tiny_config(**base)


def _run_rounds(exp, rounds):
    rows = [exp.driver.run_round(r, exp.engine) for r in range(1, rounds + 1)]
    return rows


@pytest.mark.parametrize("lag", [1000, 2])
def test_replaying_clients_end_with_the_servers_weights(tiny_config, lag):
    cfg = _per_iteration(tiny_config, num_clients=5, clients_per_round=2, rounds=6, max_steps=3,
                         max_replay_lag=lag, client_optimizer="adamw")
    exp = build(cfg)
    rows = _run_rounds(exp, cfg.rounds)
    assert sum(r["steps"] for r in rows) > 10
    last = rows[-1]["clients"]
    for cid in last:
        replica = exp.engine.replicas[cid].weights
        for name, value in exp.server.weights.items():
            torch.testing.assert_close(replica[name], value, rtol=0, atol=1e-6)
    # Clients that sat out keep their last-synced copy, which is not the server's.
    stale = [c for c in exp.engine.replicas if c not in last]
    assert stale and any(
        not torch.equal(exp.engine.replicas[c].weights[n], exp.server.weights[n])
        for c in stale for n in exp.server.weights)


def test_lagging_client_downloads_weights_instead_of_replaying(tiny_config):
    def catch_up_bytes(lag):
        cfg = _per_iteration(tiny_config, num_clients=6, clients_per_round=2, rounds=5,
                             max_steps=2, max_replay_lag=lag)
        return [r["bytes_down"] for r in read_metrics(run(cfg.replace(run_name=f"lag{lag}"),
                                                          progress=False))]

    replay, download = catch_up_bytes(1000), catch_up_bytes(1)
    assert replay[0] == download[0]  # first contact: both download the replica
    assert sum(replay[1:]) < sum(download[1:])


def test_one_client_sgd_equals_centralised_forward_gradient_sgd(tiny_config):
    cfg = _per_iteration(tiny_config, num_clients=1, clients_per_round=1, rounds=2,
                         max_steps=None, client_optimizer="sgd", client_lr=0.05, tangents=2,
                         lora_dropout=0.0, head="split", recipe="paper")
    exp = build(cfg)
    start = {n: t.clone() for n, t in exp.server.weights.items()}
    _run_rounds(exp, cfg.rounds)

    # The same seeds, by hand: one client owning every unit, plain SGD on d·v.
    model, data = exp.model, exp.data.clients[0].train
    load_trainable(model, start)
    params = trainable_params(model)
    for r in (1, 2):
        round_seed = derive_seed(cfg.seed, "round", r)
        batches = iterate_batches(data, exp.tokenizer, cfg.batch_size,
                                  seed=derive_seed(round_seed, "batches", 0, 0))
        for step, batch in enumerate(batches):
            model.train()
            with seeded_global_rng(derive_seed(round_seed, "dropout", 0, step)):  # same masks
                est = forward_gradient(classification_loss(model, batch), params,
                                       [tangent_seed(round_seed, 0, step, k) for k in range(2)])
            with torch.no_grad():
                for n, p in params.items():
                    p -= cfg.client_lr * est.grads[n]
    for n, p in params.items():
        torch.testing.assert_close(exp.server.weights[n], p.detach(), rtol=1e-4, atol=1e-6)


def test_server_regenerates_the_clients_tangents(tiny_bert, tiny_config):
    exp = build(tiny_config(lora_dropout=0.0, peft="lora"))  # one tensor pair per module
    model = exp.model
    params = trainable_params(model)
    names = [n for n in params if "layer.1" in n]
    batch = next(iterate_batches(exp.data.clients[0].train, exp.tokenizer, 4, seed=0))
    seeds = [tangent_seed(99, 3, 7, k) for k in range(3)]
    est = forward_gradient(classification_loss(model, batch), {n: params[n] for n in names}, seeds)
    upload = ScalarUpload.of(3, 7, est.scalars, 4, est.loss)
    record = StepRecord(1, 99, 7, (upload,))
    rebuilt = rebuild_gradients(record, {3: names}, {n: p.detach() for n, p in params.items()})
    assert set(rebuilt) == set(names)
    for n in names:
        torch.testing.assert_close(rebuilt[n], est.grads[n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("peft, lora_r, k", [("head", 1, 1), ("lora", 8, 1), ("lora", 8, 3)])
def test_upload_is_k_floats_plus_header_whatever_the_model(tiny_config, peft, lora_r, k):
    cfg = _per_iteration(tiny_config, peft=peft, lora_r=lora_r, tangents=k, rounds=2,
                         run_name=f"up-{peft}-{lora_r}-{k}")
    for row in read_metrics(run(cfg, progress=False)):
        # every active client uploads at every step; skipped steps would only lower it
        assert row["bytes_up"] == row["uploads"] * (UPLOAD_HEADER_BYTES + 4 * k)
        assert row["uploads"] >= row["steps"]


def test_per_iteration_rejects_methods_without_scalars():
    from spry.config import Config, ConfigError

    with pytest.raises(ConfigError, match="communication: per_iteration"):
        Config(communication="per_iteration", method="backprop", server_optimizer="fedavg")
    with pytest.raises(ConfigError, match="server_optimizer: per_iteration"):
        Config(communication="per_iteration")
