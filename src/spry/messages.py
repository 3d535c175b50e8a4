"""What travels between server and clients, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainInstruction:
    server_round: int
    client_id: int
    round_seed: int
    units: list[str]
    unit_params: list[str]
    """Parameter names the client trains and returns."""
    weights: dict[str, torch.Tensor]
    """Current global values the client needs: its units, and the other trainable tensors
    its forward pass reads (frozen on this client)."""


@dataclass
class EvalInstruction:
    server_round: int
    client_id: int
    round_seed: int
    unit_params: list[str]
    weights: dict[str, torch.Tensor]
    personalization_epochs: int


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
