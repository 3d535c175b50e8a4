"""The embedded default engine: every client runs in this process, one after another.

One model instance serves all clients. Each client keeps its own `ClientState` (the
latest values the server sent it, and optionally its optimizer state), exactly as a
Flower node keeps one in its context, so both engines run the same algorithm
(see spry.engines.node).

A client that raises, or whose local training took longer than `client_timeout_seconds`,
sends no update: the round goes on, its units keep their values, and `failures` names it
with the reason (the Server writes both to metrics.jsonl). The timeout is cooperative: an
in-process client cannot be preempted, so it runs to the end and its late reply is dropped
(its own state advances, as a real node's would). Failures are injected in tests by
replacing `spry.engines.node.train_client`, the one call a client's training goes through.
"""

from __future__ import annotations

import logging
import time

from torch import nn

from spry.client import ClientEval, ClientUpdate
from spry.config import Config
from spry.data import FederatedData
from spry.engines import node
from spry.engines.node import ClientState, client_class_statistics, evaluate_client
from spry.messages import EvalInstruction, TrainInstruction
from spry.models import trainable_state

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0
"""Round 0 (class means over every client): the least time between two progress lines."""


class LocalEngine:
    """The Engine protocol (spry.engines.protocol), in process."""

    def __init__(self, cfg: Config, model: nn.Module, tokenizer, data: FederatedData):
        self.cfg, self.model, self.tokenizer, self.data = cfg, model, tokenizer, data
        self.initial = trainable_state(model)
        """The initial trainable weights: what a client holds before the server sends any."""
        self.states: dict[int, ClientState] = {}
        self.failures: dict[int, str] = {}
        """The last `train` call's failed clients and why."""
        self.on_client = None
        """Called as on_client(done, total) after each client of a `train` call (the live
        view's progress within a round)."""

    def train(self, instructions: list[TrainInstruction]) -> list[ClientUpdate]:
        updates, self.failures = [], {}
        timeout = self.cfg.client_timeout_seconds
        for done, ins in enumerate(instructions):
            if self.on_client is not None and done:
                self.on_client(done, len(instructions))
            state = self.states.setdefault(ins.client_id, ClientState.fresh(self.cfg))
            start = time.perf_counter()
            try:
                update = node.train_client(self.model, self.initial, state, ins,
                                           self.data.clients[ins.client_id], self.tokenizer,
                                           self.cfg)
            except Exception as exc:  # one client's failure must not end the round
                self.failures[ins.client_id] = f"{type(exc).__name__}: {exc}"
                log.warning("client %d failed: %s", ins.client_id, self.failures[ins.client_id])
                continue
            if timeout is not None and time.perf_counter() - start > timeout:
                self.failures[ins.client_id] = f"timed out (client_timeout_seconds={timeout:g})"
                log.warning("client %d %s", ins.client_id, self.failures[ins.client_id])
                continue
            updates.append(update)
        if self.on_client is not None:
            self.on_client(len(instructions), len(instructions))
        return updates

    def class_statistics(self, client_ids: list[int]) -> list:
        """Round 0 of head_init=class_means or lda (spry.engines.node.client_class_statistics).
        It visits every client, not one round's sample, so it can take minutes before the
        first round's bar appears: it says how far it is every PROGRESS_SECONDS."""
        features = ("token states (every word's first token)" if self.cfg.task_head == "token"
                    else "pooled features")
        what = (f"sums and scatter of the score and {features}"
                if self.cfg.task_head == "regression" else
                f"class sums and within-class scatter of the {features}"
                if self.cfg.head_init == "lda" else f"class means of the {features}")
        log.info("round 0: %s of %d clients (a forward pass over at most %s of each one's "
                 "examples, no backward)", what, len(client_ids),
                 self.cfg.head_init_examples or "all")
        stats, last = [], time.perf_counter()
        for done, cid in enumerate(client_ids, 1):
            stats.append(client_class_statistics(self.model, self.initial, cid,
                                                 self.data.clients[cid], self.tokenizer, self.cfg))
            if time.perf_counter() - last >= PROGRESS_SECONDS and done < len(client_ids):
                log.info("round 0: %d/%d clients", done, len(client_ids))
                last = time.perf_counter()
        return stats

    def evaluate(self, instructions: list[EvalInstruction]) -> list[ClientEval]:
        return [evaluate_client(self.model, ins, self.data.clients[ins.client_id], self.tokenizer,
                                self.cfg)
                for ins in instructions]

    # --- checkpoints (spry.checkpoint) -------------------------------------------------
    def state_dict(self) -> dict:
        return {"clients": {cid: {"received": s.received, "optimizer": s.optimizer}
                            for cid, s in self.states.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.states = {cid: ClientState(received=s["received"], optimizer=s["optimizer"])
                       for cid, s in state.get("clients", {}).items()}
