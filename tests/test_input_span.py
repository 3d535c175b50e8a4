"""LoRA A factors alone (lora_factors=a) and their input-span tangents (tangent_space=inputs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spry.client import step_estimate
from spry.config import Config, ConfigError
from spry.estimators.example_tangents import example_forward_gradient, input_span_tangent
from spry.methods import make_estimator
from spry.models import list_units, trainable_params
from spry.tasks.classifier import classification_loss
from tiny_lora import pooled_model_and_batch


_model = pooled_model_and_batch


def test_lora_factors_a_freezes_a_seeded_random_b_and_trains_a_from_zero(tiny_bert):
    cfg, model, _ = _model(tiny_bert, lora_factors="a")
    named = dict(model.named_parameters())
    b_names = [n for n in named if ".lora_B." in n]
    a_names = [n for n in named if ".lora_A." in n]
    assert b_names and a_names
    assert all(not named[n].requires_grad and named[n].abs().max() > 0 for n in b_names)
    assert all(named[n].requires_grad and named[n].abs().max() == 0 for n in a_names)
    units = [u for u in list_units(model) if u.name != "head"]
    assert sorted(p for u in units for p in u.params) == sorted(a_names)
    # The server and every client build the same frozen B from the run's seed.
    _, again, _ = _model(tiny_bert, lora_factors="a")
    for n in b_names:
        torch.testing.assert_close(dict(again.named_parameters())[n], named[n], rtol=0, atol=0)
    _, other, _ = _model(tiny_bert, lora_factors="a", seed=1)
    assert not torch.equal(dict(other.named_parameters())[b_names[0]], named[b_names[0]])


def test_an_input_span_tangent_lies_in_the_span_of_the_examples_real_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 10, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 4:] = 0
    v = input_span_tangent(7, "w", x, 2, mask)
    assert v.shape == (3, 2, 10)
    for i in range(3):
        real = x[i][mask[i].bool()]  # (tokens, d_in)
        basis = torch.linalg.qr(real.T).Q  # the span of example i's real tokens
        off_span = v[i] - (v[i] @ basis) @ basis.T
        assert off_span.abs().max() < 1e-10
    # The padding tokens do not enter: changing them leaves every tangent as it was.
    x2 = x.clone()
    x2[1, 4:] = 100.0
    torch.testing.assert_close(input_span_tangent(7, "w", x2, 2, mask), v)
    # Scaled to a Gaussian tangent's squared norm on average (rows · d_in).
    many = torch.stack([input_span_tangent(s, "w", x, 2, mask) for s in range(2000)])
    assert many.pow(2).sum((-1, -2)).mean() == pytest.approx(20, rel=0.05)


def test_input_span_estimates_average_to_the_preconditioned_gradient():
    """E[ĝ] = mean_i s_i² X_iᵀ X_i g_i (a descent direction), not ∇L: the bias is stated."""
    g = torch.Generator().manual_seed(3)
    b, t, d_in = 4, 5, 6
    x = torch.randn(b, t, d_in, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    head = torch.randn(2, 1, generator=g, dtype=torch.float64)
    a = torch.randn(1, d_in, generator=g, dtype=torch.float64) * 0.3

    def losses(p):
        h = torch.tanh(F.linear(x, p["a"])).mean(1)  # (B, 1)
        return F.cross_entropy(F.linear(h, head), y, reduction="none")

    per_example = []
    for i in range(b):
        leaf = a.clone().requires_grad_()
        per_example.append(torch.autograd.grad(losses({"a": leaf})[i], leaf)[0])
    scale2 = d_in / x.pow(2).sum((-1, -2))  # s_i², with every token real
    expected = sum(scale2[i] * per_example[i] @ x[i].T @ x[i] for i in range(b)) / b
    true = sum(per_example) / b
    n = 4000
    draws = torch.stack([example_forward_gradient(losses, {"a": a}, [s], input_span=["a"]
                                                  ).grads["a"] for s in range(n)])
    z = (draws.mean(0) - expected) / (draws.std(0) / n ** 0.5)
    assert z.abs().max() < 4.5
    assert float((expected * true).sum()) > 0  # it descends


def test_on_the_client_path_input_span_estimates_point_closer_to_the_gradient(
        tiny_bert):
    cosines = {}
    for space in ("parameters", "inputs"):
        cfg, model, batch = _model(tiny_bert, lora_factors="a", tangent_space=space,
                                   head_gradient="estimator")
        params = {n: p for n, p in trainable_params(model).items() if ".lora_A." in n}
        leaves = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        loss = classification_loss(model, batch)(leaves)
        true = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(leaves.values()))])
        estimator, cos = make_estimator(cfg), []
        for seed in range(40):
            est = step_estimate(model, batch, params, None, cfg, estimator, [seed])
            assert set(est.grads) == set(params)  # only the A factors, nothing else
            flat = torch.cat([est.grads[n].flatten() for n in leaves])
            cos.append(float(flat @ true / (flat.norm() * true.norm())))
        cosines[space] = sum(cos) / len(cos)
    # A's gradient lies in the span of the layer's few token inputs; so do these tangents.
    assert cosines["inputs"] > 2 * cosines["parameters"] > 0, cosines


@pytest.mark.parametrize("overrides, field", [
    ({"tangent_space": "inputs", "method": "fedmezo"}, "tangent_space: inputs"),
    ({"tangent_space": "inputs", "tangent_sharing": "batch"}, "tangent_space: inputs"),
    ({"tangent_space": "inputs", "peft": "ia3"}, "tangent_space: inputs"),
    ({"tangent_space": "spans"}, "tangent_space: 'spans' is not one of"),
    ({"lora_factors": "a", "peft": "bitfit"}, "lora_factors: only used by peft=lora"),
    ({"lora_factors": "b"}, "lora_factors: 'b' is not one of"),
])
def test_bad_input_span_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        Config(**overrides)
