"""The lean forward-mode rules and batched tangents give the same numbers as the plain ones."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch.func import jvp, vmap

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


@pytest.mark.parametrize("tangent_of", [("x",), ("w",), ("b",), ("x", "w", "b")])
def test_lean_layer_norm_matches_builtin_jvp(tangent_of):
    """The rule calls layer norm's backward kernel (its Jacobian is symmetric up to γ)."""
    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((3, 5, 8), (8,), (8,)))
    values = {"x": x, "w": w, "b": b}
    names = list(tangent_of)

    def fn(*ts):
        full = {**values, **dict(zip(names, ts))}
        return F.layer_norm(full["x"], (8,), full["w"], full["b"], eps=1e-5)

    primals = tuple(values[n] for n in names)
    tangents = tuple(torch.randn_like(p) for p in primals)
    (y0, t0), (y1, t1) = _both(fn, primals, tangents)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(t1, t0)
    # under vmap over tangents (K > 1 sharing one primal pass)
    stacked = tuple(torch.stack([t, -2 * t]) for t in tangents)
    with torch.no_grad(), lean_forward_ad():
        batched = vmap(lambda *ts: jvp(fn, primals, ts)[1])(*stacked)
    torch.testing.assert_close(batched[1], -2 * t0)


def test_lean_layer_norm_without_affine_matches_builtin_jvp():
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    (_, t0), (_, t1) = _both(lambda v: F.layer_norm(v, (6,)), (x,), (torch.randn_like(x),))
    torch.testing.assert_close(t1, t0)


@pytest.mark.parametrize("tangent_of", [("a",), ("b",), ("a", "b")])
def test_lean_matmul_matches_builtin_jvp(tangent_of):
    """Attention's products: (batch, heads, tokens, dim) @ its transpose, and a broadcast."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    b = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64).transpose(2, 3)
    values = {"a": a, "b": b}
    names = list(tangent_of)

    def fn(*ts):
        full = {**values, **dict(zip(names, ts))}
        return torch.matmul(full["a"], full["b"]) + full["a"] @ b[0, 0]

    primals = tuple(values[n] for n in names)
    tangents = tuple(torch.randn_like(p) for p in primals)
    (y0, t0), (y1, t1) = _both(fn, primals, tangents)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(t1, t0)


def test_bf16_tangents_keep_the_primal_and_approximate_the_tangent():
    """tangent_dtype=bfloat16: the primal pass is untouched (the same values bit for bit),
    the tangent stays float32 and agrees with the exact one to bf16's precision."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 6, 16, generator=g)
    w1, w2 = torch.randn(32, 16, generator=g), torch.randn(16, 32, generator=g)

    def fn(v):
        h = F.layer_norm(F.linear(v, w1).relu(), (32,))
        return torch.matmul(F.linear(h, w2), v.transpose(1, 2)).softmax(-1)

    xt = torch.randn_like(x)
    with torch.no_grad():
        exact = jvp(fn, (x,), (xt,))
        with lean_forward_ad(tangent_dtype="bfloat16"):
            cheap = jvp(fn, (x,), (xt,))
    assert torch.equal(cheap[0], exact[0])
    assert cheap[1].dtype == torch.float32
    torch.testing.assert_close(cheap[1], exact[1], rtol=5e-2, atol=5e-2 * exact[1].abs().mean())
    assert not torch.equal(cheap[1], exact[1])  # it did run in bf16


def test_forward_gradient_with_bf16_tangents_is_close_to_exact(tiny_bert):
    model, batch = model_and_batch(tiny_bert, dtype="float32")
    loss_fn = classification_loss(model, batch)
    params = {n: p.detach() for n, p in sorted(trainable_params(model).items())}
    seeds = list(range(8))
    exact = forward_gradient(loss_fn, params, seeds)
    cheap = forward_gradient(loss_fn, params, seeds, tangent_dtype="bfloat16")
    assert cheap.loss == exact.loss
    d0, d1 = torch.tensor(exact.scalars), torch.tensor(cheap.scalars)
    assert float((d1 - d0).abs().max()) < 0.05 * float(d0.abs().mean())


def test_tangent_dtype_reaches_both_client_estimators(tiny_bert, monkeypatch):
    """The setting is bound into the method's estimator and passed to the per-example one."""
    from spry import client
    from spry.config import Config
    from spry.methods import make_estimator

    cfg = Config(model=tiny_bert, method="spry", tangent_dtype="bfloat16")
    assert make_estimator(cfg).keywords["tangent_dtype"] == "bfloat16"
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise StopIteration

    monkeypatch.setattr(client, "example_forward_gradient", spy)
    model, batch = model_and_batch(tiny_bert)
    cfg = Config(model=tiny_bert, method="spry", peft="lora", tangent_sharing="example",
                 tangent_dtype="bfloat16")
    with pytest.raises(StopIteration):
        client.step_estimate(model, batch, dict(trainable_params(model)), None, cfg,
                             make_estimator(cfg), [0])
    assert seen["tangent_dtype"] == "bfloat16"
