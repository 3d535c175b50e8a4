"""FwdLLM's estimator (Xu et al. 2024, "FwdLLM: Efficient Federated Finetuning of Large
Language Models with Perturbed Inferences"), the FwdLLM baseline.

Two ideas on top of finite-difference forward gradients:
1. Perturbation selection. Candidates v ~ N(0, I) are scored by their cosine similarity
   to the previous round's global update, and the best-aligned ones are used. We rank
   the WHOLE candidate pool at once and keep its top entries (the published code scores
   candidates in chunks and ends up keeping only the last chunk's choice). The score is
   |cos|: the estimate d·v = (∇L·v) v is the same for v and −v, so only the axis matters.
   Scores are computed one candidate at a time and only (score, seed) is kept; the chosen
   v are regenerated from their seeds when used.
2. Variance control. Perturbations are added in ranked order until the estimated variance
   of the mean estimate is small relative to it, or a cap is reached (see
   `fwdllm_gradient`). The published system adapts the count on the server from the
   variance across clients; here each client controls it per step, which needs no extra
   round trips and works with local epochs.

Selection biases E[v vᵀ] towards the previous update's axis, so with a prior the estimate
is no longer unbiased: its direction tracks ∇L (tested), its scale along the prior is
inflated. Without a prior (first round, or an all-zero update) it is BAFFLE's unbiased
central-difference estimate.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from spry.estimators.base import Estimate, LossFn, Params, draw_tangents
from spry.estimators.finite_difference import central_difference
from spry.seeds import derive_seed


def candidate_seeds(tangent_seeds: Sequence[int], count: int) -> list[int]:
    """`count` candidate seeds: the given seeds first, then seeds derived from them."""
    k = len(tangent_seeds)
    return [tangent_seeds[i] if i < k else derive_seed(tangent_seeds[i % k], "fwdllm", i // k)
            for i in range(count)]


def rank_perturbations(params: Params, previous_update: Mapping[str, torch.Tensor] | None,
                       seeds: Sequence[int], keep: int) -> list[int]:
    """The `keep` seeds whose v has the largest |cos(v, previous_update)|, best first, chosen
    from ALL of `seeds`. With no usable prior, the first `keep` seeds in order."""
    prior = {n: previous_update[n].to(params[n].dtype) for n in params
             if previous_update is not None and n in previous_update}
    prior_norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in prior.values()))
    if prior_norm == 0.0 or not math.isfinite(prior_norm):
        return list(seeds[:keep])
    scores = []
    for index, seed in enumerate(seeds):
        v = draw_tangents(params, seed)
        dot = sum(float((v[n].double() * t.double()).sum()) for n, t in prior.items())
        norm = math.sqrt(sum(float((t.double() ** 2).sum()) for t in v.values()))
        scores.append((-abs(dot) / (norm * prior_norm), index, seed))
        del v
    scores.sort()  # best first; ties keep pool order
    return [seed for _, _, seed in scores[:keep]]


def fwdllm_gradient(loss_fn: LossFn, params: Params, tangent_seeds: Sequence[int], *,
                    previous_update: Mapping[str, torch.Tensor] | None = None,
                    epsilon: float = 1e-3, candidates: int = 10, max_perturbations: int = 10,
                    variance_threshold: float = 0.5) -> Estimate:
    """Finite-difference forward gradient over cosine-selected, variance-controlled
    perturbations.

    - Pool: `max_perturbations × candidates` candidate seeds (`candidate_seeds`), ranked by
      |cos| to `previous_update` (`rank_perturbations`); the top `max_perturbations` are
      used best first. No prior: the pool is not ranked and the seeds are used in order, so
      the first K = len(tangent_seeds) are exactly the given seeds.
    - Each perturbation gives d_i = (L(w+εv_i) − L(w−εv_i)) / 2ε and x_i = d_i v_i; the
      estimate is the mean x̄ of the n used so far.
    - Variance control: after at least max(K, 2) perturbations, stop as soon as the
      estimated total variance of the mean, V = Σ_i ‖x_i − x̄‖² / ((n−1) n), is at most
      `variance_threshold · ‖x̄‖²`; otherwise go on up to `max_perturbations`. V needs only
      the running scalar Σ‖x_i‖² (= Σ d_i²‖v_i‖²), no second gradient-sized buffer.
      Since E‖x̄‖² = ‖∇L‖² + V, a threshold τ stops when V ≲ τ/(1−τ) · ‖∇L‖². For
      forward gradients V ≈ dim·‖∇L‖²/n, so on models with many trainable weights the cap
      is what binds; the threshold matters for small unit sets or a well-aligned prior.

    Costs 2n forward passes plus scoring the pool (one Gaussian draw and a dot product per
    candidate, no forward pass); memory ≈ one inference forward, v, one perturbed copy of
    `params` and the mean. The scalars are the d_i of the perturbations used, in order
    (their count is n); they pair with the ranked seeds, not with `tangent_seeds`.
    """
    k = len(tangent_seeds)
    if k < 1:
        raise ValueError("fwdllm_gradient needs at least one seed (K >= 1)")
    if epsilon <= 0 or candidates < 1 or variance_threshold <= 0:
        raise ValueError("fwdllm_gradient: epsilon, candidates and variance_threshold must "
                         f"be > 0, got {epsilon}, {candidates}, {variance_threshold}")
    if max_perturbations < k:
        raise ValueError(f"fwdllm_gradient: max_perturbations ({max_perturbations}) is below "
                         f"the K = {k} perturbations asked for")
    names = sorted(params)
    primals = {n: params[n].detach() for n in names}
    pool = candidate_seeds(tangent_seeds, max_perturbations * candidates)
    order = rank_perturbations(primals, previous_update, pool, max_perturbations)

    mean = {n: torch.zeros_like(primals[n]) for n in names}
    scalars: list[float] = []
    loss_sum, sum_sq = 0.0, 0.0
    with torch.no_grad():
        for seed in order:
            v = draw_tangents(primals, seed)
            d, loss = central_difference(loss_fn, primals, v, epsilon)
            scalars.append(d)
            loss_sum += loss
            n_used = len(scalars)
            v_sq = sum(float((v[n].double() ** 2).sum()) for n in names)
            sum_sq += d * d * v_sq
            for n in names:  # running mean: x̄ += (x − x̄) / n
                mean[n].add_(d * v[n] - mean[n], alpha=1.0 / n_used)
            del v
            if n_used >= max(k, 2) and _small_variance(mean, sum_sq, n_used, variance_threshold):
                break
    return Estimate(loss=loss_sum / len(scalars), grads=mean, scalars=scalars)


def _small_variance(mean: dict[str, torch.Tensor], sum_sq: float, n: int,
                    threshold: float) -> bool:
    mean_sq = sum(float((t.double() ** 2).sum()) for t in mean.values())
    variance_of_mean = max(sum_sq - n * mean_sq, 0.0) / ((n - 1) * n)
    return variance_of_mean <= threshold * mean_sq
