"""Central finite differences along K Gaussian directions: the BAFFLE baseline
(Feng et al. 2023, "Does Federated Learning Really Need Backpropagation?").

BAFFLE perturbs with δ ~ N(0, σ²I) and estimates ∇L ≈ E[δ ΔL] / σ². Written with
δ = σv, v ~ N(0, I), the central version is

    g = 1/K Σ_k (L(w + σ v_k) − L(w − σ v_k)) / (2σ) · v_k,

whose expectation is E[v vᵀ] ∇L + O(σ²) = ∇L + O(σ²). The scale matters: dividing ΔL by σ
instead of 2σ (or δ by σ² instead of σ) gives 2× or 1/σ× the gradient, which an adaptive
server optimizer partly hides and a plain FedAvg does not. The test on a quadratic checks
the scale, not just the direction.
"""

from __future__ import annotations

from typing import Sequence

import torch

from spry.estimators.base import Estimate, LossFn, Params, draw_tangents, replay_randomness


def central_difference(loss_fn: LossFn, primals: Params, v: Params, epsilon: float
                       ) -> tuple[float, float]:
    """(d, loss): the slope d = (L(w+εv) − L(w−εv)) / 2ε and the midpoint loss
    (L(w+εv) + L(w−εv)) / 2, both evaluations under the same randomness (dropout masks),
    `primals` untouched."""
    rewind = replay_randomness(next(iter(primals.values())).device)
    loss_plus = float(loss_fn({n: primals[n] + epsilon * v[n] for n in primals}))
    rewind()
    loss_minus = float(loss_fn({n: primals[n] - epsilon * v[n] for n in primals}))
    return (loss_plus - loss_minus) / (2 * epsilon), (loss_plus + loss_minus) / 2


def finite_difference_gradient(loss_fn: LossFn, params: Params, tangent_seeds: Sequence[int],
                               epsilon: float = 1e-3) -> Estimate:
    """Unbiased (up to O(σ²); exact on a quadratic) estimate of ∇L from K = len(tangent_seeds)
    central differences with step σ = `epsilon`.

    Functional: the perturbed points w ± σv are new tensors passed to `loss_fn`, so
    `params` are never modified. Costs 2K forward passes, no jvp, no backward; memory ≈ one
    inference forward plus v and one perturbed copy of `params` (small for PEFT weights).
    The scalars are the directional-derivative estimates d_k = (L+ − L−) / 2σ, the same
    tangents as `draw_tangents(params, seed)`, so `combine(seeds, scalars)` rebuilds g.
    """
    if len(tangent_seeds) < 1:
        raise ValueError("finite_difference_gradient needs at least one seed (K >= 1)")
    if epsilon <= 0:
        raise ValueError(f"finite_difference_gradient: epsilon must be > 0, got {epsilon}")
    names = sorted(params)
    primals = {n: params[n].detach() for n in names}
    grads = {n: torch.zeros_like(primals[n]) for n in names}
    scalars: list[float] = []
    loss_sum = 0.0
    k = len(tangent_seeds)
    with torch.no_grad():
        for seed in tangent_seeds:
            v = draw_tangents(primals, seed)
            d, loss = central_difference(loss_fn, primals, v, epsilon)
            scalars.append(d)
            loss_sum += loss
            for n in names:
                grads[n].add_(v[n], alpha=d / k)
            del v
    return Estimate(loss=loss_sum / k, grads=grads, scalars=scalars)
