"""Server optimizers on the pseudo-gradient (Reddi et al. 2021, "Adaptive Federated Optimization").

One code path for all (as FLSim does): the round's pseudo-gradient is Δ = aggregate − x,
and the server applies an update rule to x. FedAvg with lr 1 is plain replacement.
FedAvgM (Hsu et al. 2019, "Measuring the effects of non-identical data distribution for
federated visual classification") steps along a moving average of the rounds' Δ: what
rounds agree on accumulates and their noise averages out, the thing a split round's
update lacks (each unit is one client's estimate: docs/learning.md).
Only tensors someone trained this round are stepped; the others keep value and state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch


@dataclass
class ServerOptimizer:
    """FedAvg / FedAvgM / FedAdam / FedYogi, Algorithm 2 of Reddi et al. (no bias correction).

    m ← β1 m + (1−β1) Δ
    x ← x + η m                           (FedAvgM: Hsu et al.'s v ← βv + Δ with η(1−β);
                                           in steady state a step of η Δ, as FedAvg's)
    v ← β2 v + (1−β2) Δ²                  (FedAdam)
    v ← v − (1−β2) Δ² sign(v − Δ²)        (FedYogi)
    x ← x + η m / (√v + τ)
    with v initialised to τ² (the paper's v_{−1} ≥ τ²).
    """

    rule: str = "fedyogi"
    lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: dict[str, torch.Tensor] = field(default_factory=dict)
    v: dict[str, torch.Tensor] = field(default_factory=dict)

    def step(self, current: Mapping[str, torch.Tensor], aggregated: Mapping[str, torch.Tensor],
             trained: set[str]) -> dict[str, torch.Tensor]:
        out = {name: value.clone() for name, value in current.items()}
        for name in trained:
            delta = aggregated[name] - current[name]
            out[name] = current[name] + self._update(name, delta)
        return out

    def _update(self, name: str, delta: torch.Tensor) -> torch.Tensor:
        if self.rule == "fedavg":
            return self.lr * delta
        m = self.m.setdefault(name, torch.zeros_like(delta))
        m.mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
        if self.rule == "fedavgm":
            return self.lr * m
        v = self.v.setdefault(name, torch.full_like(delta, self.tau**2))
        d2 = delta * delta
        if self.rule == "fedadam":
            v.mul_(self.beta2).add_(d2, alpha=1 - self.beta2)
        elif self.rule == "fedyogi":
            v.sub_((1 - self.beta2) * d2 * torch.sign(v - d2))
        else:
            raise ValueError(f"unknown server optimizer {self.rule!r}")
        return self.lr * m / (v.sqrt() + self.tau)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.m = {k: v.clone() for k, v in state["m"].items()}
        self.v = {k: v.clone() for k, v in state["v"].items()}


def make_server_optimizer(cfg) -> ServerOptimizer:
    # FedAvg replaces the global weights with the average: SGD with lr 1 on −Δ.
    lr = 1.0 if cfg.server_optimizer == "fedavg" else cfg.server_lr
    return ServerOptimizer(rule=cfg.server_optimizer, lr=lr, beta1=cfg.server_beta1,
                           beta2=cfg.server_beta2, tau=cfg.server_tau)
