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
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from spry.config import Config
from spry.data import Encoded, iterate_batches
from spry.estimators import Estimate
from spry.estimators.example_tangents import example_forward_gradient
from spry.estimators.guided import guided_estimate
from spry.tasks.classifier import head_gradient, head_param_names, is_pooled
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


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor],
                        per_example: bool = False, capture: dict | None = None):
    """L(params) on one batch, with `params` swapped into the model functionally.

    `per_example`: the (B,) losses instead of their mean (spry.estimators.example_tangents).
    `capture`: filled with the first call's pooled features and logits (their primal
    values), from which the exact head gradient is computed (spry.tasks.classifier)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def loss_fn(params):
        out = functional_call(model, params, args=(), kwargs=inputs)
        if capture is not None and "logits" not in capture:
            capture["features"] = fwAD.unpack_dual(out.features).primal.detach()
            capture["logits"] = fwAD.unpack_dual(out.logits).primal.detach()
        # Widen bfloat16 to float32, keep float64 (the estimator tests' precision).
        logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))
        if per_example:
            return F.cross_entropy(logits, labels, reduction="none")
        return F.cross_entropy(logits, labels)

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


def make_client_optimizer(cfg: Config, params: list[torch.Tensor],
                          head: list[torch.Tensor] = ()) -> torch.optim.Optimizer:
    """The local optimizer; `head` tensors get head_lr when it is set."""
    groups = [{"params": list(params)}] if params or not head else []
    if head:
        groups.append({"params": list(head), "lr": cfg.head_lr or cfg.client_lr})
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return kind[cfg.client_optimizer](groups, lr=cfg.client_lr, weight_decay=cfg.weight_decay)


def exact_head(model: nn.Module, cfg: Config, unit_params) -> tuple[str, str] | None:
    """(weight, bias) names of the linear head when this client trains it with its exact
    closed-form gradient (head_gradient=exact, a pooled head, a non-backprop method)."""
    if (cfg.head_gradient != "exact" or METHODS[cfg.method].estimator == "backprop"
            or not is_pooled(model)):
        return None
    head = _head_params(model)
    if not head or not set(head) <= set(unit_params):
        return None
    return head_param_names(head)


def zero_factors(params: dict[str, torch.Tensor]) -> set[str]:
    """LoRA A factors whose B partner is exactly zero: ∂L/∂A = Bᵀ(...) = 0 exactly."""
    skip = set()
    for name in params:
        if ".lora_A." in name:
            partner = params.get(name.replace(".lora_A.", ".lora_B."))
            if partner is not None and not bool(partner.detach().any()):
                skip.add(name)
    return skip


def step_estimate(model: nn.Module, batch: dict[str, torch.Tensor], params: dict,
                  head: tuple[str, str] | None, cfg: Config, estimator, seeds: list[int],
                  guide: dict[str, torch.Tensor] | None = None):
    """One step's gradient estimate of `params` (and, with `head`, its exact gradient).

    Forward-gradient methods honour tangent_sharing and skip_zero_factors. The head's
    gradient comes from the pooled features and logits at w: read from the per-example
    estimator's own forward pass (free), else (one shared tangent, the zeroth-order
    estimators) from one extra forward pass without tangents. Backprop trains the head
    through autograd (exact_head is None). `guide` (guided_tangent): the direction whose
    component is made exact (spry.estimators.guided)."""
    forward = METHODS[cfg.method].estimator == "forward_gradient"
    perturbed = {n: p for n, p in params.items() if head is None or n not in head}
    if forward and cfg.skip_zero_factors:
        skip = zero_factors(perturbed)
        perturbed = {n: p for n, p in perturbed.items() if n not in skip}
    capture = {} if head is not None else None
    if (forward and cfg.tangent_sharing == "example") or (head is not None and not perturbed):
        est = example_forward_gradient(
            classification_loss(model, batch, per_example=True, capture=capture), perturbed, seeds)
    else:
        est = estimator(task_loss(model, batch), perturbed, seeds) if perturbed else None
        if head is not None:  # torch.func's jvp hides its primals: read the head's input
            with torch.no_grad():
                loss = float(classification_loss(model, batch, capture=capture)(
                    {n: p.detach() for n, p in params.items()}))
            est = est or Estimate(loss=loss, grads={})
    if forward and cfg.guided_tangent and perturbed:
        est = guided_estimate(task_loss(model, batch), perturbed, est, guide)
    if head is not None:
        gw, gb = head_gradient(capture["features"], capture["logits"], batch["labels"])
        est.grads.update({head[0]: gw, head[1]: gb})
    return est


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
    head = exact_head(model, cfg, unit_params)
    head_names = set(_head_params(model)) & set(unit_params)  # they take head_lr
    optimizer = make_client_optimizer(cfg, [p for n, p in params.items() if n not in head_names],
                                      [p for n, p in params.items() if n in head_names])
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
                seeds = [tangent_seed(round_seed, client_id, step, k) for k in range(cfg.tangents)]
                est = step_estimate(model, _to_device(batch, cfg.device), params, head, cfg,
                                    estimator, seeds, guide=previous_update)
                step += 1
                if not math.isfinite(est.loss) or not all(map(math.isfinite, est.scalars)):
                    skipped += 1  # a non-finite loss would poison the optimizer state
                    continue
                for name, p in params.items():
                    # A tensor the step did not perturb (a zero-gradient factor) stays put.
                    p.grad = est.grads[name].to(p.dtype) if name in est.grads else None
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


def _head_params(model: nn.Module) -> tuple[str, ...]:
    """The head unit's parameter names; empty where the model has no head unit."""
    from spry.models import list_units, HEAD_UNIT

    if getattr(model, "task_head", None) in ("verbalizer", "generate"):
        return ()
    return next((u.params for u in list_units(model) if u.name == HEAD_UNIT), ())


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
        # How many classes the model predicts at all: 1 flags a constant predictor, whose
        # accuracy is just the majority-class rate (spry.experiment warns).
        out = {"test_accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(labels),
               "test_predicted_classes": len(set(predictions))}
        if cfg.dataset == "multirc":
            out["test_f1a"] = binary_f1(predictions, labels)
        return out
    return {"test_accuracy": scores["exact"] / 100, "test_f1": scores["f1"] / 100}
