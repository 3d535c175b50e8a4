"""FlowerEngine: the engine interface (train / evaluate) over a Flower `Grid`.

One Message per sampled client, to the SuperNode whose `partition-id` is that client.
A node that fails (its ClientApp raised, the SuperLink lost its heartbeat, or
`round_timeout` passed) simply sends no update: its units keep their values this round
(the server aggregates per unit over the clients that replied) and the Server writes it
to metrics.jsonl as `failed_clients`.
"""

from __future__ import annotations

import logging
import time

import torch
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from spry.client import ClientEval, ClientUpdate
from spry.config import Config, ConfigError
from spry.flower import records
from spry.messages import EvalInstruction, TrainInstruction

log = logging.getLogger(__name__)

NODE_WAIT_SECONDS = 300.0
"""How long the ServerApp waits for all SuperNodes to connect before the first round."""


def discover_clients(grid: Grid, num_clients: int, wait: float = NODE_WAIT_SECONDS,
                     data_files: bool = False) -> dict[int, int]:
    """Ask every connected node its partition-id; return client id -> node id. With
    `data_files` (client_data=node) every node must name its own data-file."""
    deadline = time.monotonic() + wait
    while len(nodes := sorted(grid.get_node_ids())) < num_clients:
        if time.monotonic() > deadline:
            raise ConfigError(f"num_clients: {num_clients}, but only {len(nodes)} SuperNode(s) "
                              f"connected within {wait:.0f} s; start one SuperNode per client")
        time.sleep(0.5)
    queries = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY)
               for n in nodes]
    node_of: dict[int, int] = {}
    without: list[int] = []  # client_data=node: the partitions whose node names no file
    for reply in grid.send_and_receive(queries, timeout=wait):
        if reply.has_error():
            log.warning("node %s did not answer the handshake: %s", reply.metadata.src_node_id,
                        reply.error.reason)
            continue
        node = reply.content.metric_records["node"]
        pid = int(node["partition-id"])
        if pid in node_of:
            raise ConfigError(f"two SuperNodes claim partition-id {pid}")
        node_of[pid] = reply.metadata.src_node_id
        if data_files and not int(node.get("has-data-file", 0)):
            without.append(pid)
    if without:
        pid = min(without)
        raise ConfigError(f"client_data: node, but the SuperNode(s) of partition-id "
                          f"{', '.join(map(str, sorted(without)))} name no data-file; start "
                          f"each with its file, e.g. --node-config 'partition-id={pid} "
                          "data-file=\"<its labelled file>\"'")
    missing = sorted(set(range(num_clients)) - set(node_of))
    if missing:
        raise ConfigError(f"no SuperNode serves client(s) {missing}; give each SuperNode "
                          f"--node-config 'partition-id=<0..{num_clients - 1}>'")
    return node_of


class FlowerEngine:
    """The Engine protocol (spry.engines.protocol) over a Flower Grid."""

    def __init__(self, grid: Grid, cfg: Config):
        self.grid, self.cfg = grid, cfg
        self.node_of = discover_clients(grid, cfg.num_clients,
                                        data_files=cfg.client_data == "node")
        self.failures: dict[int, str] = {}
        """The last `train` call's failed clients and why, as LocalEngine reports them
        (Server.run_round writes them to metrics.jsonl as failure_reasons)."""

    def _exchange(self, pairs: list[tuple[int, RecordDict]], message_type: str,
                  failures: dict[int, str] | None = None) -> list[RecordDict]:
        """Send one message per (client, content); return the replies' contents in the
        order sent (aggregation order must not depend on arrival order), failures left out
        (and named in `failures`, where given)."""
        failures = {} if failures is None else failures
        messages = [Message(content, dst_node_id=self.node_of[cid], message_type=message_type)
                    for cid, content in pairs]
        replies = self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout)
        by_id = {r.metadata.reply_to_message_id: r for r in replies}
        out = []
        for (cid, _), message in zip(pairs, messages):
            reply = by_id.get(message.metadata.message_id)
            if reply is None:
                failures[cid] = f"no reply within round_timeout={self.cfg.round_timeout}"
            elif reply.has_error():
                failures[cid] = f"{message_type} failed: {reply.error.reason}"
            else:
                out.append(reply.content)
                continue
            log.warning("client %d: %s", cid, failures[cid])
        return out

    def train(self, instructions: list[TrainInstruction]) -> list[ClientUpdate]:
        self.failures = {}
        contents = self._exchange([(i.client_id, records.train_content(i, self.cfg))
                                   for i in instructions], MessageType.TRAIN, self.failures)
        updates = [records.read_update(c) for c in contents]
        if self.cfg.dtype == "bfloat16":  # records widen bfloat16 to float32 in transit
            for u in updates:
                u.weights = {n: t.to(torch.bfloat16) for n, t in u.weights.items()}
        return updates

    def class_statistics(self, client_ids: list[int]) -> list:
        """Round 0 of head_init=class_means, as a QUERY message to each client's node."""
        contents = self._exchange([(cid, records.class_statistics_content(cid, self.cfg))
                                   for cid in client_ids], MessageType.QUERY)
        return [records.read_class_statistics(c) for c in contents]

    def evaluate(self, instructions: list[EvalInstruction]) -> list[ClientEval]:
        contents = self._exchange([(i.client_id, records.evaluate_content(i, self.cfg))
                                   for i in instructions], MessageType.EVALUATE)
        return [records.read_eval(c) for c in contents]

    def state_dict(self) -> dict:
        """Nothing: each node keeps its own state in its Flower Context."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
