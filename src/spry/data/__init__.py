"""Data: a task from recipes, files or the hub, split into Dirichlet(α) clients and encoded
by the task head's encoder (labelled text by default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from spry.config import Config, ConfigError
from spry.data.batches import Encoded, encode, iterate_batches
from spry.data.examples import Examples
from spry.data.partition import (PartitionError, dirichlet_partition, natural_partition,
                                 train_test_split)
from spry.data.sources import Task, load_task, num_strata, read_node_file, strata
from spry.seeds import derive_seed, generator


@dataclass
class ClientData:
    client_id: int
    train: Encoded
    test: Encoded
    label_counts: list[int]


@dataclass
class FederatedData:
    task: Task
    clients: list[ClientData]
    test: Encoded | None

    @property
    def num_labels(self) -> int:
        """The head's outputs: one per class; one for a score (no label names)."""
        return len(self.task.label_names) or 1

    def cut_share(self, max_length: int) -> float:
        """The share of the clients' training examples encoded at max_length tokens: cut
        there by truncation (or exactly that long)."""
        lengths = [c.train.length(i) for c in self.clients for i in range(len(c.train))]
        return sum(n >= max_length for n in lengths) / max(len(lengths), 1)


def build_federated_data(cfg: Config, tokenizer, task: Task | None = None,
                         encoder: Callable = encode) -> FederatedData:
    """Load, subsample, partition (Dirichlet α, or partition_by's column), split 80/20 per
    client, tokenize with `encoder(examples, tokenizer, max_length)` (the task head's)."""
    task = task or load_task(cfg)
    pool = task.train
    if cfg.max_train_examples and len(pool) > cfg.max_train_examples:
        keep = torch.randperm(len(pool), generator=generator(derive_seed(cfg.seed, "subsample")))
        pool = pool.subset(sorted(keep[: cfg.max_train_examples].tolist()))
    try:
        if pool.groups is not None:  # partition_by: the clients the data names
            parts = natural_partition(pool.groups, cfg.num_clients, cfg.partition_by)
        else:
            classes = strata(pool.labels, cfg)  # a score's quantile bin (regression)
            parts = dirichlet_partition(classes, cfg.num_clients, cfg.dirichlet_alpha,
                                        seed=derive_seed(cfg.seed, "partition"),
                                        num_labels=num_strata(task, cfg))
    except PartitionError as exc:
        raise ConfigError(str(exc)) from None
    clients = []
    for cid, indices in enumerate(parts):
        train_idx, test_idx = train_test_split(indices, cfg.client_test_fraction,
                                               seed=derive_seed(cfg.seed, "split", cid))
        clients.append(ClientData(
            cid, encoder(pool.subset(train_idx), tokenizer, cfg.max_length),
            encoder(pool.subset(test_idx), tokenizer, cfg.max_length),
            label_counts([pool.labels[i] for i in indices], task.label_names)))
    test = held_out_split(cfg, tokenizer, task, encoder)
    if test is None and not any(len(c.test) for c in clients):
        sizes = sorted(len(p) for p in parts)
        raise ConfigError(
            f"test_fraction: nothing would score the model: {task.name} has no held-out split, "
            f"and client_test_fraction={cfg.client_test_fraction:g} of each client's examples "
            f"({len(pool)} dealt to {cfg.num_clients} clients: {sizes[0]}–{sizes[-1]} each) "
            "rounds to none; hold out part of the data (test_fraction=0.2), give "
            "test_file=<a labelled file>, or deal it to fewer clients (num_clients)")
    return FederatedData(task, clients, test)


def held_out_split(cfg: Config, tokenizer, task: Task, encoder: Callable = encode
                   ) -> Encoded | None:
    """The task's global test split, encoded: a seeded subset of at most max_test_examples."""
    if task.test is None:
        return None
    held_out = task.test
    if cfg.max_test_examples and len(held_out) > cfg.max_test_examples:
        keep = torch.randperm(len(held_out), generator=generator(derive_seed(cfg.seed, "test")))
        held_out = held_out.subset(sorted(keep[: cfg.max_test_examples].tolist()))
    return encoder(held_out, tokenizer, cfg.max_length)


def node_client_data(cfg: Config, tokenizer, path: str | Path, client_id: int,
                     encoder: Callable = encode) -> ClientData:
    """client_data=node: this SuperNode's client from its own file, split into local train and
    test as a dealt client's share is (client_test_fraction, seeded by the client id)."""
    examples = read_node_file(Path(path), cfg)
    if len(examples) < 2:
        raise ConfigError(f"data-file: {path} has {len(examples)} example(s); a client needs at "
                          "least 2 (one to train, one to test)")
    train_idx, test_idx = train_test_split(list(range(len(examples))), cfg.client_test_fraction,
                                           seed=derive_seed(cfg.seed, "split", client_id))
    return ClientData(client_id, encoder(examples.subset(train_idx), tokenizer, cfg.max_length),
                      encoder(examples.subset(test_idx), tokenizer, cfg.max_length),
                      label_counts(examples.labels, cfg.label_names or ()))


def label_counts(labels: list, names) -> list[int]:
    """A client's examples per class, in the order of the label `names` (a multi-hot row,
    task_head=multilabel, counts for each label it has; a list of tags, task_head=token,
    each of its words); with no names
    (task_head=regression: scores) all its examples are one class."""
    if not names:
        return [len(labels)]
    counts = [0] * len(names)
    for label in labels:
        if isinstance(label, list):  # task_head=token: a sentence's tags, one a word
            for tag in label:
                counts[tag] += 1
        elif isinstance(label, tuple):
            for c, hot in enumerate(label):
                counts[c] += int(hot)
        else:
            counts[label] += 1
    return counts


__all__ = ["ClientData", "Encoded", "Examples", "FederatedData", "Task", "build_federated_data",
           "dirichlet_partition", "encode", "held_out_split", "iterate_batches", "load_task",
           "node_client_data", "train_test_split"]
