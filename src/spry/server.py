"""The round: sample -> assign units -> train -> aggregate -> server step -> evaluate.

The same code runs under every engine; an engine only decides where a client's work
happens and how the messages travel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from spry.client import ClientEval, ClientUpdate
from spry.config import Config
from spry.federation import aggregate_units, assign_units, make_server_optimizer
from spry.messages import EvalInstruction, TrainInstruction, tensor_bytes
from spry.methods import METHODS, sends_previous_update
from spry.models import HEAD_UNIT, Unit
from spry.seeds import derive_seed, generator
from spry.tasks.linear_head import (class_mean_head, lda_head, multilabel_class_mean_head,
                                   multilabel_lda_head, ridge_head)
from spry.validation import Rejection, check_update, screen

log = logging.getLogger(__name__)


def sample_clients(num_clients: int, per_round: int, seed: int, server_round: int) -> list[int]:
    g = generator(derive_seed(seed, "sample", server_round))
    return sorted(torch.randperm(num_clients, generator=g)[:per_round].tolist())


@dataclass
class Server:
    cfg: Config
    units: list[Unit]
    weights: dict[str, torch.Tensor]
    """The global trainable weights."""
    optimizer: object = None
    bytes_up_total: int = 0
    bytes_down_total: int = 0
    previous_update: dict[str, torch.Tensor] | None = None
    """The last round's global update Δ = new − old weights, kept only for methods that
    send it to clients (FwdLLM); None before the first aggregation."""
    unit_params: dict[str, tuple[str, ...]] = field(init=False)
    rejected: list[Rejection] = field(default_factory=list)
    """The updates the last `aggregate_train` rejected (spry.validation), with reasons."""

    def __post_init__(self) -> None:
        self.unit_params = {u.name: u.params for u in self.units}
        if self.optimizer is None:
            self.optimizer = make_server_optimizer(self.cfg)

    def deal(self, server_round: int, clients: list[int]) -> dict[int, list[str]]:
        names = [u.name for u in self.units]
        if not METHODS[self.cfg.method].split:
            return {c: list(names) for c in clients}
        shared = [HEAD_UNIT] if self.cfg.head == "shared" and HEAD_UNIT in names else []
        return assign_units(names, clients, server_round, policy=self.cfg.assignment,
                            shared=shared, replicas=self.cfg.unit_replicas,
                            seed=derive_seed(self.cfg.seed, "assign", server_round))

    def configure_train(self, server_round: int) -> list[TrainInstruction]:
        clients = sample_clients(self.cfg.num_clients, self.cfg.clients_per_round, self.cfg.seed,
                                 server_round)
        round_seed = derive_seed(self.cfg.seed, "round", server_round)
        score_local = scores_local_models(self.cfg, server_round)
        instructions = []
        for cid, units in self.deal(server_round, clients).items():
            params = [p for u in units for p in self.unit_params[u]]
            # context=global also sends the frozen rest of the trainable weights, so the
            # client's forward pass is the global model's.
            sent = self.weights if self.cfg.context == "global" else params
            instructions.append(TrainInstruction(server_round, cid, round_seed, units, params,
                                                 {p: self.weights[p].clone() for p in sent},
                                                 previous_update=self._previous_update_for(
                                                     params), score_local=score_local))
        return instructions

    def aggregate_train(self, updates: list[ClientUpdate],
                        instructions: list[TrainInstruction] | None = None) -> set[str]:
        """Validate, then per-unit weighted mean, then the server optimizer on the
        pseudo-gradient. `instructions`: what was sent this round, so an update may only
        carry its client's units (None: any trainable tensor)."""
        return self._aggregate(self.validate(updates, instructions))

    def _aggregate(self, updates: list[ClientUpdate]) -> set[str]:
        aggregated = aggregate_units(self.weights, [(u.weights, u.num_examples) for u in updates])
        trained = {name for u in updates if u.num_examples > 0 for name in u.weights}
        before = self.weights
        self.weights = self.optimizer.step(self.weights, aggregated, trained)
        if sends_previous_update(self.cfg):
            self.previous_update = {n: self.weights[n] - before[n] for n in trained}
        return trained

    def validate(self, updates: list[ClientUpdate],
                 instructions: list[TrainInstruction] | None = None) -> list[ClientUpdate]:
        """The updates that pass spry.validation; the others go to `self.rejected`, logged."""
        assigned = (None if instructions is None
                    else {i.client_id: set(i.unit_params) for i in instructions})

        def reason_of(u: ClientUpdate, duplicate: bool) -> str | None:
            if assigned is not None and u.client_id not in assigned:
                return f"client {u.client_id} was not sampled this round"
            if duplicate:
                return "a second update from the same client this round"
            return check_update(u.client_id, u.weights, u.num_examples, self.weights,
                                None if assigned is None else assigned[u.client_id],
                                self.cfg.max_update_norm)

        accepted, rejected = screen(updates, lambda u: u.client_id, reason_of)
        self.rejected = [Rejection(u.client_id, reason) for u, reason in rejected]
        for r in self.rejected:
            log.warning("rejected the update of client %s: %s", r.client_id, r.reason)
        return accepted

    def _previous_update_for(self, params: list[str]) -> dict[str, torch.Tensor] | None:
        if self.previous_update is None:
            return None
        return {p: self.previous_update[p].clone() for p in params if p in self.previous_update}

    def configure_evaluate(self, server_round: int, train: list[TrainInstruction]
                           ) -> list[EvalInstruction]:
        """One evaluation message per client of the round. Where the train replies carry
        the clients' scores of their own models (personalization=round) the message asks
        for no personalization (F=0): that work is done."""
        return [EvalInstruction(server_round, ins.client_id, ins.round_seed, ins.unit_params,
                                self.weights,
                                0 if ins.score_local else self.cfg.personalization_epochs)
                for ins in train]

    def initialize_head(self, engine, weight: str, bias: str) -> dict:
        """Round 0 of head_init=class_means (FedNCM) or lda: every client sends per-class
        sums of its pooled features (lda: and their within-class scatter), the server sets
        the head to the class means or solves the discriminant (for scores: least squares).
        Returns the round's metrics
        row (bytes and seconds counted like any round's)."""
        start = time.perf_counter()
        stats = engine.class_statistics(list(range(self.cfg.num_clients)))
        if self.cfg.task_head == "regression":
            w, b = ridge_head(stats)  # its ridge chosen by generalized cross-validation
        elif self.cfg.task_head == "multilabel" and self.cfg.head_init == "lda":
            w, b = multilabel_lda_head(stats, self.cfg.head_init_shrinkage,
                                       self.cfg.head_init_lda_scale)
        elif self.cfg.task_head == "multilabel":
            w, b = multilabel_class_mean_head(stats, self.cfg.head_init_scale)
        elif self.cfg.head_init == "lda":
            w, b = lda_head(stats, self.cfg.head_init_shrinkage, self.cfg.head_init_lda_scale)
        else:
            w, b = class_mean_head(stats, self.cfg.head_init_scale)
        self.weights = {**self.weights, weight: w.to(self.weights[weight].dtype),
                        bias: b.to(self.weights[bias].dtype)}
        bytes_up = sum(s.bytes() for s in stats)
        self.bytes_up_total += bytes_up
        return {"round": 0, "head_init": self.cfg.head_init, "clients": [s.client_id for s in stats],
                "steps": 0, "client_seconds": sum(s.seconds for s in stats),
                "bytes_up": bytes_up, "bytes_down": 0, "bytes_up_total": self.bytes_up_total,
                "bytes_down_total": self.bytes_down_total,
                "wall_seconds": time.perf_counter() - start}

    def run_round(self, server_round: int, engine, evaluate: Callable[[], bool] | None = None
                  ) -> dict:
        """Train one round; evaluate it where `evaluate()` (asked once the clients are done)
        says so, by default every eval_every rounds and the last."""
        start = time.perf_counter()
        instructions = self.configure_train(server_round)
        updates = engine.train(instructions)
        trained = time.perf_counter()
        bytes_down = sum(tensor_bytes(i.weights) + tensor_bytes(i.previous_update or {})
                         for i in instructions)
        bytes_up = sum(_sent_bytes(u.weights) for u in updates)
        replied = {u.client_id for u in updates}
        updates = self.validate(updates, instructions)
        self._aggregate(updates)
        aggregated = time.perf_counter()
        self.bytes_up_total += bytes_up
        self.bytes_down_total += bytes_down
        examples = sum(u.num_examples for u in updates)
        row = round_row(
            server_round, self, engine,
            train_loss=(sum(u.train_loss * u.num_examples for u in updates) / examples
                        if examples else float("nan")),
            clients=[u.client_id for u in updates],
            # Sampled clients that sent no update (a node died or timed out): their units
            # keep their values this round.
            failed_clients=sorted({i.client_id for i in instructions} - replied),
            rejected=[r.as_row() for r in self.rejected], all_failed=not updates,
            units_per_client=(sum(len(i.units) for i in instructions) / len(instructions)
                              if instructions else 0),
            steps=sum(u.steps for u in updates),
            skipped_steps=sum(u.skipped_steps for u in updates),
            client_seconds=sum(u.seconds for u in updates), bytes_up=bytes_up,
            bytes_down=bytes_down, train_seconds=trained - start,
            aggregate_seconds=aggregated - trained)
        if self.cfg.personalization == "round":
            row["personalization_seconds"] = sum(u.local_eval_seconds for u in updates)
        if (evaluate or (lambda: scheduled_eval(self.cfg, server_round)))():
            evals = engine.evaluate(self.configure_evaluate(server_round, instructions))
            row.update(summarize_evals(with_local_scores(evals, updates),
                                       accuracy=self.cfg.task_head != "regression"))
            if self.cfg.personalization == "round" and self.cfg.personalization_epochs:
                # A round evaluated off schedule (the last one a time cap allows) had no
                # scores asked for: its clients personalized from the global model instead.
                row["personalized_from"] = ("round" if scores_local_models(self.cfg, server_round)
                                            else "global")
        row["evaluate_seconds"] = time.perf_counter() - aggregated
        row["wall_seconds"] = time.perf_counter() - start
        return row

    # --- checkpoints (spry.checkpoint) -------------------------------------------------
    def state_dict(self) -> dict:
        return {"server": {"weights": self.weights, "optimizer": self.optimizer.state_dict(),
                           "previous_update": self.previous_update,
                           "bytes_up_total": self.bytes_up_total,
                           "bytes_down_total": self.bytes_down_total}}

    def load_state_dict(self, state: dict) -> None:
        saved = state["server"]
        self.weights = {n: t.clone() for n, t in saved["weights"].items()}
        self.optimizer.load_state_dict(saved["optimizer"])
        self.previous_update = saved["previous_update"]
        self.bytes_up_total = saved["bytes_up_total"]
        self.bytes_down_total = saved["bytes_down_total"]


