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
from itertools import islice
from typing import Callable, Iterator

import torch

from spry.client import classification_loss
from spry.config import Config
from spry.data import FederatedData, iterate_batches
from spry.engines.local import LocalEngine
from spry.estimators import forward_gradient
from spry.federation.replay import Replica, ScalarUpload, StepRecord, tangent_seed
from spry.models import load_trainable
from spry.seeds import derive_seed, seeded_global_rng

log = logging.getLogger(__name__)


def round_batches(data, tokenizer, cfg: Config, round_seed: int, client_id: int
                  ) -> Iterator[dict[str, torch.Tensor]]:
    """The client's batches for a round: E shuffled epochs, capped at max_steps."""
    epochs = (iterate_batches(data, tokenizer, cfg.batch_size,
                              seed=derive_seed(round_seed, "batches", client_id, e))
              for e in range(cfg.local_epochs))
    stream = (batch for epoch in epochs for batch in epoch)
    return islice(stream, cfg.max_steps) if cfg.max_steps is not None else stream


def scalar_step(model, batch, unit_params: list[str], cfg: Config, round_seed: int,
                client_id: int, step: int) -> ScalarUpload | None:
    """One step's upload: the K directional derivatives at the model's current weights."""
    named = dict(model.named_parameters())
    params = {n: named[n] for n in unit_params}
    seeds = [tangent_seed(round_seed, client_id, step, k) for k in range(cfg.tangents)]
    model.train()
    with seeded_global_rng(derive_seed(round_seed, "dropout", client_id, step)):
        batch = {k: v.to(cfg.device) for k, v in batch.items()}
        est = forward_gradient(classification_loss(model, batch), params, seeds)
    model.eval()
    if not all(map(torch.isfinite, map(torch.tensor, [est.loss, *est.scalars]))):
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
        self.streams = {cid: round_batches(self.data.clients[cid].train, self.tokenizer,
                                           self.cfg, round_seed, cid) for cid in client_ids}

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
