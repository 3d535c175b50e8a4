"""The ClientApp: each SuperNode is one Spry client, the one named by its `partition-id`.

Handlers translate and stop: unpack the message, call the same client code the local
engine calls (spry.engines.node), pack the reply. What a node keeps between rounds — its
copy of the trainable weights the server sent it and, with keep_client_optimizer, its
optimizer state — lives in the node's `Context.state`, so it survives across rounds (and
across ClientApp processes in a deployment).

The model, tokenizer and data partition are built once per process from the Config that
every message carries (`experiment.build`: the same seeded construction as the server and
the local engine, so every node starts from identical initial weights).
"""

from __future__ import annotations

import threading

import torch
import yaml
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from spry.config import Config, ConfigError
from spry.flower import records
from spry.engines.node import (ClientState, client_class_statistics, evaluate_client,
                               train_client)

RECEIVED, OPTIMIZER = "spry.received", "spry.optimizer"
_SEP = "|"

# One workspace per process; virtual SuperNodes of a simulation may share a process.
_lock = threading.Lock()
_cache: dict[str, object] = {}


def _workspace(cfg: Config):
    """(Experiment, initial trainable weights) for this config, built once per process."""
    from spry.experiment import build
    from spry.models import trainable_state

    key = yaml.safe_dump(cfg.to_dict())
    if _cache.get("key") != key:
        _cache.clear()
        exp = build(cfg, held_out=cfg.client_data != "node")
        _cache.update(key=key, exp=exp, initial=trainable_state(exp.model))
    return _cache["exp"], _cache["initial"]


DATA_FILE = "data-file"
"""The node-config key naming a SuperNode's own data (client_data=node)."""


def client_data(exp, cfg: Config, context: Context, client_id: int):
    """This node's client: its share of `dataset` (client_data=partition), or its own
    data-file read once per process (client_data=node). Call under _lock, after
    _workspace."""
    if cfg.client_data != "node":
        return exp.data.clients[client_id]
    from spry.data import node_client_data
    from spry.tasks.heads import head_of

    if DATA_FILE not in context.node_config:
        raise ConfigError(f"this SuperNode has no {DATA_FILE}: with client_data=node start it "
                          f"with --node-config 'partition-id=<client id> {DATA_FILE}=\"<its "
                          "labelled file>\"'")
    path = str(context.node_config[DATA_FILE])
    key = (DATA_FILE, path, client_id)
    if key not in _cache:
        _cache[key] = node_client_data(cfg, exp.tokenizer, path, client_id, head_of(cfg).encode)
    return _cache[key]


def partition_id(context: Context) -> int:
    if "partition-id" not in context.node_config:
        raise ConfigError("this SuperNode has no partition-id: start it with "
                          "--node-config 'partition-id=<client id> num-partitions=<clients>'")
    return int(context.node_config["partition-id"])


def _check_client(context: Context, client_id: int) -> None:
    if partition_id(context) != client_id:
        raise RuntimeError(f"message for client {client_id} reached the node of partition "
                           f"{partition_id(context)}")


def load_state(context: Context, cfg: Config, model: torch.nn.Module) -> ClientState:
    state = ClientState.fresh(cfg)
    if RECEIVED in context.state.array_records:
        state.received = records.from_array_record(context.state.array_records[RECEIVED])
    if state.optimizer is not None and OPTIMIZER in context.state.array_records:
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        for flat, value in records.from_array_record(context.state.array_records[OPTIMIZER]).items():
            name, key = flat.rsplit(_SEP, 1)
            value = value if key == "step" else value.to(dtypes[name])
            state.optimizer.setdefault(name, {})[key] = value
    return state


def save_state(context: Context, state: ClientState) -> None:
    context.state[RECEIVED] = records.to_array_record(state.received)
    if state.optimizer is not None:
        context.state[OPTIMIZER] = records.to_array_record(
            {f"{name}{_SEP}{key}": value for name, values in state.optimizer.items()
             for key, value in values.items()})


def handle_query(message: Message, context: Context) -> Message:
    """The handshake (which Spry client this node is), or round 0 of head_init=class_means."""
    if "class-statistics" in message.content.config_records:
        cfg = records.read_config(message.content)
        client_id = int(message.content.config_records["class-statistics"]["client-id"])
        _check_client(context, client_id)
        with _lock:
            exp, initial = _workspace(cfg)
            stats = client_class_statistics(exp.model, initial, client_id,
                                            client_data(exp, cfg, context, client_id),
                                            exp.tokenizer, cfg)
        return records.reply(message, records.class_statistics_reply(stats))
    return records.reply(message, RecordDict({"node": MetricRecord(
        {"partition-id": partition_id(context),
         "has-data-file": int(DATA_FILE in context.node_config)})}))


def handle_train(message: Message, context: Context) -> Message:
    cfg = records.read_config(message.content)
    ins = records.read_train(message.content)
    _check_client(context, ins.client_id)
    with _lock:
        exp, initial = _workspace(cfg)
        state = load_state(context, cfg, exp.model)
        update = train_client(exp.model, initial, state, ins,
                              client_data(exp, cfg, context, ins.client_id), exp.tokenizer, cfg)
        save_state(context, state)
    return records.reply(message, records.update_content(update))


def handle_evaluate(message: Message, context: Context) -> Message:
    cfg = records.read_config(message.content)
    ins = records.read_evaluate(message.content)
    _check_client(context, ins.client_id)
    with _lock:
        exp, _ = _workspace(cfg)
        result = evaluate_client(exp.model, ins, client_data(exp, cfg, context, ins.client_id),
                                 exp.tokenizer, cfg)
    return records.reply(message, records.eval_content(result))


def make_client_app(train=handle_train, evaluate=handle_evaluate, query=handle_query) -> ClientApp:
    """A ClientApp around the handlers (tests wrap a handler to make a node fail)."""
    client = ClientApp()
    client.train()(train)
    client.evaluate()(evaluate)
    client.query()(query)
    return client


app = make_client_app()
