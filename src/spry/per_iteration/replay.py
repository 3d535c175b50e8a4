"""Per-iteration communication: scalars up, seeds down (pure; torch only).

A client uploads only its K directional derivatives d_k for a step. Anyone holding the
seeds can rebuild the gradient g = mean_k d_k v_k, so the server does, and so does every
client that keeps a `Replica`: applying the same `StepRecord`s with the same optimizer in
the same order gives bit-identical weights, so a client stays in sync by replaying the
log instead of downloading weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from spry.estimators.base import combine
from spry.seeds import tangent_seed

# What identifies a scalar upload: client id and step (int64 each), batch size (int32),
# loss (float32). The K scalars follow as float32.
UPLOAD_HEADER_BYTES = 24
# A step record adds the round and round seed (int64 each) to its uploads.
RECORD_HEADER_BYTES = 16


@dataclass(frozen=True)
class ScalarUpload:
    client_id: int
    step: int
    scalars: tuple[float, ...]
    num_examples: int
    loss: float

    @classmethod
    def of(cls, client_id: int, step: int, scalars: Sequence[float], num_examples: int,
           loss: float) -> "ScalarUpload":
        # Round to float32 here, once: what travels is what both sides replay.
        as32 = tuple(float(x) for x in np.asarray(scalars, dtype=np.float32))
        return cls(client_id, step, as32, num_examples, float(np.float32(loss)))

    @property
    def nbytes(self) -> int:
        return UPLOAD_HEADER_BYTES + 4 * len(self.scalars)


@dataclass(frozen=True)
class StepRecord:
    server_round: int
    round_seed: int
    step: int
    uploads: tuple[ScalarUpload, ...]

    @property
    def nbytes(self) -> int:
        return RECORD_HEADER_BYTES + sum(u.nbytes for u in self.uploads)

    def as_list(self) -> list:
        """Plain lists, for a checkpoint that loads with torch.load(weights_only=True)."""
        return [self.server_round, self.round_seed, self.step,
                [[u.client_id, u.step, list(u.scalars), u.num_examples, u.loss]
                 for u in self.uploads]]

    @classmethod
    def from_list(cls, saved: list) -> "StepRecord":
        server_round, round_seed, step, uploads = saved
        return cls(server_round, round_seed, step,
                   tuple(ScalarUpload(c, s, tuple(x), n, loss) for c, s, x, n, loss in uploads))


def rebuild_gradients(record: StepRecord, params_of: Mapping[int, Sequence[str]],
                      like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Regenerate each client's tangents from the seeds and average per tensor.

    Per client c: g_c = mean_k d_k v_k over its unit tensors (the same draw the client
    made: same seeds, names and shapes). Per tensor: the example-weighted mean of g_c over
    the clients that trained it this step. Tensors nobody trained get no gradient.
    """
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, int] = {}
    for up in record.uploads:
        names = params_of[up.client_id]
        seeds = [tangent_seed(record.round_seed, up.client_id, up.step, k)
                 for k in range(len(up.scalars))]
        for name, g in combine(seeds, up.scalars, {n: like[n] for n in names}).items():
            acc = sums.setdefault(name, torch.zeros_like(g))
            acc.add_(g, alpha=up.num_examples)
            weights[name] = weights.get(name, 0) + up.num_examples
    return {name: acc / weights[name] for name, acc in sums.items()}


@dataclass
class Replica:
    """Trainable weights and the per-step optimizer; the server and each client hold one."""

    weights: dict[str, torch.Tensor]
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    version: int = 0
    """How many step records have been applied."""
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.weights = {n: t.detach().clone() for n, t in self.weights.items()}
        self.optimizer = self.make_optimizer(list(self.weights.values()))

    def apply(self, record: StepRecord, params_of: Mapping[int, Sequence[str]]) -> None:
        grads = rebuild_gradients(record, params_of, self.weights)
        for name, g in grads.items():
            self.weights[name].grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1

    def state_dict(self) -> dict:
        return {"weights": self.weights, "optimizer": self.optimizer.state_dict(),
                "version": self.version}

    @classmethod
    def from_state(cls, saved: dict, make_optimizer) -> "Replica":
        replica = cls(saved["weights"], make_optimizer, version=saved["version"])
        replica.optimizer.load_state_dict(saved["optimizer"])
        return replica

    def snapshot(self) -> "Replica":
        """What a lagging client downloads instead of replaying: weights and optimizer."""
        return copy.deepcopy(self)

    @property
    def nbytes(self) -> int:
        tensors = list(self.weights.values())
        for state in self.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)
