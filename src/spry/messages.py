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
    """Current global values: the client's units, and with context=global also the other
    trainable tensors its forward pass reads (frozen on this client). With context=local
    only the units travel; the rest come from the client's own copy, the values the server
    last sent it (spry.engines.node)."""
    previous_update: dict[str, torch.Tensor] | None = None
    """method=fwdllm only: the last round's global update Δ of the client's unit params
    (its perturbations are ranked by their cosine to it); None otherwise and in round 1."""
    score_local: bool = False
    """personalization=round, in a round to be evaluated: after training, the client
    scores its test split with the model its training left (personalized accuracy)."""


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
