"""What a client does with one message, and what it keeps between rounds — every engine.

A client holds its own copy of the trainable weights (`ClientState.received`). A train
message overwrites in the copy whatever it carries: with context=global the whole current
trainable state, with context=local only the client's units (SPEC, round step 2) — never
the whole adapter — so the other trainable tensors its forward pass reads (frozen on this
client) keep the values the server last sent it, or the model's initial values, which
every node rebuilds identically from the seeded initialisation. Local training changes
the model, not the copy: the copy is what the server told this client.

Evaluation messages carry the global trainable weights (generalized accuracy is the
global model's) and are a measurement only: they leave the copy alone, so the training
trajectory does not depend on `eval_every`.

With `keep_client_optimizer`, the client's optimizer state (per parameter name) lives here
too and resumes when a unit comes back to the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from spry.client import ClientEval, ClientUpdate, evaluate, local_train
from spry.config import Config
from spry.data import ClientData
from spry.data.batches import iterate_batches
from spry.messages import EvalInstruction, TrainInstruction
from spry.models import load_trainable
from spry.seeds import derive_seed, generator
from spry.tasks.linear_head import (ClassStatistics, class_statistics, labelled_tokens,
                                   multilabel_statistics, score_statistics)


@dataclass
class ClientState:
    received: dict[str, torch.Tensor] = field(default_factory=dict)
    """The latest value the server sent this client, per trainable tensor."""
    optimizer: dict[str, dict[str, torch.Tensor]] | None = None
    """Optimizer state per parameter name (keep_client_optimizer), else None."""

    @classmethod
    def fresh(cls, cfg: Config) -> "ClientState":
        return cls(optimizer={} if cfg.keep_client_optimizer else None)


def train_client(model: nn.Module, initial: dict[str, torch.Tensor], state: ClientState,
                 ins: TrainInstruction, data: ClientData, tokenizer, cfg: Config) -> ClientUpdate:
    """Apply a train message to the client's copy, load the copy, train the units."""
    state.received.update(ins.weights)
    load_trainable(model, {**initial, **state.received})
    update = local_train(model, data.train, tokenizer, ins.unit_params, cfg, ins.round_seed,
                         ins.client_id, optimizer_state=state.optimizer,
                         previous_update=ins.previous_update)
    if ins.score_local and len(data.test):
        # personalization=round: the model this round's training left is the client's
        # personalized model, so scoring it costs one pass over the test split and no
        # second round of training.
        start = time.perf_counter()
        update.local_correct = evaluate(model, data.test, tokenizer, cfg)[0]
        update.local_eval_seconds = time.perf_counter() - start
    return update


@torch.no_grad()
def round_zero_features(model: nn.Module, client_id: int, data: ClientData, tokenizer,
                        cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, labels) of at most head_init_examples of the client's training
    examples (a seeded choice), one forward pass each in eval mode, no backward: what
    round 0's statistics are made of (task_head=token: every labelled token's state and
    tag, from at most head_init_examples sentences)."""
    model.eval()
    train = data.train
    order = torch.randperm(len(train), generator=generator(
        derive_seed(cfg.seed, "head-init", client_id))).tolist()
    keep = sorted(order[: cfg.head_init_examples] if cfg.head_init_examples else order)
    features, labels = [], []
    for batch in iterate_batches(train.subset(keep), tokenizer, cfg.eval_batch_size):
        y = batch.pop("labels")
        out = model(**{k: v.to(cfg.device) for k, v in batch.items()})
        f = out.features
        if f.dim() == 3:  # task_head=token: each labelled token is an example
            f, _, y = labelled_tokens(f, out.logits, y.to(f.device))
        labels.append(y.cpu())
        features.append(f)
    if not features:
        return torch.zeros(0, model.config.hidden_size), torch.zeros(0, dtype=torch.long)
    return torch.cat(features).float().cpu(), torch.cat(labels)


def client_class_statistics(model: nn.Module, initial: dict[str, torch.Tensor], client_id: int,
                            data: ClientData, tokenizer, cfg: Config):
    """Round 0 of head_init=class_means or lda: the client's per-class sums of pooled
    features (lda: and their within-class scatter) over round_zero_features's examples
    (spry.tasks.linear_head.ClassStatistics); for scores (task_head=regression) those of
    the features with the score appended; for sets of labels (task_head=multilabel) a sum
    per label and one of all (multilabel_statistics)."""
    start = time.perf_counter()
    load_trainable(model, initial)
    features, labels = round_zero_features(model, client_id, data, tokenizer, cfg)
    if cfg.task_head == "regression":
        stats = score_statistics(features, labels)
    elif cfg.task_head == "multilabel":
        stats = multilabel_statistics(features, labels, len(data.label_counts),
                                      scatter=cfg.head_init == "lda")
    else:
        stats = class_statistics(features, labels, len(data.label_counts),
                                 scatter=cfg.head_init == "lda")
    return ClassStatistics(client_id, *stats[:3], time.perf_counter() - start, *stats[3:])


def evaluate_client(model: nn.Module, ins: EvalInstruction, data: ClientData, tokenizer,
                    cfg: Config) -> ClientEval:
    """The global model on the client's test split; then, with F > 0 in the message,
    personalized accuracy after F local epochs on its units (personalization=global; under
    `round` the message carries F=0 and the train reply carried the score)."""
    load_trainable(model, ins.weights)
    correct, total, loss = evaluate(model, data.test, tokenizer, cfg)
    result = ClientEval(ins.client_id, correct, total, loss)
    if ins.personalization_epochs and total:
        seed = derive_seed(ins.round_seed, "personalize")
        local_train(model, data.train, tokenizer, ins.unit_params, cfg, seed, ins.client_id,
                    epochs=ins.personalization_epochs)
        result.personalized_correct = evaluate(model, data.test, tokenizer, cfg)[0]
    return result
