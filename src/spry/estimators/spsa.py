"""MeZO's SPSA estimate (Malladi et al. 2023, "Fine-Tuning Language Models with Just Forward
Passes"), the estimator of the FedMeZO baseline.

The seed trick: z is never stored. It is regenerated from its seed, one tensor at a time,
each time the weights are moved, so the only extra memory is one tensor's z (and the
gradient the client optimizer needs anyway).
"""

from __future__ import annotations

from typing import Sequence

import torch

from spry.estimators.base import Estimate, LossFn, Params, replay_randomness
from spry.seeds import generator


@torch.no_grad()
def _move(params: Params, seed: int, scale: float,
          grads: dict[str, torch.Tensor] | None = None, grad_scale: float = 0.0) -> None:
    """w += scale · z in place, z ~ N(0, I) regenerated from `seed`; optionally also
    grads += grad_scale · z with the same z (saves regenerating it once more).

    Same generator, same sorted-name order as `draw_tangents`: the z used here is the
    tangent `draw_tangents(params, seed)` would give, so `combine(seeds, scalars)` rebuilds
    the estimate on a server (and tests compare against the jvp with the same seed).
    """
    g = generator(seed, next(iter(params.values())).device)
    for name in sorted(params):
        p = params[name]
        z = torch.randn(p.shape, generator=g, dtype=p.dtype, device=p.device)
        p.add_(z, alpha=scale)
        if grads is not None:
            grads[name].add_(z, alpha=grad_scale)
        del z


def spsa_gradient(loss_fn: LossFn, params: Params, tangent_seeds: Sequence[int],
                  epsilon: float = 1e-3) -> Estimate:
    """(L(w+εz) − L(w−εz)) / 2ε · z, averaged over K = len(tangent_seeds) perturbations.

    `params` are the live tensors (the model's own parameters): they are perturbed IN
    PLACE, w → w+εz → w−εz → w, as MeZO does, so no copy of the weights is ever held.
    The price is floating point: w + εz − 2εz + εz restores w only to within a few ulps of
    max(|w|, ε|z|), not bit for bit (a weight much smaller than εz loses its low bits in
    w + εz); MeZO's reference has the same property. A bit-exact restore would need the
    copy this estimator exists to avoid. The weights are put back even if `loss_fn` raises.

    Unbiased for ∇L up to O(ε²) (exact on a quadratic). Costs 2K forward passes, no jvp,
    no backward; memory ≈ one inference forward plus one tensor's z. The scalars are the
    projected gradients d_k = (L+ − L−) / 2ε; the loss is the mean of L+ and L−.
    """
    if len(tangent_seeds) < 1:
        raise ValueError("spsa_gradient needs at least one perturbation seed (K >= 1)")
    if epsilon <= 0:
        raise ValueError(f"spsa_gradient: epsilon must be > 0, got {epsilon}")
    names = sorted(params)
    grads = {n: torch.zeros(params[n].shape, dtype=params[n].dtype, device=params[n].device)
             for n in names}
    scalars: list[float] = []
    loss_sum = 0.0
    k = len(tangent_seeds)
    with torch.no_grad():
        for seed in tangent_seeds:
            offset = 0.0  # where the weights stand, in units of z
            # Both evaluations see the same dropout masks, or L+ − L− measures the masks.
            rewind = replay_randomness(params[names[0]].device)
            try:
                _move(params, seed, epsilon)
                offset = epsilon
                loss_plus = float(loss_fn(params))
                rewind()
                _move(params, seed, -2 * epsilon)
                offset = -epsilon
                loss_minus = float(loss_fn(params))
            except BaseException:
                _move(params, seed, -offset)
                raise
            d = (loss_plus - loss_minus) / (2 * epsilon)
            _move(params, seed, epsilon, grads=grads, grad_scale=d / k)  # restore + accumulate
            scalars.append(d)
            loss_sum += (loss_plus + loss_minus) / 2
    return Estimate(loss=loss_sum / k, grads=grads, scalars=scalars)
