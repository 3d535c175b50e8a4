"""The embedded engine for communication=per_iteration: clients step in lockstep.

Each client keeps a `Replica` (its copy of the trainable weights and the step
optimizer), kept in sync only by replaying the server's step records, or by a snapshot
when it lagged too far. Its forward pass reads its replica, never the server's state.

A client whose step raises, or takes longer than `client_timeout_seconds` (checked after
the step: cooperative, as in spry.engines.local), drops out for the rest of the round and
is named in `failures`; tests inject failures by replacing `scalar_step`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

from spry.client import client_batches, is_finite, make_client_optimizer, step_estimate
from spry.config import Config
from spry.data import FederatedData
from spry.engines.local import LocalEngine
from spry.methods import make_estimator
from spry.models import load_trainable
from spry.per_iteration.replay import Replica, ScalarUpload, StepRecord
from spry.seeds import derive_seed, seeded_global_rng, tangent_seed

log = logging.getLogger(__name__)


def scalar_step(model, batch, unit_params: list[str], cfg: Config, round_seed: int,
                client_id: int, step: int) -> ScalarUpload | None:
    """One step's upload: the K directional derivatives at the model's current weights,
    from the client's own step function. No tangent is skipped (skip_zero_factors): the
    server regenerates one for every tensor of the client's units."""
    named = dict(model.named_parameters())
    params = {n: named[n] for n in unit_params}
    seeds = [tangent_seed(round_seed, client_id, step, k) for k in range(cfg.tangents)]
    model.train(cfg.train_dropout)
    with seeded_global_rng(derive_seed(round_seed, "dropout", client_id, step)):
        est = step_estimate(model, batch, params, None, cfg, make_estimator(cfg), seeds,
                            skip_zero_factors=False)
    model.eval()
    if not is_finite(est):
        return None  # a non-finite step is skipped, not sent
    return ScalarUpload.of(client_id, step, est.scalars, len(batch["labels"]), est.loss)


class LocalStepEngine:
    def __init__(self, cfg: Config, model, tokenizer, data: FederatedData,
                 params_of: Callable[[int], dict[int, list[str]]]):
        self.cfg, self.model, self.tokenizer, self.data = cfg, model, tokenizer, data
        self.params_of = params_of
        self.replicas: dict[int, Replica] = {}
        self.streams: dict[int, Iterator] = {}
        self.round_seed = 0
        self.skipped_steps = 0
        self.failures: dict[int, str] = {}
        """This round's failed clients and why."""
        self._evaluator = LocalEngine(cfg, model, tokenizer, data)

    def sync(self, client_id: int, payload: Replica | list[StepRecord]) -> None:
        if isinstance(payload, Replica):
            self.replicas[client_id] = payload.snapshot()
            return
        for record in payload:
            self.replicas[client_id].apply(record, self.params_of(record.server_round))

    def begin_round(self, server_round: int, round_seed: int, client_ids: list[int]) -> None:
        self.round_seed = round_seed
        self.failures = {}
        self.streams = {cid: client_batches(self.data.clients[cid].train, self.tokenizer,
                                            self.cfg, round_seed, cid, self.cfg.local_epochs,
                                            self.cfg.max_steps) for cid in client_ids}

    def step(self, server_round: int, step: int, clients: dict[int, list[str]]
             ) -> list[ScalarUpload] | None:
        if not self.streams:
            return None
        uploads = []
        for cid in list(self.streams):
            batch = next(self.streams[cid], None)
            if batch is None:
                del self.streams[cid]
                continue
            load_trainable(self.model, self.replicas[cid].weights)
            start, timeout = time.perf_counter(), self.cfg.client_timeout_seconds
            try:
                up = scalar_step(self.model, batch, clients[cid], self.cfg, self.round_seed, cid,
                                 step)
            except Exception as exc:  # one client's failure must not end the round
                self._fail(cid, f"{type(exc).__name__}: {exc}")
                continue
            if timeout is not None and time.perf_counter() - start > timeout:
                self._fail(cid, f"timed out (client_timeout_seconds={timeout:g})")
                continue
            if up is None:
                self.skipped_steps += 1
            else:
                uploads.append(up)
        return uploads

    def _fail(self, client_id: int, reason: str) -> None:
        self.failures[client_id] = reason
        del self.streams[client_id]
        log.warning("client %d failed: %s", client_id, reason)

    def broadcast(self, record: StepRecord, client_ids: list[int]) -> None:
        params_of = self.params_of(record.server_round)
        for cid in client_ids:
            self.replicas[cid].apply(record, params_of)

    def evaluate(self, instructions):
        return self._evaluator.evaluate(instructions)

    def class_statistics(self, client_ids: list[int]) -> list:
        return self._evaluator.class_statistics(client_ids)

    # --- checkpoints (spry.checkpoint) -------------------------------------------------
    def state_dict(self) -> dict:
        return {"replicas": {cid: r.state_dict() for cid, r in self.replicas.items()},
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        cfg = self.cfg
        self.replicas = {cid: Replica.from_state(r, lambda ps: make_client_optimizer(cfg, ps))
                         for cid, r in state["replicas"].items()}
        self.skipped_steps = state["skipped_steps"]