def round_row(server_round: int, server: Server, engine, *, train_loss: float,
              clients: list[int], failed_clients: list[int], rejected: list[dict],
              all_failed: bool, units_per_client: float, steps: int, skipped_steps: int,
              client_seconds: float, bytes_up: int, bytes_down: int, train_seconds: float,
              aggregate_seconds: float, **extra) -> dict:
    """A round's metrics.jsonl row, in both communication modes (`extra`: a mode's own
    counts, e.g. per_iteration's uploads). The byte totals are the server's, after the
    round. Where the round's time went: train_seconds (the clients' local work, as the
    server waited for it), aggregate_seconds (validation, aggregation and the server
    step), then evaluate_seconds (the clients' scores and the global test split; 0 when
    the round is not evaluated) and wall_seconds, their sum, added by the caller."""
    return {
        "round": server_round, "train_loss": train_loss, "clients": clients,
        "failed_clients": failed_clients,
        # Why they failed, where the engine knows (engine=local: the exception or the
        # timeout; engine=flower: the node's error or no reply).
        "failure_reasons": [{"client": c, "reason": r}
                            for c, r in sorted(engine.failures.items())],
        # Updates that arrived but failed validation (spry.validation): not averaged in.
        "rejected_updates": rejected, "all_clients_failed": all_failed,
        "units_per_client": units_per_client, "steps": steps, "skipped_steps": skipped_steps,
        **extra,
        "client_seconds": client_seconds, "train_seconds": train_seconds,
        "aggregate_seconds": aggregate_seconds, "bytes_up": bytes_up, "bytes_down": bytes_down,
        "bytes_up_total": server.bytes_up_total, "bytes_down_total": server.bytes_down_total,
    }


