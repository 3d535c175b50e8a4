"""communication=per_iteration: every local step is one exchange (Spry, Sec. 3.3).

Each step, a client uploads only its K directional derivatives (and its batch size); the
server regenerates the tangents from the seeds, rebuilds each client's gradient, averages
per tensor over the clients that trained it and steps the optimizer (`client_optimizer`,
`client_lr`: in this mode the local optimizer runs at the server). Downlink, beyond the
paper: the server sends the step's record of (seed, scalar) pairs and every client
replays it on its `Replica`; a client that comes back after more than `max_replay_lag`
steps downloads the server's replica (weights and optimizer state) instead.

The unit deal needs no message either: it is a pure function of the config and the round
(`Server.plan`), so a client derives which tensors each uploader perturbed.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import torch

from spry.client import ClientEval, make_client_optimizer
from spry.per_iteration.replay import Replica, ScalarUpload, StepRecord
from spry.server import Server, round_row, scheduled_eval, summarize_evals
from spry.validation import check_upload, screen

log = logging.getLogger(__name__)


class StepEngine(Protocol):
    failures: dict[int, str]
    skipped_steps: int
    def sync(self, client_id: int, payload: Replica | list[StepRecord]) -> None: ...
    def begin_round(self, server_round: int, round_seed: int, client_ids: list[int]) -> None: ...
    def step(self, server_round: int, step: int,
             clients: dict[int, list[str]]) -> list[ScalarUpload] | None: ...
    """The step's uploads; None once every client has run out of local batches."""
    def broadcast(self, record: StepRecord, client_ids: list[int]) -> None: ...
    def evaluate(self, instructions) -> list[ClientEval]: ...


