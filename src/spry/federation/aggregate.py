"""Put the clients' pieces back together, one unit at a time."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch


def aggregate_units(
    current: Mapping[str, torch.Tensor],
    updates: Sequence[tuple[Mapping[str, torch.Tensor], int]],
) -> dict[str, torch.Tensor]:
    """Example-weighted mean per tensor over the clients that returned it.

    `updates` holds (tensors a client trained, its example count). A tensor nobody
    returned keeps its current value: a unit whose client failed is left unchanged
    rather than pulled towards zero.
    """
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    for tensors, num_examples in updates:
        if num_examples <= 0:
            continue
        for name, value in tensors.items():
            if name not in current:
                raise KeyError(f"update carries {name!r}, which is not a trainable tensor")
            acc = sums.setdefault(name, torch.zeros_like(current[name], dtype=torch.float64))
            acc.add_(value.to(torch.float64), alpha=float(num_examples))
            weights[name] = weights.get(name, 0.0) + num_examples
    out = {}
    for name, value in current.items():
        if name in sums:
            out[name] = (sums[name] / weights[name]).to(value.dtype)
        else:
            out[name] = value.clone()
    return out
