"""What every estimator shares: the result type and seeded tangents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from spry.seeds import generator

Params = Mapping[str, torch.Tensor]
LossFn = Callable[[Params], torch.Tensor]
"""Maps a dict of parameter values to a scalar loss (everything else held fixed)."""


@dataclass
class Estimate:
    loss: float
    grads: dict[str, torch.Tensor]
    scalars: list[float] = field(default_factory=list)
    """The per-perturbation scalars (directional derivatives d_k); with their seeds they
    are enough to rebuild `grads` (per-iteration communication)."""


def in_chunks(estimate: Callable[[Sequence[int]], Estimate], tangent_seeds: Sequence[int],
              chunk: int | None) -> Estimate:
    """The estimate over all K seeds, `chunk` seeds per call (None: one call).

    Each call's estimate is the mean over its seeds, so the calls are averaged weighted by
    their sizes; scalars keep the seeds' order. Chunks trade time for memory: a call holds
    its seeds' tangent activations at once and repeats the primal pass."""
    if chunk is None or chunk >= len(tangent_seeds):
        return estimate(tangent_seeds)
    k = len(tangent_seeds)
    parts = [estimate(tangent_seeds[i:i + chunk]) for i in range(0, k, chunk)]
    sizes = [len(tangent_seeds[i:i + chunk]) for i in range(0, k, chunk)]
    grads = {name: sum(p.grads[name] * (m / k) for p, m in zip(parts, sizes))
             for name in parts[0].grads}
    return Estimate(loss=sum(p.loss * m for p, m in zip(parts, sizes)) / k, grads=grads,
                    scalars=[x for p in parts for x in p.scalars])


def draw_tangents(params: Params, seed: int) -> dict[str, torch.Tensor]:
    """v ~ N(0, I) for each tensor, in sorted-name order from one Generator.

    Sorted order makes the draw depend only on the names and shapes, so a server holding
    the same names regenerates the same v from the seed.
    """
    first = next(iter(params.values()))
    g = generator(seed, first.device)
    return {
        name: torch.randn(params[name].shape, generator=g, dtype=params[name].dtype,
                          device=params[name].device)
        for name in sorted(params)
    }


def combine(tangent_seeds: Sequence[int], scalars: Sequence[float], like: Params
            ) -> dict[str, torch.Tensor]:
    """g = mean_k d_k v_k, regenerating each v_k from its seed: nothing stored."""
    grads = {name: torch.zeros_like(t) for name, t in like.items()}
    for seed, d in zip(tangent_seeds, scalars):
        for name, v in draw_tangents(like, seed).items():
            grads[name].add_(v, alpha=d / len(scalars))
    return grads


def replay_randomness(device: torch.device) -> Callable[[], None]:
    """Snapshot the global RNG; the returned function rewinds it to the snapshot.

    Finite differences evaluate the loss at w+εv and w−εv: both must see the same dropout
    masks (drawn by transformers from the global RNG), or the difference measures the
    masks, not the slope: O(1) / 2ε. The snapshot is replayed, never seeded.
    """
    device = torch.device(device)
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def rewind() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    return rewind
