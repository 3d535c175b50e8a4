"""Forward gradients (Baydin et al. 2022), the estimator Spry's clients use."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.func import jvp

from spry.estimators.base import Estimate, LossFn, Params, draw_tangents


def forward_gradient(loss_fn: LossFn, params: Params, tangent_seeds: Sequence[int]) -> Estimate:
    """Unbiased estimate of ∇L from K = len(tangent_seeds) jvps.

    For each k: v_k ~ N(0, I) from its seed; one jvp gives the loss and the directional
    derivative d_k = ∇L·v_k; the estimate is mean_k d_k v_k (E[v vᵀ] = I). Costs K
    forward passes, no backward; memory ≈ one forward plus the tangents of `params`.
    Only `params` get tangents: the rest of the model stays a plain (non-dual) tensor, so
    forward-mode work starts at the first perturbed layer.
    """
    if len(tangent_seeds) < 1:
        raise ValueError("forward_gradient needs at least one tangent seed (K >= 1)")
    names = sorted(params)
    primals = {n: params[n].detach() for n in names}
    grads = {n: torch.zeros_like(primals[n]) for n in names}
    scalars: list[float] = []
    loss_sum = 0.0
    # no_grad: with trainable tensors requiring grad, autograd would also record a
    # backward graph during the jvp and the step would need more memory than backprop.
    with torch.no_grad():
        for seed in tangent_seeds:
            tangents = draw_tangents(primals, seed)
            loss, d = jvp(loss_fn, (primals,), (tangents,))
            d = float(d)
            scalars.append(d)
            loss_sum += float(loss)
            for n in names:
                grads[n].add_(tangents[n], alpha=d / len(tangent_seeds))
            del tangents
    return Estimate(loss=loss_sum / len(tangent_seeds), grads=grads, scalars=scalars)
