"""What every per-epoch engine is: the one interface the round loop, the server and the
checkpoints talk to (spry.engines.local.LocalEngine, spry.flower.FlowerEngine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from spry.client import ClientEval, ClientUpdate
    from spry.messages import EvalInstruction, TrainInstruction
    from spry.tasks.linear_head import ClassStatistics


class Engine(Protocol):
    failures: dict[int, str]
    """The last `train` call's failed clients and why (metrics.jsonl's failure_reasons)."""

    def train(self, instructions: list[TrainInstruction]) -> list[ClientUpdate]:
        """Each sampled client's update, failed clients left out (and named in failures)."""

    def evaluate(self, instructions: list[EvalInstruction]) -> list[ClientEval]:
        """Each client's scores of the global model (and, with F > 0, personalized)."""

    def class_statistics(self, client_ids: list[int]) -> list[ClassStatistics]:
        """Round 0 of head_init=class_means: each client's per-class feature sums."""

    def state_dict(self) -> dict:
        """What the engine holds for its clients between rounds, for a checkpoint (empty
        where the clients keep it themselves, as Flower nodes do)."""

    def load_state_dict(self, state: dict) -> None:
        """Put back what `state_dict` returned (the checkpoint's whole state is passed)."""
