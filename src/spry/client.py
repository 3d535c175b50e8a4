"""A client's work: local training on its units, evaluation, personalization.

Engines call these functions; they never talk to the network. The model holds the
current global trainable weights when a function is called; only the tensors named in
`unit_params` move.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from spry.config import Config
from spry.data import Encoded, iterate_batches
from spry.methods import METHODS, make_estimator
from spry.federation.replay import tangent_seed
from spry.seeds import derive_seed, seeded_global_rng


@dataclass
class ClientUpdate:
    client_id: int
    weights: dict[str, torch.Tensor]
    num_examples: int
    train_loss: float
    steps: int
    skipped_steps: int = 0
    seconds: float = 0.0
    scalars: list[list[float]] = field(default_factory=list)
    """Per step, the K directional derivatives (forward-gradient methods)."""


@dataclass
class ClientEval:
    client_id: int
    correct: int
    total: int
    loss: float
    personalized_correct: int | None = None


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """L(params) on one batch, with `params` swapped into the model functionally."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def loss_fn(params):
        logits = functional_call(model, params, args=(), kwargs=inputs).logits
        return F.cross_entropy(logits.float(), labels)

    return loss_fn


def task_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """The loss a batch asks for: span cross-entropy for extractive QA (task_head=span),
    answer-token cross-entropy for generative QA (task_head=generate), else label
    cross-entropy (classifier and verbalizer heads both give label logits)."""
    if "target_mask" in batch:
        from spry.tasks.squad_generate import answer_loss

        return answer_loss(model, batch)
    if "start_positions" in batch:
        from spry.tasks.squad import span_loss

        return span_loss(model, batch)
    return classification_loss(model, batch)


def make_client_optimizer(cfg: Config, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.client_optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.client_lr, weight_decay=cfg.weight_decay)
    if cfg.client_optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.client_lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.client_lr, weight_decay=cfg.weight_decay)


def _to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def local_train(model: nn.Module, data: Encoded, tokenizer, unit_params: list[str], cfg: Config,
                round_seed: int, client_id: int, epochs: int | None = None,
                optimizer_state: dict[str, dict[str, torch.Tensor]] | None = None,
                previous_update: dict[str, torch.Tensor] | None = None) -> ClientUpdate:
    """E local epochs (or `max_steps`) of the method's estimator + the client optimizer.

    `optimizer_state` (cfg.keep_client_optimizer): the client's optimizer state per
    parameter name; read before training and updated in place after it.
    `previous_update`: the last round's global update Δ (method=fwdllm ranks its
    perturbations by their cosine to it; None on the first round).
    """
    start = time.perf_counter()
    estimator = make_estimator(cfg, previous_update)
    # FedSGD takes exactly one step per round; personalization (epochs given) runs its F.
    max_steps = cfg.max_steps
    if epochs is None and METHODS[cfg.method].local_steps is not None:
        max_steps = METHODS[cfg.method].local_steps
    named = dict(model.named_parameters())
    params = {n: named[n] for n in unit_params}
    optimizer = make_client_optimizer(cfg, list(params.values()))
    for name, p in params.items():
        if optimizer_state is not None and name in optimizer_state:
            optimizer.state[p] = {k: v.clone() for k, v in optimizer_state[name].items()}
    losses, scalars, step, skipped = [], [], 0, 0
    model.train()
    # Dropout masks come from the global RNG inside transformers; seed it per client and
    # round so a run is reproducible, and restore it afterwards.
    with seeded_global_rng(derive_seed(round_seed, "dropout", client_id)):
        for epoch in range(epochs if epochs is not None else cfg.local_epochs):
            batches = iterate_batches(data, tokenizer, cfg.batch_size,
                                      seed=derive_seed(round_seed, "batches", client_id, epoch))
            for batch in batches:
                if max_steps is not None and step >= max_steps:
                    break
                loss_fn = task_loss(model, _to_device(batch, cfg.device))
                seeds = [tangent_seed(round_seed, client_id, step, k) for k in range(cfg.tangents)]
                est = estimator(loss_fn, params, seeds)
                step += 1
                if not math.isfinite(est.loss) or not all(map(math.isfinite, est.scalars)):
                    skipped += 1  # a non-finite loss would poison the optimizer state
                    continue
                for name, p in params.items():
                    p.grad = est.grads[name].to(p.dtype)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(est.loss)
                scalars.append(est.scalars)
    model.eval()
    if optimizer_state is not None:
        optimizer_state.update({name: {k: v.detach().clone() for k, v in optimizer.state[p].items()}
                                for name, p in params.items() if optimizer.state.get(p)})
    return ClientUpdate(
        client_id=client_id,
        weights={n: p.detach().clone() for n, p in params.items()},
        num_examples=len(data),
        train_loss=sum(losses) / len(losses) if losses else float("nan"),
        steps=step, skipped_steps=skipped, seconds=time.perf_counter() - start,
        scalars=scalars)


@torch.no_grad()
def evaluate(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> tuple[int, int, float]:
    """(correct, total, summed loss) of the model as it stands.

    QA counts a question as correct on an exact match (SQuAD v2 rules)."""
    from spry.tasks.squad_generate import GenEncoded, evaluate_generation

    if isinstance(data, GenEncoded):
        return evaluate_generation(model, data, tokenizer, cfg)
    if not isinstance(data, Encoded):
        from spry.tasks.squad import evaluate_spans

        return evaluate_spans(model, data, tokenizer, cfg)
    predictions, labels, loss = predict_labels(model, data, tokenizer, cfg)
    return sum(p == y for p, y in zip(predictions, labels)), len(labels), loss


@torch.no_grad()
def predict_labels(model: nn.Module, data: Encoded, tokenizer, cfg: Config
                   ) -> tuple[list[int], list[int], float]:
    """(predicted labels, gold labels, summed cross-entropy) over a classification split."""
    model.eval()
    predictions, golds, loss = [], [], 0.0
    for batch in iterate_batches(data, tokenizer, cfg.eval_batch_size):
        batch = _to_device(batch, cfg.device)
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        predictions += logits.argmax(-1).tolist()
        golds += labels.tolist()
    return predictions, golds, loss


def held_out_metrics(model: nn.Module, data, tokenizer, cfg: Config) -> dict[str, float]:
    """The held-out split's metrics for metrics.jsonl: `test_accuracy` always (exact match
    for QA), plus the task's own — SQuAD v2 F1 (`test_f1`), MultiRC's F1a (`test_f1a`);
    fractions, not percent."""
    from spry.tasks.metrics import binary_f1
    from spry.tasks.squad_generate import GenEncoded, score_generation

    if isinstance(data, GenEncoded):
        scores = score_generation(model, data, tokenizer, cfg, with_loss=False)
    elif not isinstance(data, Encoded):
        from spry.tasks.squad import evaluate_qa

        scores = evaluate_qa(model, data, tokenizer, cfg.eval_batch_size, cfg.device)
    else:
        predictions, labels, _ = predict_labels(model, data, tokenizer, cfg)
        out = {"test_accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(labels)}
        if cfg.dataset == "multirc":
            out["test_f1a"] = binary_f1(predictions, labels)
        return out
    return {"test_accuracy": scores["exact"] / 100, "test_f1": scores["f1"] / 100}