def scheduled_eval(cfg, server_round: int) -> bool:
    """Every eval_every rounds, and the last."""
    return server_round % cfg.eval_every == 0 or server_round == cfg.rounds


def scores_local_models(cfg, server_round: int) -> bool:
    """personalization=round: whether this round's clients score their own trained models
    (the rounds scheduled for evaluation, when personalized accuracy is asked for)."""
    return (cfg.personalization == "round" and cfg.personalization_epochs > 0
            and scheduled_eval(cfg, server_round))


def with_local_scores(evals: list[ClientEval], updates: list[ClientUpdate]
                      ) -> list[ClientEval]:
    """The evaluations, each with its client's own-model score from the train reply where
    there is one (personalization=round); a client whose update was lost has none."""
    local = {u.client_id: u.local_correct for u in updates if u.local_correct is not None}
    return [replace(e, personalized_correct=local[e.client_id]) if e.client_id in local else e
            for e in evals]


def _sent_bytes(tensors: dict) -> int:
    """Bytes of an update as received; a hostile one may carry things that are not tensors."""
    return sum(t.numel() * t.element_size() for t in tensors.values()
               if isinstance(t, torch.Tensor))


def summarize_evals(evals: list[ClientEval], accuracy: bool = True) -> dict:
    """Example-weighted accuracies and loss over the sampled clients' local test splits;
    `accuracy` False (task_head=regression: a score is not right or wrong): the loss only,
    generalized_accuracy None."""
    total = sum(e.total for e in evals)
    out = {"generalized_accuracy": (sum(e.correct for e in evals) / total
                                    if total and accuracy else None),
           "eval_loss": sum(e.loss for e in evals) / total if total else None}
    personal = [e for e in evals if e.personalized_correct is not None]
    if personal and accuracy:
        n = sum(e.total for e in personal)
        out["personalized_accuracy"] = sum(e.personalized_correct for e in personal) / n
    return out
