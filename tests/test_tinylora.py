"""peft=tinylora: one unit per adapted module, its v the only trainable tensor, forward
gradients exact through peft's shared v container, and the settings that go with it."""

from __future__ import annotations

import pytest
import torch

from spry.config import Config, ConfigError
from spry.estimators.example_tangents import (example_forward_gradient, example_tangent,
                                              sequential_example_forward_gradient)
from spry.estimators.forward_gradient import forward_gradient
from spry.models import HEAD_UNIT, list_units, load_tokenizer, trainable_params
from spry.seeds import seeded_global_rng
from spry.tasks.classifier import classification_loss
from spry.tasks.heads import load_model


def _tinylora(path, **kw):
    cfg = Config(model=path, peft="tinylora", dtype="float64", **kw)
    with seeded_global_rng(0):
        model = load_model(cfg, num_labels=2, pad_token_id=load_tokenizer(cfg).pad_token_id)
    return cfg, model.eval()


def _adapted(model):
    """(module path, TinyLoRA layer) for every adapted module, in network order."""
    return [(p, m) for p, m in model.named_modules() if hasattr(m, "_tinylora_v_key")]


def test_one_unit_per_adapted_module_each_a_v_of_u_numbers(tiny_bert):
    _, model = _tinylora(tiny_bert, tinylora_r=2, tinylora_u=3)
    units = list_units(model)
    params = trainable_params(model)
    assert [u.name for u in units[:-1]] == [
        f"bert.encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
    assert units[-1].name == HEAD_UNIT
    assert sorted(params) == sorted(p for u in units for p in u.params)
    for unit in units[:-1]:
        (name,) = unit.params
        assert ".tinylora_v." in name and params[name].shape == (3,)
        assert torch.count_nonzero(params[name]) == 0  # the adapter starts as a no-op


def test_each_units_v_moves_only_its_own_module(tiny_bert):
    """peft registers every module's v under the first module; the unit of a v must be the
    module that reads it, or Spry deals one module's numbers to another's client."""
    _, model = _tinylora(tiny_bert)
    units = list_units(model)
    params = trainable_params(model)
    layers = dict(_adapted(model))
    for unit in units[:-1]:
        (name,) = unit.params
        with torch.no_grad():
            params[name].fill_(0.3)
        moved = [path.removeprefix("base_model.model.") for path, layer in layers.items()
                 if torch.count_nonzero(layer._compute_R("default")) > 0]
        with torch.no_grad():
            params[name].zero_()
        assert moved == [unit.name]


def test_forward_gradient_is_exact_and_leaves_the_model_its_parameters(tiny_bert):
    """The jvp swaps v in through peft's ParameterDict, which every adapted module shares;
    its directional derivative must be autograd's ∇L·v, and afterwards the model must still
    hold its v Parameters (with ties honoured, torch.func wrote plain tensors back)."""
    _, model = _tinylora(tiny_bert)
    _v_away_from_zero(model)
    tok = load_tokenizer(Config(model=tiny_bert))
    batch = dict(tok(["a fine film", "dull and far too long"], padding=True,
                     return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    loss_fn = classification_loss(model, batch)
    before = trainable_params(model)

    params = {n: p.detach() for n, p in before.items()}
    est = forward_gradient(loss_fn, params, [7])
    assert trainable_params(model) == before  # the same Parameter objects, still trainable
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    exact = dict(zip(leaves, torch.autograd.grad(loss_fn(leaves), list(leaves.values()))))
    # K=1: the estimate is d·v, so v = grads / d and ∇L·v must give d back.
    d = est.scalars[0]
    v = {n: g / d for n, g in est.grads.items()}
    assert sum((exact[n] * v[n]).sum() for n in v).item() == pytest.approx(d, rel=1e-8)
    assert all(exact[n].abs().sum() > 0 for n in exact if ".tinylora_v." in n)


def test_tinylora_shares_one_tangent_a_batch_and_checks_its_numbers():
    assert Config(peft="tinylora").tangent_sharing == "batch"
    assert Config(peft="lora").tangent_sharing == "example"
    assert Config(peft="tinylora", tangent_sharing="example").tangent_sharing == "example"
    with pytest.raises(ConfigError, match="tangent_sharing: example needs"):
        Config(peft="ia3", tangent_sharing="example")
    with pytest.raises(ConfigError, match="tinylora_u"):
        Config(peft="tinylora", tinylora_u=0)


def _v_away_from_zero(model):
    with torch.no_grad():  # every factor of R then has a gradient
        for name, p in trainable_params(model).items():
            if ".tinylora_v." in name:
                p.normal_(std=0.5, generator=torch.Generator().manual_seed(1))


def _batch(path):
    tok = load_tokenizer(Config(model=path))
    batch = dict(tok(["a fine film", "dull and far too long", "not bad"], padding=True,
                     return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0, 1])
    return batch


def test_per_example_tangents_reach_v_through_the_einsum_that_builds_r(tiny_bert):
    """peft's TinyLoRA builds R = einsum(v, P) and applies x Rᵀ: example i's directional
    derivative must be autograd's ∇L_i · v_i for its own tangent v_i, every v reached."""
    _, model = _tinylora(tiny_bert)
    _v_away_from_zero(model)
    batch = _batch(tiny_bert)
    b = len(batch["labels"])
    losses = classification_loss(model, batch, per_example=True)
    params = {n: p.detach() for n, p in trainable_params(model).items()
              if ".tinylora_v." in n}
    est = example_forward_gradient(losses, params, [11])
    leaves = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    per_loss = losses(leaves)
    for i in range(b):
        grads = torch.autograd.grad(per_loss[i], list(leaves.values()), retain_graph=True)
        expected = sum((g * example_tangent(11, n, b, p.shape, p.dtype, p.device)[i]).sum()
                       for (n, p), g in zip(params.items(), grads))
        assert est.scalars[i] == pytest.approx(float(expected), rel=1e-8, abs=1e-12)
    # K tangents sharing one primal pass (zero offsets on v, fanned out by the same einsum)
    # give the K separate passes' estimate.
    seeds = [3, 4]
    seq = sequential_example_forward_gradient(losses, params, seeds)
    bat = example_forward_gradient(losses, params, seeds, batch_size=b)
    assert bat.scalars == pytest.approx(seq.scalars, rel=1e-8, abs=1e-12)
    for n in params:
        torch.testing.assert_close(bat.grads[n], seq.grads[n])