class PerIterationServer:
    """Drives per-iteration rounds on top of the shared `Server` (deal, evaluation, bytes)."""

    def __init__(self, server: Server):
        self.server = server
        cfg = server.cfg
        self.replica = Replica(server.weights, lambda ps: make_client_optimizer(cfg, ps))
        self.log: deque[StepRecord] = deque(maxlen=cfg.max_replay_lag)
        self.synced: dict[int, int] = {}
        """The replica version each client last caught up to."""

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Start from `weights` (after round 0 set the head): a fresh server replica."""
        self.replica = Replica(weights, self.replica.make_optimizer)

    @functools.lru_cache(maxsize=64)
    def params_of(self, server_round: int) -> dict[int, list[str]]:
        return {cid: ins.unit_params for cid, ins in self._plan(server_round).items()}

    def _plan(self, server_round: int):
        return {ins.client_id: ins for ins in self.server.configure_train(server_round)}

    def _catch_up(self, client_id: int) -> tuple[Replica | list[StepRecord], int]:
        """Replay the log since the client's last sync, or send the replica past the lag."""
        lag = self.replica.version - self.synced.get(client_id, -1)
        if client_id in self.synced and lag <= len(self.log):
            records = list(self.log)[len(self.log) - lag:] if lag else []
            return records, sum(r.nbytes for r in records)
        snapshot = self.replica.snapshot()
        return snapshot, snapshot.nbytes

    def _sync(self, engine: StepEngine, clients: list[int]) -> int:
        """Bring every client of the round up to the server's replica; the bytes sent."""
        sent = 0
        for cid in clients:
            payload, nbytes = self._catch_up(cid)
            engine.sync(cid, payload)
            self.synced[cid] = self.replica.version
            sent += nbytes
        return sent

    def run_round(self, server_round: int, engine: StepEngine,
                  evaluate: Callable[[], bool] | None = None) -> dict:
        """One round of per-iteration steps; evaluated as Server.run_round says."""
        start = time.perf_counter()
        plan = self._plan(server_round)
        clients = list(plan)
        round_seed = next(iter(plan.values())).round_seed
        bytes_down = self._sync(engine, clients)
        engine.begin_round(server_round, round_seed, clients)
        skipped_before = engine.skipped_steps
        steps = self._steps(engine, server_round, round_seed,
                            {cid: ins.unit_params for cid, ins in plan.items()})
        stepped = time.perf_counter()
        server = self.server
        server.weights = {n: t.clone() for n, t in self.replica.weights.items()}
        server.bytes_up_total += steps["bytes_up"]
        server.bytes_down_total += bytes_down + steps["bytes_down"]
        row = round_row(
            server_round, server, engine,
            train_loss=steps["loss"] / steps["examples"] if steps["examples"] else float("nan"),
            clients=clients,
            # Clients whose step raised or timed out: they sit out the rest of the round.
            failed_clients=sorted(engine.failures), rejected=steps["rejected"],
            all_failed=steps["uploads"] == 0,
            units_per_client=sum(len(i.units) for i in plan.values()) / len(plan),
            steps=steps["steps"], skipped_steps=engine.skipped_steps - skipped_before,
            uploads=steps["uploads"], client_seconds=steps["client_seconds"],
            bytes_up=steps["bytes_up"], bytes_down=bytes_down + steps["bytes_down"],
            # The server's work (rebuilding and stepping each step's gradient, replay)
            # is interleaved with the clients' steps: the rest of the stepping time.
            train_seconds=steps["client_seconds"],
            aggregate_seconds=stepped - start - steps["client_seconds"])
        if (evaluate or (lambda: scheduled_eval(server.cfg, server_round)))():
            evals = engine.evaluate(server.configure_evaluate(server_round, list(plan.values())))
            row.update(summarize_evals(evals, accuracy=server.cfg.task_head != "regression"))
        row["evaluate_seconds"] = time.perf_counter() - stepped
        row["wall_seconds"] = time.perf_counter() - start
        return row

    def _steps(self, engine: StepEngine, server_round: int, round_seed: int,
               params_of: dict[int, list[str]]) -> dict:
        """Exchange steps until every client has run out of batches; the round's totals."""
        clients = list(params_of)
        t = dict(loss=0.0, examples=0, steps=0, uploads=0, client_seconds=0.0, bytes_up=0,
                 bytes_down=0, rejected=[])
        while True:
            t0 = time.perf_counter()
            uploads = engine.step(server_round, t["steps"], params_of)
            t["client_seconds"] += time.perf_counter() - t0
            if uploads is None:
                return t  # every client has run out of local batches
            uploads = self._accept(uploads, params_of, t["steps"], t["rejected"])
            if uploads:  # else every active client skipped a non-finite step
                record = StepRecord(server_round, round_seed, t["steps"], tuple(uploads))
                self.replica.apply(record, params_of)
                self.log.append(record)
                engine.broadcast(record, clients)
                for cid in clients:
                    self.synced[cid] = self.replica.version
                t["bytes_up"] += sum(u.nbytes for u in uploads)
                t["uploads"] += len(uploads)
                t["bytes_down"] += record.nbytes * len(clients)
                t["loss"] += sum(u.loss * u.num_examples for u in uploads)
                t["examples"] += sum(u.num_examples for u in uploads)
            t["steps"] += 1

    def _accept(self, uploads: list[ScalarUpload], sampled, step: int, rejected: list[dict]
                ) -> list[ScalarUpload]:
        """The uploads that pass spry.validation.check_upload; the rest go to `rejected`."""
        cfg = self.server.cfg

        def reason_of(u: ScalarUpload, duplicate: bool) -> str | None:
            if duplicate:
                return "a second upload from the same client this step"
            return check_upload(u.client_id, u.step, u.scalars, u.num_examples, u.loss,
                                sampled, step, cfg.tangents, cfg.max_update_norm)

        accepted, refused = screen(uploads, lambda u: u.client_id, reason_of)
        for u, reason in refused:
            log.warning("rejected the upload of client %s at step %d: %s", u.client_id, step,
                        reason)
            rejected.append({"client": u.client_id, "step": step, "reason": reason})
        return accepted

    # --- checkpoints (spry.checkpoint) -------------------------------------------------
    def state_dict(self) -> dict:
        return {"per_iteration": {"replica": self.replica.state_dict(),
                                  "log": [r.as_list() for r in self.log],
                                  "synced": dict(self.synced)}}

    def load_state_dict(self, state: dict) -> None:
        saved = state["per_iteration"]
        self.replica = Replica.from_state(saved["replica"], self.replica.make_optimizer)
        self.log.clear()
        self.log.extend(StepRecord.from_list(r) for r in saved["log"])
        self.synced = dict(saved["synced"])
