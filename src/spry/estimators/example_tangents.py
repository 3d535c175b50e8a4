"""Forward gradients with one tangent per example (per-example weight perturbation).

A batch's loss is L = mean_i L_i, and example i only ever meets the weights through its
own rows of each layer's activations. So each example may see its own copy w_i = w with
its own tangent v_i: one forward pass with dual activations gives every d_i = ∇L_i·v_i,
and mean_i d_i v_i is an unbiased estimate of ∇L that averages B independent forward
gradients instead of one (Ren et al. 2023, "Scaling forward gradient with local losses",
independent perturbations per example). The price is nothing a shared tangent does not
pay: a linear layer's tangent output is ẋ Wᵀ + x V_iᵀ either way, computed per example.

How: inside `torch.autograd.forward_ad`, every `F.linear` whose weight (or bias) is one
of `params` adds x_i V_iᵀ (+ v_b,i) to its output's tangent, example by example. So
every tensor in `params` must be the weight or bias of a linear layer (LoRA A/B, a
linear head); `ExampleTangentError` says which one is not.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from spry.estimators.base import Estimate
from spry.estimators.lean_jvp import lean_forward_ad
from spry.seeds import derive_seed, generator

ExampleLossFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
"""Maps parameter values to the batch's per-example losses, shape (B,)."""


class ExampleTangentError(ValueError):
    """A perturbed tensor is not the weight or bias of a linear layer."""


def example_tangent(seed: int, name: str, batch_size: int, shape, dtype, device
                    ) -> torch.Tensor:
    """The (B, *shape) per-example tangents of one tensor: N(0, I), from (seed, name)."""
    g = generator(derive_seed(seed, "example-tangent", name), device)
    return torch.randn((batch_size, *shape), generator=g, dtype=dtype, device=device)


class _ExampleTangents(TorchFunctionMode):
    """Adds each example's weight tangent to the tangent of the linear layers' outputs."""

    def __init__(self, params: Mapping[str, torch.Tensor], seed: int):
        super().__init__()
        self.names = {id(t): n for n, t in params.items()}
        self.params, self.seed = params, seed
        self.tangents: dict[str, torch.Tensor] = {}

    def tangent(self, name: str, batch_size: int) -> torch.Tensor:
        if name not in self.tangents:
            p = self.params[name]
            self.tangents[name] = example_tangent(self.seed, name, batch_size, p.shape, p.dtype,
                                                  p.device)
        return self.tangents[name]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is not F.linear:
            return out
        x, weight, *rest = args
        bias = rest[0] if rest else kwargs.get("bias")
        w_name, b_name = self.names.get(id(weight)), self.names.get(id(bias))
        if w_name is None and b_name is None:
            return out
        x = fwAD.unpack_dual(x).primal
        batch = x.shape[0]
        extra = 0
        if w_name is not None:  # x_i V_iᵀ for each example i
            v = self.tangent(w_name, batch)
            extra = torch.einsum("b...i,boi->b...o", x, v)
        if b_name is not None:
            v = self.tangent(b_name, batch)
            extra = extra + v.view(batch, *([1] * (x.dim() - 2)), v.shape[-1])
        primal, tangent = fwAD.unpack_dual(out)
        return fwAD.make_dual(primal, extra if tangent is None else tangent + extra)


def example_forward_gradient(loss_fn: ExampleLossFn, params: Mapping[str, torch.Tensor],
                             tangent_seeds: Sequence[int]) -> Estimate:
    """Unbiased ∇L from K forward passes, each with B per-example tangents.

    Costs K forward passes with dual activations from the first perturbed layer on, no
    backward; memory ≈ one forward plus its tangents and B copies of `params`' shapes.
    `scalars` lists the K·B directional derivatives d_{k,i}, k-major. With no `params`
    it runs one plain forward (the caller may still read what `loss_fn` captured).
    """
    if len(tangent_seeds) < 1:
        raise ValueError("example_forward_gradient needs at least one tangent seed (K >= 1)")
    primals = {n: params[n].detach() for n in sorted(params)}
    if not primals:
        with torch.no_grad():
            return Estimate(loss=float(loss_fn(primals).mean()), grads={})
    k = len(tangent_seeds)
    grads = {n: torch.zeros_like(t) for n, t in primals.items()}
    scalars: list[float] = []
    loss_sum = 0.0
    for seed in tangent_seeds:
        mode = _ExampleTangents(primals, seed)
        with torch.no_grad(), fwAD.dual_level(), lean_forward_ad(), mode:
            losses = loss_fn(primals)
            primal, d = fwAD.unpack_dual(losses)
        unused = sorted(set(primals) - set(mode.tangents))
        if unused:
            raise ExampleTangentError(
                f"per-example tangents: {unused} are not the weight or bias of a linear layer "
                "reached by the forward pass; set tangent_sharing=batch")
        if d is None:
            d = torch.zeros_like(primal)
        batch = primal.shape[0]
        for n, v in mode.tangents.items():
            grads[n].add_(torch.tensordot(d.to(v.dtype), v, dims=1), alpha=1.0 / (batch * k))
        scalars += [float(x) for x in d]
        loss_sum += float(primal.mean())
    return Estimate(loss=loss_sum / k, grads=grads, scalars=scalars)
