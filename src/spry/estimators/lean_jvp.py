"""Forward-mode rules that do only the work a tangent needs.

PyTorch's built-in forward-AD formula for `addmm`/`mm` (hence `F.linear`) is
`mat1_t @ mat2 + mat1 @ mat2_t`, and when one input has no tangent (a frozen weight) it
materialises a zero tangent and still multiplies it: every frozen linear layer costs one
extra full matmul plus an add, ~3x the primal instead of 2x (measured here: a
1024x384 @ 384x1536 linear, primal 12 ms, dual 36 ms, the rule below 23 ms; see
docs/memory.md). Layer norm's and softmax's built-in rules are decomposed into many
elementwise passes (layer norm: ~10 over the activations, 16x its primal on a MiniLM
layer). Both have a symmetric Jacobian (softmax: diag(p) − ppᵀ; layer norm: diag(γ) times
the symmetric rstd·(I − 11ᵀ/H − x̂x̂ᵀ/H)), so their jvp is their vjp, which PyTorch
computes in one fused backward kernel: the rules below call it. Inside `lean_forward_ad()`
these functions go through `autograd.Function`s whose `jvp` skips absent tangents and
reuses the primal's results. They compose with `torch.func.jvp` and `torch.func.vmap`
(batched tangents); they have no backward and are only used inside the forward-gradient
estimator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _product(op, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """op(a, b) for a tangent term, computed in `dtype` (tangent_dtype) where one is set and
    differs, returned in a's dtype: forward AD keeps a tangent in its primal's dtype."""
    if dtype is None or dtype == a.dtype:
        return op(a, b)
    return op(a.to(dtype), b.to(dtype)).to(a.dtype)


def _bilinear_tangent(op, a, a_t, b, b_t, dtype: torch.dtype | None) -> torch.Tensor | None:
    """The tangent of op(a, b) for a bilinear op, ȧ·b + a·ḃ, each term only if its tangent
    exists (None when neither does)."""
    out = None if a_t is None else _product(op, a_t, b, dtype)
    if b_t is not None:
        term = _product(op, a, b_t, dtype)
        out = term if out is None else out + term
    return out


class _Linear(torch.autograd.Function):
    """y = x Wᵀ + b with ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ, each term only if that tangent exists."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, tangent_dtype):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.tangent_dtype = inputs
        # Absent tangents arrive as None instead of materialised zeros.
        ctx.set_materialize_grads(False)
        ctx.save_for_forward(x, weight)

    @staticmethod
    def jvp(ctx, x_t, weight_t, bias_t, _dtype_t):
        x, weight = ctx.saved_tensors
        out = _bilinear_tangent(F.linear, x, x_t, weight, weight_t, ctx.tangent_dtype)
        if bias_t is not None:
            out = bias_t.expand(*x.shape[:-1], bias_t.shape[-1]) if out is None else out + bias_t
        if out is None:  # no tangent at all: the caller still expects one
            out = torch.zeros(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
        return out


class _Matmul(torch.autograd.Function):
    """y = a @ b (attention's products) with ẏ = ȧ b + a ḃ, each term only if that tangent
    exists; like `_Linear`, its products run in tangent_dtype where one is set."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a, b, tangent_dtype):
        return torch.matmul(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b, ctx.tangent_dtype = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_forward(a, b)

    @staticmethod
    def jvp(ctx, a_t, b_t, _dtype_t):
        a, b = ctx.saved_tensors
        out = _bilinear_tangent(torch.matmul, a, a_t, b, b_t, ctx.tangent_dtype)
        if out is None:
            out = torch.zeros(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
                              + (a.shape[-2], b.shape[-1]), dtype=a.dtype, device=a.device)
        return out


class _Softmax(torch.autograd.Function):
    """y = softmax(x) with ẏ = y ⊙ (ẋ − Σ y ⊙ ẋ), reusing y (in one fused kernel)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, dim):
        return torch.softmax(x, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]
        ctx.set_materialize_grads(False)
        ctx.save_for_forward(output)

    @staticmethod
    def jvp(ctx, x_t, _dim_t):
        (y,) = ctx.saved_tensors
        if x_t is None:
            return torch.zeros_like(y)
        # The Jacobian is symmetric, so Jẋ = Jᵀẋ: softmax's fused backward kernel.
        return torch.ops.aten._softmax_backward_data(x_t.to(y.dtype), y, ctx.dim, y.dtype)


