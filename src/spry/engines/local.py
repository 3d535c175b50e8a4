"""The embedded default engine: every client runs in this process, one after another.

One model instance serves all clients. Each client keeps its own `ClientState` (the
latest values the server sent it, and optionally its optimizer state), exactly as a
Flower node keeps one in its context, so both engines run the same algorithm
(see spry.engines.node).
"""

from __future__ import annotations

from torch import nn

from spry.client import ClientEval, ClientUpdate
from spry.config import Config
from spry.data import FederatedData
from spry.engines.node import ClientState, evaluate_client, train_client
from spry.messages import EvalInstruction, TrainInstruction
from spry.models import trainable_state


class LocalEngine:
    def __init__(self, cfg: Config, model: nn.Module, tokenizer, data: FederatedData):
        self.cfg, self.model, self.tokenizer, self.data = cfg, model, tokenizer, data
        self.initial = trainable_state(model)
        """The initial trainable weights: what a client holds before the server sends any."""
        self.states: dict[int, ClientState] = {}

    def train(self, instructions: list[TrainInstruction]) -> list[ClientUpdate]:
        updates = []
        for ins in instructions:
            state = self.states.setdefault(ins.client_id, ClientState.fresh(self.cfg))
            updates.append(train_client(self.model, self.initial, state, ins,
                                        self.data.clients[ins.client_id], self.tokenizer, self.cfg))
        return updates

    def evaluate(self, instructions: list[EvalInstruction]) -> list[ClientEval]:
        return [evaluate_client(self.model, ins, self.data.clients[ins.client_id], self.tokenizer,
                                self.cfg)
                for ins in instructions]
