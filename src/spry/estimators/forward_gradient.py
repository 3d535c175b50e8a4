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
                     chunk: int | None = None, capture: dict | None = None,
                     tangent_dtype: str | None = None) -> Estimate:
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

    `capture`: a dict that `loss_fn` fills on its first call with values of its primal
    pass (the pooled features and logits of spry.tasks.classifier.classification_loss).
    `torch.func.jvp` would hide them inside its transform, so they come out through the
    jvp's aux: the exact head gradient then costs no extra forward pass.
    `tangent_dtype`: the dtype of the tangent matmuls (`lean_forward_ad`); None: exact.
    """
    if len(tangent_seeds) < 1:
        raise ValueError("forward_gradient needs at least one tangent seed (K >= 1)")
    primals = {n: params[n].detach() for n in sorted(params)}
    if capture is None:
        return in_chunks(lambda seeds: _forward_gradient(loss_fn, primals, seeds,
                                                         tangent_dtype=tangent_dtype),
                         tangent_seeds, chunk)
    first: dict = {}

    def with_aux(values):
        capture.clear()  # nothing left from a pass that failed (the vmap fallback)
        loss = loss_fn(values)
        aux = dict(capture)
        capture.clear()
        return loss, aux

    def estimate(seeds):
        est, aux = _forward_gradient(with_aux, primals, seeds, has_aux=True,
                                     tangent_dtype=tangent_dtype)
        if not first:  # the first primal pass's values, as loss_fn's own capture keeps
            first.update(aux)
        return est

    est = in_chunks(estimate, tangent_seeds, chunk)
    capture.update(first)
    return est


def _forward_gradient(loss_fn: LossFn, primals: Params, tangent_seeds: Sequence[int],
                      has_aux: bool = False, tangent_dtype: str | None = None):
    # no_grad: with trainable tensors requiring grad, autograd would also record a
    # backward graph during the jvp and the step would need more memory than backprop.
    with torch.no_grad(), lean_forward_ad(tangent_dtype):
        if len(tangent_seeds) > 1:
            try:
                return batched_forward_gradient(loss_fn, primals, tangent_seeds, has_aux)
            except (RuntimeError, NotImplementedError) as exc:
                log.warning("forward_gradient: vmap over %d tangents failed (%s: %s); "
                            "running them one at a time", len(tangent_seeds),
                            type(exc).__name__, str(exc).splitlines()[0][:200])
        return sequential_forward_gradient(loss_fn, primals, tangent_seeds, has_aux)


def batched_forward_gradient(loss_fn: LossFn, primals: Params, tangent_seeds: Sequence[int],
                             has_aux: bool = False):
    """All K tangents in one vmapped jvp: one primal pass, the tangents batched.
    `has_aux`: loss_fn returns (loss, aux); the result is then (Estimate, aux)."""
    k = len(tangent_seeds)
    drawn = [draw_tangents(primals, seed) for seed in tangent_seeds]
    stacked = {n: torch.stack([v[n] for v in drawn]) for n in primals}
    del drawn

    def one(tangent):
        return jvp(loss_fn, (primals,), (tangent,), has_aux=has_aux)

    loss, d, *aux = vmap(one, randomness="same")(stacked)
    grads = {n: torch.tensordot(d.to(v.dtype), v, dims=1).div_(k) for n, v in stacked.items()}
    est = Estimate(loss=float(loss[0]), grads=grads, scalars=[float(x) for x in d])
    # vmap stacks the aux K times (it comes from the shared primal pass): keep one.
    return (est, {name: value[0] for name, value in aux[0].items()}) if has_aux else est


def sequential_forward_gradient(loss_fn: LossFn, primals: Params,
                                tangent_seeds: Sequence[int], has_aux: bool = False):
    """One jvp per tangent; only one tangent (and its activations) alive at a time.
    `has_aux`: loss_fn returns (loss, aux); the result is then (Estimate, the first aux)."""
    k = len(tangent_seeds)
    grads = {n: torch.zeros_like(t) for n, t in primals.items()}
    scalars: list[float] = []
    loss_sum = 0.0
    first_aux = None
    for seed in tangent_seeds:
        tangents = draw_tangents(primals, seed)
        loss, d, *aux = jvp(loss_fn, (primals,), (tangents,), has_aux=has_aux)
        if has_aux and first_aux is None:
            first_aux = aux[0]
        d = float(d)
        scalars.append(d)
        loss_sum += float(loss)
        for n, v in tangents.items():
            grads[n].add_(v, alpha=d / k)
        del tangents
    est = Estimate(loss=loss_sum / k, grads=grads, scalars=scalars)
    return (est, first_aux) if has_aux else est
