"""The embedded default engine: every client runs in this process, one after another.

One model instance serves all clients: before a client works, the engine loads the
global trainable weights it was sent, so no client sees another's state.
"""

from __future__ import annotations

from torch import nn

from spry.client import ClientEval, ClientUpdate, evaluate, local_train
from spry.config import Config
from spry.data import FederatedData
from spry.messages import EvalInstruction, TrainInstruction
from spry.models import load_trainable
from spry.seeds import derive_seed


class LocalEngine:
    def __init__(self, cfg: Config, model: nn.Module, tokenizer, data: FederatedData):
        self.cfg, self.model, self.tokenizer, self.data = cfg, model, tokenizer, data

    def train(self, instructions: list[TrainInstruction]) -> list[ClientUpdate]:
        updates = []
        for ins in instructions:
            load_trainable(self.model, ins.weights)
            updates.append(local_train(self.model, self.data.clients[ins.client_id].train,
                                       self.tokenizer, ins.unit_params, self.cfg,
                                       ins.round_seed, ins.client_id))
        return updates

    def evaluate(self, instructions: list[EvalInstruction]) -> list[ClientEval]:
        results = []
        for ins in instructions:
            client = self.data.clients[ins.client_id]
            load_trainable(self.model, ins.weights)
            correct, total, loss = evaluate(self.model, client.test, self.tokenizer, self.cfg)
            result = ClientEval(ins.client_id, correct, total, loss)
            if ins.personalization_epochs and total:
                seed = derive_seed(ins.round_seed, "personalize")
                local_train(self.model, client.train, self.tokenizer, ins.unit_params, self.cfg,
                            seed, ins.client_id, epochs=ins.personalization_epochs)
                result.personalized_correct = evaluate(self.model, client.test, self.tokenizer,
                                                       self.cfg)[0]
            results.append(result)
        return results
