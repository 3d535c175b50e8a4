"""A guided tangent: the estimate's component along a known direction made exact.

Given any unbiased estimate ĝ of ∇L (the random forward gradient) and a unit direction u
chosen before the batch was seen (the client's units' last global update, Δ/‖Δ‖), one more
jvp along u gives d_u = ∇L·u exactly. The guided estimate

    g̃ = ĝ − (ĝ·u) u + d_u u

keeps ĝ off u and takes the exact value along u, so E[g̃] = ∇L − (∇L·u)u + (∇L·u)u = ∇L:
still unbiased (u does not depend on the batch's randomness), and its variance along u is
gone. It costs one more forward pass with tangents. Where Δ is informative (updates that
keep their direction across rounds) the exact component carries most of the step's
signal; where Δ is noise, u is one more random direction.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch.func import jvp

from spry.estimators.base import Estimate, LossFn
from spry.estimators.lean_jvp import lean_forward_ad


def guided_estimate(loss_fn: LossFn, params: Mapping[str, torch.Tensor], estimate: Estimate,
                    direction: Mapping[str, torch.Tensor] | None,
                    tangent_dtype: str | None = None) -> Estimate:
    """`estimate` with its component along `direction` (restricted to `params`, then
    normalised) replaced by the exact directional derivative; unchanged where the
    direction is missing or zero. The extra derivative is appended to `scalars`."""
    names = sorted(n for n in params if direction is not None and n in direction
                   and n in estimate.grads)
    norm = math.sqrt(sum(float(direction[n].double().pow(2).sum()) for n in names))
    if not names or norm == 0.0 or not math.isfinite(norm):
        return estimate
    primals = {n: params[n].detach() for n in sorted(params)}
    u = {n: (direction[n].to(primals[n].dtype) / norm) if n in names
         else torch.zeros_like(primals[n]) for n in primals}
    with torch.no_grad(), lean_forward_ad(tangent_dtype):
        _, d_u = jvp(loss_fn, (primals,), (u,))
    d_u = float(d_u)
    along = sum(float((estimate.grads[n] * u[n]).sum()) for n in names)
    grads = dict(estimate.grads)
    for n in names:
        grads[n] = estimate.grads[n] + (d_u - along) * u[n]
    return Estimate(loss=estimate.loss, grads=grads, scalars=[*estimate.scalars, d_u])
