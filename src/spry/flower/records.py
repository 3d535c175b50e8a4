"""Spry's messages <-> Flower records. Pure translation: no training, no network.

A train message (server -> node) holds
  "weights"     ArrayRecord: the current global values of the node's units; with
                context=global also the rest of the trainable weights (frozen on the node)
  "previous-update"  ArrayRecord, method=fwdllm only: last round's global update Δ of
                the node's units
  "instruction" ConfigRecord: server-round, client-id, round-seed, units, unit-params,
                score-local (personalization=round: score the trained model's test split)
  "config"      ConfigRecord: the run's resolved Config as YAML (about 1 KB), so a node
                needs nothing but the app to build its model and data partition
and its reply holds "weights" (the trained units) and "metrics" (MetricRecord).
An evaluate message holds the global trainable weights (generalized accuracy is the
global model's), the instruction and the config; its reply holds "metrics".

Tensors travel as float32/float64 numpy arrays; bfloat16 (which numpy lacks) is sent as
float32, an exact widening, and the receiver casts back when it loads the values.
"""

from __future__ import annotations

import yaml
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from spry.client import ClientEval, ClientUpdate
from spry.config import Config
from spry.messages import EvalInstruction, TrainInstruction
from spry.tasks.linear_head import ClassStatistics


def to_array_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(torch_state_dict={
        n: (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().contiguous()
        for n, t in tensors.items()})


def from_array_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())


def config_record(cfg: Config) -> ConfigRecord:
    return ConfigRecord({"yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False)})


def read_config(content: RecordDict) -> Config:
    return Config.from_flat(yaml.safe_load(content.config_records["config"]["yaml"]))


# --- server -> node ---------------------------------------------------------------------
def train_content(ins: TrainInstruction, cfg: Config) -> RecordDict:
    content = RecordDict({
        "weights": to_array_record(ins.weights),
        "instruction": ConfigRecord({"server-round": ins.server_round,
                                     "client-id": ins.client_id, "round-seed": ins.round_seed,
                                     "units": list(ins.units),
                                     "unit-params": list(ins.unit_params),
                                     "score-local": ins.score_local}),
        "config": config_record(cfg),
    })
    if ins.previous_update is not None:
        content["previous-update"] = to_array_record(ins.previous_update)
    return content


def read_train(content: RecordDict) -> TrainInstruction:
    i = content.config_records["instruction"]
    previous = content.array_records.get("previous-update")
    return TrainInstruction(int(i["server-round"]), int(i["client-id"]), int(i["round-seed"]),
                            list(i["units"]), list(i["unit-params"]),
                            from_array_record(content.array_records["weights"]),
                            from_array_record(previous) if previous is not None else None,
                            bool(i["score-local"]))


def evaluate_content(ins: EvalInstruction, cfg: Config) -> RecordDict:
    return RecordDict({
        "weights": to_array_record(ins.weights),
        "instruction": ConfigRecord({"server-round": ins.server_round,
                                     "client-id": ins.client_id, "round-seed": ins.round_seed,
                                     "unit-params": list(ins.unit_params),
                                     "personalization-epochs": ins.personalization_epochs}),
        "config": config_record(cfg),
    })


def read_evaluate(content: RecordDict) -> EvalInstruction:
    i = content.config_records["instruction"]
    return EvalInstruction(int(i["server-round"]), int(i["client-id"]), int(i["round-seed"]),
                           list(i["unit-params"]),
                           from_array_record(content.array_records["weights"]),
                           int(i["personalization-epochs"]))


# --- node -> server ---------------------------------------------------------------------
def update_content(update: ClientUpdate) -> RecordDict:
    return RecordDict({
        "weights": to_array_record(update.weights),
        "metrics": MetricRecord({
            "client-id": update.client_id, "num-examples": update.num_examples,
            "train-loss": float(update.train_loss), "steps": update.steps,
            "skipped-steps": update.skipped_steps, "seconds": float(update.seconds),
            "tangents": len(update.scalars[0]) if update.scalars else 0,
            # the K directional derivatives of every step, flattened
            "scalars": [float(d) for step in update.scalars for d in step],
            # personalization=round: the client's score of its own model (-1: none asked)
            "local-correct": -1 if update.local_correct is None else update.local_correct,
            "local-eval-seconds": float(update.local_eval_seconds)}),
    })


def read_update(content: RecordDict) -> ClientUpdate:
    m = content.metric_records["metrics"]
    k, flat = int(m["tangents"]), list(m["scalars"])
    return ClientUpdate(
        client_id=int(m["client-id"]),
        weights=from_array_record(content.array_records["weights"]),
        num_examples=int(m["num-examples"]), train_loss=float(m["train-loss"]),
        steps=int(m["steps"]), skipped_steps=int(m["skipped-steps"]),
        seconds=float(m["seconds"]),
        scalars=[flat[i:i + k] for i in range(0, len(flat), k)] if k else [],
        local_correct=None if int(m["local-correct"]) < 0 else int(m["local-correct"]),
        local_eval_seconds=float(m["local-eval-seconds"]))


def eval_content(result: ClientEval) -> RecordDict:
    values = {"client-id": result.client_id, "correct": result.correct, "total": result.total,
              "loss": float(result.loss)}
    if result.personalized_correct is not None:
        values["personalized-correct"] = result.personalized_correct
    return RecordDict({"metrics": MetricRecord(values)})


def read_eval(content: RecordDict) -> ClientEval:
    m = content.metric_records["metrics"]
    personal = m.get("personalized-correct")
    return ClientEval(int(m["client-id"]), int(m["correct"]), int(m["total"]), float(m["loss"]),
                      int(personal) if personal is not None else None)


# --- round 0 of head_init=class_means or lda ------------------------------------------------
def class_statistics_content(client_id: int, cfg: Config) -> RecordDict:
    return RecordDict({"class-statistics": ConfigRecord({"client-id": client_id}),
                       "config": config_record(cfg)})


def class_statistics_reply(stats) -> RecordDict:
    arrays = {"sums": stats.sums, "counts": stats.counts}
    if stats.scatter is not None:
        arrays["scatter"] = stats.scatter
    return RecordDict({
        "class-sums": to_array_record(arrays),
        "class-meta": ConfigRecord({"client-id": stats.client_id, "norm-sum": stats.norm_sum,
                                    "seconds": stats.seconds})})


def read_class_statistics(content: RecordDict):
    arrays = from_array_record(content.array_records["class-sums"])
    meta = content.config_records["class-meta"]
    return ClassStatistics(int(meta["client-id"]), arrays["sums"], arrays["counts"],
                           float(meta["norm-sum"]), float(meta["seconds"]),
                           arrays.get("scatter"))


def reply(message: Message, content: RecordDict) -> Message:
    return Message(content=content, reply_to=message)
