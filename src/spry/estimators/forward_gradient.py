"""Forward gradients (Baydin et al. 2022), the estimator Spry's clients use."""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch.func import jvp, vmap

from spry.estimators.base import Estimate, LossFn, Params, draw_tangents, in_chunks
from spry.estimators.lean_jvp import lean_forward_ad

log = logging.getLogger(__name__)


def forward_gradient(loss_fn: LossFn, params: Params, tangent_seeds: Sequence[int],
                     chunk: int | None = None) -> Estimate:
    """Unbiased estimate of ∇L from K = len(tangent_seeds) directional derivatives.

    For each k: v_k ~ N(0, I) from its seed; the jvp gives the loss and the directional
    derivative d_k = ∇L·v_k; the estimate is mean_k d_k v_k (E[v vᵀ] = I). No backward
    pass. Only `params` get tangents: the rest of the model stays a plain (non-dual) tensor,
    so forward-mode work starts at the first perturbed layer, and frozen linear layers cost
    one extra matmul, not two (`lean_jvp`).

    K > 1: the K tangents share ONE primal pass (`torch.func.vmap` over the tangents), so
    the cost is one forward plus K tangent passes and memory is one forward plus K
    tangent activations at a time. Dropout masks are then shared by the K tangents (they
    differentiate the same sampled loss). If vmap cannot batch a model (an op without a
    batching rule, a data-dependent branch on a tangent, out of memory), the K jvps run
    one after another with the same tangents: same result, K primal passes, memory of one.
    `chunk` (tangent_chunk): at most this many tangents per primal pass (None: all K).
    """
    if len(tangent_seeds) < 1:
        raise ValueError("forward_gradient needs at least one tangent seed (K >= 1)")
    primals = {n: params[n].detach() for n in sorted(params)}
    return in_chunks(lambda seeds: _forward_gradient(loss_fn, primals, seeds), tangent_seeds,
                     chunk)


def _forward_gradient(loss_fn: LossFn, primals: Params, tangent_seeds: Sequence[int]
                      ) -> Estimate:
    # no_grad: with trainable tensors requiring grad, autograd would also record a
    # backward graph during the jvp and the step would need more memory than backprop.
    with torch.no_grad(), lean_forward_ad():
        if len(tangent_seeds) > 1:
            try:
                return batched_forward_gradient(loss_fn, primals, tangent_seeds)
            except (RuntimeError, NotImplementedError) as exc:
                log.warning("forward_gradient: vmap over %d tangents failed (%s: %s); "
                            "running them one at a time", len(tangent_seeds),
                            type(exc).__name__, str(exc).splitlines()[0][:200])
        return sequential_forward_gradient(loss_fn, primals, tangent_seeds)


def batched_forward_gradient(loss_fn: LossFn, primals: Params, tangent_seeds: Sequence[int]
                             ) -> Estimate:
    """All K tangents in one vmapped jvp: one primal pass, the tangents batched."""
    k = len(tangent_seeds)
    drawn = [draw_tangents(primals, seed) for seed in tangent_seeds]
    stacked = {n: torch.stack([v[n] for v in drawn]) for n in primals}
    del drawn

    def one(tangent):
        return jvp(loss_fn, (primals,), (tangent,))

    loss, d = vmap(one, randomness="same")(stacked)
    grads = {n: torch.tensordot(d.to(v.dtype), v, dims=1).div_(k) for n, v in stacked.items()}
    return Estimate(loss=float(loss[0]), grads=grads, scalars=[float(x) for x in d])


def sequential_forward_gradient(loss_fn: LossFn, primals: Params,
                                tangent_seeds: Sequence[int]) -> Estimate:
    """One jvp per tangent; only one tangent (and its activations) alive at a time."""
    k = len(tangent_seeds)
    grads = {n: torch.zeros_like(t) for n, t in primals.items()}
    scalars: list[float] = []
    loss_sum = 0.0
    for seed in tangent_seeds:
        tangents = draw_tangents(primals, seed)
        loss, d = jvp(loss_fn, (primals,), (tangents,))
        d = float(d)
        scalars.append(d)
        loss_sum += float(loss)
        for n, v in tangents.items():
            grads[n].add_(v, alpha=d / k)
        del tangents
    return Estimate(loss=loss_sum / k, grads=grads, scalars=scalars)
