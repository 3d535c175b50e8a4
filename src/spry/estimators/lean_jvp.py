"""Forward-mode rules that do only the work a tangent needs.

PyTorch's built-in forward-AD formula for `addmm`/`mm` (hence `F.linear`) is
`mat1_t @ mat2 + mat1 @ mat2_t`, and when one input has no tangent (a frozen weight) it
materialises a zero tangent and still multiplies it: every frozen linear layer costs one
extra full matmul plus an add, ~3x the primal instead of 2x (measured here: a
1024x384 @ 384x1536 linear, primal 12 ms, dual 36 ms, the rule below 23 ms; see
docs/memory.md). Softmax's rule recomputes the softmax. Inside `lean_forward_ad()` those
two functions go through `autograd.Function`s whose `jvp` skips absent tangents and reuses
the primal output. They compose with `torch.func.jvp` and `torch.func.vmap` (batched
tangents); they have no backward and are only used inside the forward-gradient estimator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class _Linear(torch.autograd.Function):
    """y = x Wᵀ + b with ẏ = ẋ Wᵀ + x Ẇᵀ + ḃ, each term only if that tangent exists."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        # Absent tangents arrive as None instead of materialised zeros.
        ctx.set_materialize_grads(False)
        ctx.save_for_forward(x, weight)

    @staticmethod
    def jvp(ctx, x_t, weight_t, bias_t):
        x, weight = ctx.saved_tensors
        out = None
        if x_t is not None:
            out = F.linear(x_t, weight)
        if weight_t is not None:
            term = F.linear(x, weight_t)
            out = term if out is None else out + term
        if bias_t is not None:
            out = bias_t.expand(*x.shape[:-1], bias_t.shape[-1]) if out is None else out + bias_t
        if out is None:  # no tangent at all: the caller still expects one
            out = torch.zeros(*x.shape[:-1], weight.shape[0], dtype=x.dtype, device=x.device)
        return out


class _Softmax(torch.autograd.Function):
    """y = softmax(x) with ẏ = y ⊙ (ẋ − Σ y ⊙ ẋ), reusing y."""

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
        p = y * x_t
        return torch.addcmul(p, y, p.sum(ctx.dim, keepdim=True), value=-1.0)


# Where each softmax entry point takes `dtype` positionally.
_SOFTMAX = {F.softmax: 3, torch.softmax: 2, torch.Tensor.softmax: 2}


class lean_forward_ad(TorchFunctionMode):
    """Routes `F.linear` and `F.softmax` through the lean rules while active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, *rest = args
            bias = rest[0] if rest else kwargs.get("bias")
            return _Linear.apply(x, weight, bias)
        if func in _SOFTMAX:
            x = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            position = _SOFTMAX[func]
            dtype = args[position] if len(args) > position else kwargs.get("dtype")
            if isinstance(dim, int):
                return _Softmax.apply(x if dtype is None else x.to(dtype), dim)
        return func(*args, **kwargs)
