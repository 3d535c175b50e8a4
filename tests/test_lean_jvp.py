"""The lean forward-mode rules and batched tangents give the same numbers as the plain ones."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp

from spry.tasks.classifier import classification_loss
from spry.estimators import forward_gradient
from spry.estimators.forward_gradient import (batched_forward_gradient,
                                              sequential_forward_gradient)
from spry.estimators.lean_jvp import lean_forward_ad
from spry.models import trainable_params
from tiny_lora import model_and_batch


def _both(fn, primals, tangents):
    with torch.no_grad():
        plain = jvp(fn, primals, tangents)
        with lean_forward_ad():
            lean = jvp(fn, primals, tangents)
    return plain, lean


@pytest.mark.parametrize("tangent_of", [("x",), ("w",), ("b",), ("x", "w", "b")])
def test_lean_linear_matches_builtin_jvp(tangent_of):
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((3, 5, 4), (6, 4), (6,)))
    values = {"x": x, "w": w, "b": b}
    names = list(tangent_of)

    def fn(*ts):
        full = {**values, **dict(zip(names, ts))}
        return F.linear(full["x"], full["w"], full["b"])

    primals = tuple(values[n] for n in names)
    tangents = tuple(torch.randn_like(p) for p in primals)
    (y0, t0), (y1, t1) = _both(fn, primals, tangents)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(t1, t0)


@pytest.mark.parametrize("call", [lambda x: F.softmax(x, dim=-1),
                                  lambda x: F.softmax(x, dim=-1, dtype=torch.float64),
                                  lambda x: torch.softmax(x, 1), lambda x: x.softmax(-1)])
def test_lean_softmax_matches_builtin_jvp(call):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    (y0, t0), (y1, t1) = _both(call, (x,), (torch.randn_like(x),))
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(t1, t0)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama", "tiny_opt"])
def test_batched_tangents_equal_sequential(fixture, request):
    """Same seeds -> same tangents -> the same estimate, one primal pass or K."""
    model, batch = model_and_batch(request.getfixturevalue(fixture))
    loss_fn = classification_loss(model, batch)
    params = {n: p.detach() for n, p in sorted(trainable_params(model).items())}
    seeds = [11, 12, 13, 14]
    with torch.no_grad(), lean_forward_ad():
        batched = batched_forward_gradient(loss_fn, params, seeds)
        sequential = sequential_forward_gradient(loss_fn, params, seeds)
    # float64 models, but Llama's RMSNorm computes in float32: float32 tolerance.
    assert batched.scalars == pytest.approx(sequential.scalars, rel=1e-5, abs=1e-7)
    assert batched.loss == pytest.approx(sequential.loss, rel=1e-6)
    for n in params:
        torch.testing.assert_close(batched.grads[n], sequential.grads[n], rtol=1e-5, atol=1e-7)
    # the public function takes the batched path and agrees too
    public = forward_gradient(loss_fn, params, seeds)
    assert public.scalars == pytest.approx(sequential.scalars, rel=1e-5, abs=1e-7)


def test_falls_back_to_sequential_when_vmap_fails(tiny_bert, monkeypatch, caplog):
    # The package re-exports the function under the module's name: fetch the module.
    module = importlib.import_module("spry.estimators.forward_gradient")
    model, batch = model_and_batch(tiny_bert)
    loss_fn = classification_loss(model, batch)
    params = {n: p.detach() for n, p in trainable_params(model).items()}
    expected = forward_gradient(loss_fn, params, [1, 2])

    def no_vmap(*args, **kwargs):
        raise RuntimeError("vmap: no batching rule for this op")

    monkeypatch.setattr(module, "batched_forward_gradient", no_vmap)
    got = module.forward_gradient(loss_fn, params, [1, 2])
    assert got.scalars == pytest.approx(expected.scalars, rel=1e-9, abs=1e-12)
    assert "one at a time" in caplog.text
