"""Forward gradients against autograd: exact directional derivatives, unbiased estimates."""

from __future__ import annotations

import pytest
import torch

from spry.tasks.classifier import classification_loss
from spry.estimators import backprop_gradient, draw_tangents, forward_gradient
from spry.models import trainable_params
from tiny_lora import model_and_batch


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama", "tiny_opt"])
def test_jvp_equals_grad_dot_tangent(fixture, request):
    model, batch = model_and_batch(request.getfixturevalue(fixture))
    loss_fn = classification_loss(model, batch)
    params = {n: p.detach() for n, p in trainable_params(model).items()}
    exact = backprop_gradient(loss_fn, params).grads
    est = forward_gradient(loss_fn, params, tangent_seeds=[123])
    v = draw_tangents(params, 123)
    grad_dot_v = sum(float((exact[n] * v[n]).sum()) for n in params)
    assert est.scalars[0] == pytest.approx(grad_dot_v, rel=1e-6)
    # g = d v exactly, for K = 1
    for n in params:
        torch.testing.assert_close(est.grads[n], est.scalars[0] * v[n])


def test_partial_parameter_dict_gets_the_units_gradient_only(tiny_bert):
    model, batch = model_and_batch(tiny_bert)
    loss_fn = classification_loss(model, batch)
    params = {n: p.detach() for n, p in trainable_params(model).items()}
    some = {n: t for n, t in params.items() if "layer.1" in n}
    assert some and len(some) < len(params)
    exact = backprop_gradient(loss_fn, params).grads
    est = forward_gradient(loss_fn, some, tangent_seeds=[7])
    v = draw_tangents(some, 7)
    assert est.scalars[0] == pytest.approx(sum(float((exact[n] * v[n]).sum()) for n in some),
                                           rel=1e-6)


def test_mean_of_many_forward_gradients_approaches_autograd():
    """E[(∇L·v) v] = ∇L: 2,000 single-tangent estimates on a small quadratic."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, generator=g, dtype=torch.float64)
    h = torch.randn(20, 20, generator=g, dtype=torch.float64)
    hess = h @ h.T / 20 + torch.eye(20, dtype=torch.float64)

    def loss_fn(params):
        w = torch.cat([params["w1"].flatten(), params["w2"].flatten()])
        return 0.5 * (w - a) @ hess @ (w - a)

    params = {"w1": torch.zeros(4, 3, dtype=torch.float64), "w2": torch.ones(8, dtype=torch.float64)}
    exact = backprop_gradient(loss_fn, params).grads
    mean = {n: torch.zeros_like(t) for n, t in params.items()}
    for seed in range(2000):
        for n, t in forward_gradient(loss_fn, params, tangent_seeds=[seed]).grads.items():
            mean[n] += t / 2000
    flat = lambda d: torch.cat([d[n].flatten() for n in sorted(d)])  # noqa: E731
    cosine = torch.nn.functional.cosine_similarity(flat(mean), flat(exact), dim=0)
    assert cosine > 0.9


def test_k_tangents_average_and_same_seeds_same_estimate(tiny_bert):
    model, batch = model_and_batch(tiny_bert)
    loss_fn = classification_loss(model, batch)
    params = {n: p.detach() for n, p in trainable_params(model).items()}
    est = forward_gradient(loss_fn, params, tangent_seeds=[1, 2, 3])
    singles = [forward_gradient(loss_fn, params, tangent_seeds=[s]) for s in (1, 2, 3)]
    assert est.scalars == pytest.approx([s.scalars[0] for s in singles], rel=1e-9)
    for n in params:
        torch.testing.assert_close(est.grads[n], sum(s.grads[n] for s in singles) / 3)


def test_forward_gradient_builds_no_autograd_graph(tiny_bert):
    model, batch = model_and_batch(tiny_bert, dtype="float32")
    loss_fn = classification_loss(model, batch)
    params = trainable_params(model)  # live Parameters that require grad
    est = forward_gradient(loss_fn, params, tangent_seeds=[0])
    assert all(g.grad_fn is None and not g.requires_grad for g in est.grads.values())
    assert all(p.grad is None for p in params.values())


def test_a_tensor_the_loss_never_reads_has_zero_gradient_in_both_estimators():
    """An adapter on a layer the head does not use (a pooler under mean pooling)."""
    params = {"used": torch.ones(3), "unused": torch.ones(2)}
    loss_fn = lambda p: (p["used"] ** 2).sum()  # noqa: E731
    exact = backprop_gradient(loss_fn, params).grads
    torch.testing.assert_close(exact["used"], 2 * torch.ones(3))
    torch.testing.assert_close(exact["unused"], torch.zeros(2))
    est = forward_gradient(loss_fn, params, tangent_seeds=[3])
    v = draw_tangents(params, 3)
    assert est.scalars[0] == pytest.approx(float((2 * v["used"]).sum()), rel=1e-6)
