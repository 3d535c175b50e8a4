"""Check what a client sends before the server uses it (pure; torch only).

The server trusts nothing a client returns. An update is rejected — logged, counted in
metrics.jsonl, never averaged in — when it:
- carries a tensor the server did not assign to that client (or comes from a client it
  did not sample this round);
- has a tensor of the wrong shape or dtype, or a non-finite value;
- claims a negative or non-integer example count;
- moves the weights further than `max_update_norm` (the L2 norm of returned − sent,
  over all the client's tensors).
Per-iteration uploads (K directional derivatives) are rejected when they come from a
client not sampled this round, for another step, with a number of scalars other than the
K seeds the server issued, with non-finite values, or with a norm above the bound.

Each check returns the reason as a string (None: accepted), so the caller decides how to
log and count it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

import torch


@dataclass(frozen=True)
class Rejection:
    client_id: int
    reason: str

    def as_row(self) -> dict:
        return {"client": self.client_id, "reason": self.reason}


def check_update(client_id: int, weights: Mapping[str, object], num_examples: object,
                 current: Mapping[str, torch.Tensor], assigned: Collection[str] | None,
                 max_norm: float | None = None) -> str | None:
    """Why the update of `client_id` must be rejected, or None.

    `current`: the server's weights, i.e. what it sent (they do not change within a
    round). `assigned`: the tensor names the server dealt this client; None skips that
    check (only the names of trainable tensors are then enforced).
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        return f"example count {num_examples!r} is not a non-negative integer"
    allowed = current if assigned is None else assigned
    squared = 0.0
    for name, value in weights.items():
        if name not in allowed:
            what = "not a trainable tensor" if name not in current else "not assigned to it"
            return f"tensor {name!r} is {what}"
        if not isinstance(value, torch.Tensor):
            return f"tensor {name!r} is a {type(value).__name__}, not a tensor"
        ref = current[name]
        if value.shape != ref.shape:
            return f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if value.dtype != ref.dtype:
            return f"tensor {name!r} has dtype {value.dtype}, expected {ref.dtype}"
        if not bool(torch.isfinite(value).all()):
            return f"tensor {name!r} has non-finite values"
        squared += float((value.double() - ref.double()).pow(2).sum())
    norm = math.sqrt(squared)
    if max_norm is not None and not norm <= max_norm:
        return f"update norm {norm:.4g} is above max_update_norm={max_norm:g}"
    return None


def check_upload(client_id: int, step: int, scalars: Sequence[object], num_examples: object,
                 loss: object, sampled: Collection[int], expected_step: int, tangents: int,
                 max_norm: float | None = None) -> str | None:
    """Why a per-iteration upload (K directional derivatives of one step) must be rejected.

    The server issued seeds for (round, client, step, k) with the round's sampled clients,
    the current step and k < K; scalars for any other seed cannot be rebuilt into the
    gradient the client measured.
    """
    if client_id not in sampled:
        return f"client {client_id} was not sampled this round"
    if step != expected_step:
        return f"scalars for step {step}, but the server issued seeds for step {expected_step}"
    if len(scalars) != tangents:
        return f"{len(scalars)} scalars, but the server issued {tangents} tangent seed(s)"
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
        return f"example count {num_examples!r} is not a positive integer"
    values = []
    for x in [*scalars, loss]:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return f"non-finite or non-numeric value {x!r}"
        values.append(float(x))
    norm = math.sqrt(sum(x * x for x in values[:-1]))
    if max_norm is not None and norm > max_norm:
        return f"scalar norm {norm:.4g} is above max_update_norm={max_norm:g}"
    return None


def screen(items: Sequence, client_of, reason_of) -> tuple[list, list[tuple[object, str]]]:
    """The one accept/reject loop of both communication modes: (accepted items, [(item,
    reason)] rejected), in arrival order. `reason_of(item, duplicate)` says why an item must
    be rejected (None: accept it); `duplicate` is True for a client's second item in this
    exchange, which each caller refuses in its own words."""
    accepted, rejected, seen = [], [], set()
    for item in items:
        client = client_of(item)
        reason = reason_of(item, client in seen)
        seen.add(client)
        if reason is None:
            accepted.append(item)
        else:
            rejected.append((item, reason))
    return accepted, rejected