class _LayerNorm(torch.autograd.Function):
    """y = γ ⊙ x̂ + β, x̂ = (x − mean) · rstd, with ẏ = γ ⊙ M ẋ + x̂ ⊙ γ̇ + β̇ where M = ∂x̂/∂x
    is symmetric: M ẋ is layer norm's own backward kernel applied to ẋ (γ left out)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, shape, weight, bias, eps):
        return torch.native_layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, shape, weight, _, _ = inputs
        _, mean, rstd = output
        ctx.shape = shape
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(mean, rstd)
        ctx.save_for_forward(x, weight, mean, rstd)

    @staticmethod
    def jvp(ctx, x_t, _shape_t, weight_t, bias_t, _eps_t):
        x, weight, mean, rstd = ctx.saved_tensors
        out = None
        if x_t is not None:
            out = torch.ops.aten.native_layer_norm_backward(
                x_t, x, ctx.shape, mean, rstd, None, None, [True, False, False])[0]
            if weight is not None:
                out = out.mul_(weight)
        if weight_t is not None:
            term = (x - mean) * rstd * weight_t
            out = term if out is None else out + term
        if bias_t is not None:
            out = bias_t.expand_as(x) if out is None else out + bias_t
        if out is None:
            out = torch.zeros_like(x)
        return out, None, None


_MATMUL = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)

# Where each softmax entry point takes `dtype` positionally.
_SOFTMAX = {F.softmax: 3, torch.softmax: 2, torch.Tensor.softmax: 2}


class lean_forward_ad(TorchFunctionMode):
    """Routes `F.linear`, `torch.matmul`, `F.softmax` and `F.layer_norm` through the lean
    rules while active. `tangent_dtype` (the setting of that name): the dtype the tangent
    matmuls run in, None for the tangents' own (an exact jvp). bfloat16 makes them 3-4x
    cheaper where bf16 matrix units exist (CPUs with AMX or avx512_bf16, GPUs), the
    primal pass staying in the model's dtype; each directional derivative is then off by
    about 0.3 % (median; at most ~1 %, MiniLM and OPT-350m shapes: docs/memory.md), far
    inside the estimator's own noise."""

    def __init__(self, tangent_dtype: torch.dtype | str | None = None):
        super().__init__()
        self.tangent_dtype = (getattr(torch, tangent_dtype) if isinstance(tangent_dtype, str)
                              else tangent_dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, *rest = args
            bias = rest[0] if rest else kwargs.get("bias")
            return _Linear.apply(x, weight, bias, self.tangent_dtype)
        if func in _MATMUL and not kwargs and len(args) == 2 \
                and all(isinstance(a, torch.Tensor) and a.dim() >= 2 for a in args):
            return _Matmul.apply(*args, self.tangent_dtype)
        if func in _SOFTMAX:
            x = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            position = _SOFTMAX[func]
            dtype = args[position] if len(args) > position else kwargs.get("dtype")
            if isinstance(dim, int):
                return _Softmax.apply(x if dtype is None else x.to(dtype), dim)
        if func is F.layer_norm:
            x, shape, *rest = args
            weight = rest[0] if rest else kwargs.get("weight")
            bias = rest[1] if len(rest) > 1 else kwargs.get("bias")
            eps = rest[2] if len(rest) > 2 else kwargs.get("eps", 1e-5)
            return _LayerNorm.apply(x, tuple(shape), weight, bias, eps)[0]
        return func(*args, **kwargs)
