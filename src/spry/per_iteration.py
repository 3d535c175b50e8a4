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

from spry.client import ClientEval, make_client_optimizer
from spry.federation.replay import Replica, ScalarUpload, StepRecord
from spry.server import Server, scheduled_eval, summarize_evals
from spry.validation import check_upload

log = logging.getLogger(__name__)


class StepEngine(Protocol):
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

    def run_round(self, server_round: int, engine: StepEngine,
                  evaluate: Callable[[], bool] | None = None) -> dict:
        """One round of per-iteration steps; evaluated as Server.run_round says."""
        start = time.perf_counter()
        plan = self._plan(server_round)
        clients = list(plan)
        round_seed = next(iter(plan.values())).round_seed
        bytes_up = bytes_down = 0
        for cid in clients:
            payload, nbytes = self._catch_up(cid)
            engine.sync(cid, payload)
            self.synced[cid] = self.replica.version
            bytes_down += nbytes
        engine.begin_round(server_round, round_seed, clients)

        params_of = {cid: ins.unit_params for cid, ins in plan.items()}
        losses, examples, step, n_uploads, client_seconds = 0.0, 0, 0, 0, 0.0
        rejected: list[dict] = []
        skipped_before = getattr(engine, "skipped_steps", 0)
        while True:
            t0 = time.perf_counter()
            uploads = engine.step(server_round, step, params_of)
            client_seconds += time.perf_counter() - t0
            if uploads is None:
                break  # every client has run out of local batches
            uploads = self._accept(uploads, params_of, step, rejected)
            if not uploads:  # every active client skipped a non-finite step
                step += 1
                continue
            record = StepRecord(server_round, round_seed, step, tuple(uploads))
            self.replica.apply(record, params_of)
            self.log.append(record)
            engine.broadcast(record, clients)
            for cid in clients:
                self.synced[cid] = self.replica.version
            bytes_up += sum(u.nbytes for u in uploads)
            n_uploads += len(uploads)
            bytes_down += record.nbytes * len(clients)
            losses += sum(u.loss * u.num_examples for u in uploads)
            examples += sum(u.num_examples for u in uploads)
            step += 1

        server = self.server
        server.weights = {n: t.clone() for n, t in self.replica.weights.items()}
        server.bytes_up_total += bytes_up
        server.bytes_down_total += bytes_down
        row = {
            "round": server_round,
            "train_loss": losses / examples if examples else float("nan"),
            "clients": clients,
            "units_per_client": sum(len(i.units) for i in plan.values()) / len(plan),
            # Clients whose step raised or timed out: they sit out the rest of the round.
            "failed_clients": sorted(getattr(engine, "failures", {})),
            "failure_reasons": [{"client": c, "reason": r}
                                for c, r in sorted(getattr(engine, "failures", {}).items())],
            "rejected_updates": rejected,
            "all_clients_failed": n_uploads == 0,
            "steps": step,
            "skipped_steps": getattr(engine, "skipped_steps", 0) - skipped_before,
            "uploads": n_uploads,
            "client_seconds": client_seconds,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "bytes_up_total": server.bytes_up_total,
            "bytes_down_total": server.bytes_down_total,
        }
        cfg = server.cfg
        if (evaluate or (lambda: scheduled_eval(cfg, server_round)))():
            evals = engine.evaluate(server.configure_evaluate(server_round, list(plan.values())))
            row.update(summarize_evals(evals))
        row["wall_seconds"] = time.perf_counter() - start
        return row

    def _accept(self, uploads: list[ScalarUpload], sampled, step: int, rejected: list[dict]
                ) -> list[ScalarUpload]:
        """The uploads that pass spry.validation.check_upload; the rest go to `rejected`."""
        cfg = self.server.cfg
        accepted, seen = [], set()
        for u in uploads:
            if u.client_id in seen:
                reason = "a second upload from the same client this step"
            else:
                reason = check_upload(u.client_id, u.step, u.scalars, u.num_examples, u.loss,
                                      sampled, step, cfg.tangents, cfg.max_update_norm)
            seen.add(u.client_id)
            if reason is None:
                accepted.append(u)
            else:
                log.warning("rejected the upload of client %s at step %d: %s", u.client_id,
                            step, reason)
                rejected.append({"client": u.client_id, "step": step, "reason": reason})
        return accepted
