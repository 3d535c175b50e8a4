"""A client's work: local training on its units, evaluation, personalization.

Engines call these functions; they never talk to the network. The model holds the
current global trainable weights when a function is called; only the tensors named in
`unit_params` move. What is task-specific (the loss, the scores) comes from the task
head (spry.tasks.heads); one step's estimate (`step_estimate`) and one batch stream
(`client_batches`) serve both communication modes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterator

import torch
from torch import nn

from spry.config import Config
from spry.data.batches import iterate_batches
from spry.estimators import Estimate
from spry.estimators.example_tangents import example_forward_gradient
from spry.estimators.guided import guided_estimate
from spry.methods import METHODS, make_estimator
from spry.models import HEAD_UNIT, list_units
from spry.seeds import derive_seed, seeded_global_rng, tangent_seed
from spry.tasks.classifier import classification_loss
from spry.tasks.heads import head_of
from spry.tasks.linear_head import head_gradient, head_param_names
from spry.tasks.pooling import is_pooled


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
    local_correct: int | None = None
    """personalization=round: test-split examples the client's trained model got right."""
    local_eval_seconds: float = 0.0
    """The time that score took (not in `seconds`, which is training's)."""


@dataclass
class ClientEval:
    client_id: int
    correct: int
    total: int
    loss: float
    personalized_correct: int | None = None


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
                  guide: dict[str, torch.Tensor] | None = None,
                  skip_zero_factors: bool | None = None):
    """One step's gradient estimate of `params` (and, with `head`, its exact gradient).

    Forward-gradient methods honour tangent_sharing and skip_zero_factors. The head's
    gradient comes from the pooled features and logits at w: read from the forward-gradient
    estimator's own primal pass (free), else (the zeroth-order estimators) from one extra
    forward pass without tangents. Backprop trains the head
    through autograd (exact_head is None). `guide` (guided_tangent): the direction whose
    component is made exact (spry.estimators.guided). `skip_zero_factors`: None follows
    cfg; per-iteration steps pass False (the server regenerates every unit tensor's tangent)."""
    forward = METHODS[cfg.method].estimator == "forward_gradient"
    perturbed = {n: p for n, p in params.items() if head is None or n not in head}
    skip_zero = cfg.skip_zero_factors if skip_zero_factors is None else skip_zero_factors
    if forward and skip_zero:
        skip = zero_factors(perturbed)
        perturbed = {n: p for n, p in perturbed.items() if n not in skip}
    capture = {} if head is not None else None
    if (forward and cfg.tangent_sharing == "example") or (head is not None and not perturbed):
        span = ({n for n in perturbed if ".lora_A." in n}
                if forward and cfg.tangent_space == "inputs" else ())
        est = example_forward_gradient(
            classification_loss(model, batch, per_example=True, capture=capture), perturbed, seeds,
            batch_size=len(batch["labels"]), capture=capture, chunk=cfg.tangent_chunk,
            input_span=span, token_mask=batch.get("attention_mask"),
            tangent_dtype=cfg.tangent_dtype)
    elif forward and head is not None:  # the jvp's own primal pass gives the head's input
        est = estimator(classification_loss(model, batch, capture=capture), perturbed, seeds,
                        capture=capture)
    else:
        est = estimator(head_of(cfg).loss(model, batch), perturbed, seeds) if perturbed else None
        if head is not None:  # the zeroth-order passes run at w ± εz: one more at w
            with torch.no_grad():
                loss = float(classification_loss(model, batch, capture=capture)(
                    {n: p.detach() for n, p in params.items()}))
            est = est or Estimate(loss=loss, grads={})
    if forward and cfg.guided_tangent and perturbed:
        est = guided_estimate(head_of(cfg).loss(model, batch), perturbed, est, guide,
                              cfg.tangent_dtype)
    if head is not None:
        gw, gb = head_gradient(capture["features"], capture["logits"], batch["labels"])
        est.grads.update({head[0]: gw, head[1]: gb})
    return est


def is_finite(est: Estimate) -> bool:
    """A step whose loss or directional derivatives are not finite is skipped: it would
    poison the optimizer state (per_epoch) or every replica (per_iteration)."""
    return math.isfinite(est.loss) and all(map(math.isfinite, est.scalars))


def client_batches(data, tokenizer, cfg: Config, round_seed: int, client_id: int,
                   epochs: int, max_steps: int | None) -> Iterator[dict[str, torch.Tensor]]:
    """The client's batches for a round: `epochs` shuffled passes, capped at max_steps,
    on cfg.device."""
    stream = (batch for epoch in range(epochs)
              for batch in iterate_batches(data, tokenizer, cfg.batch_size,
                                           seed=derive_seed(round_seed, "batches", client_id,
                                                            epoch)))
    stream = islice(stream, max_steps) if max_steps is not None else stream
    return ({k: v.to(cfg.device) for k, v in batch.items()} for batch in stream)


def local_train(model: nn.Module, data, tokenizer, unit_params: list[str], cfg: Config,
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
    optimizer = _optimizer(model, cfg, params, optimizer_state)
    losses, scalars, step, skipped = [], [], 0, 0
    model.train(cfg.train_dropout)
    # Dropout masks (where train_dropout is on) come from the global RNG inside
    # transformers; seed it per client and round so a run is reproducible, and restore it.
    with seeded_global_rng(derive_seed(round_seed, "dropout", client_id)):
        for batch in client_batches(data, tokenizer, cfg, round_seed, client_id,
                                    epochs if epochs is not None else cfg.local_epochs,
                                    max_steps):
            seeds = [tangent_seed(round_seed, client_id, step, k) for k in range(cfg.tangents)]
            est = step_estimate(model, batch, params, head, cfg, estimator, seeds,
                                guide=previous_update)
            step += 1
            if not is_finite(est):
                skipped += 1
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
        client_id=client_id, weights={n: p.detach().clone() for n, p in params.items()},
        num_examples=len(data),
        train_loss=sum(losses) / len(losses) if losses else float("nan"),
        steps=step, skipped_steps=skipped, seconds=time.perf_counter() - start,
        scalars=scalars)


def _optimizer(model: nn.Module, cfg: Config, params: dict[str, torch.Tensor],
               state: dict[str, dict[str, torch.Tensor]] | None) -> torch.optim.Optimizer:
    """The client optimizer over `params` (head tensors at head_lr), with the client's
    kept state (keep_client_optimizer) loaded."""
    head_names = set(_head_params(model)) & set(params)
    optimizer = make_client_optimizer(cfg, [p for n, p in params.items() if n not in head_names],
                                      [p for n, p in params.items() if n in head_names])
    for name, p in params.items():
        if state is not None and name in state:
            optimizer.state[p] = {k: v.clone() for k, v in state[name].items()}
    return optimizer


def _head_params(model: nn.Module) -> tuple[str, ...]:
    """The head unit's parameter names; empty where the model has no head unit (a
    verbalizer or generative LM scores with its frozen LM head)."""
    return next((u.params for u in list_units(model) if u.name == HEAD_UNIT), ())


def eval_precision(cfg: Config):
    """The context evaluation's forward passes run in: bfloat16 autocast with
    eval_dtype=bfloat16 (matmuls in bf16, reductions such as softmax and layer norm kept
    in float32 by autocast's op lists), else nothing changes."""
    return torch.autocast(torch.device(cfg.device).type, dtype=torch.bfloat16,
                          enabled=cfg.eval_dtype == "bfloat16")


@torch.no_grad()
def evaluate(model: nn.Module, data, tokenizer, cfg: Config) -> tuple[int, int, float]:
    """(correct, total, summed loss) of the model as it stands, as the task head scores
    it (QA: an exact match under the SQuAD v2 rules counts as correct)."""
    with eval_precision(cfg):
        return head_of(cfg).evaluate(model, data, tokenizer, cfg)


@torch.no_grad()
def held_out_metrics(model: nn.Module, data, tokenizer, cfg: Config) -> dict[str, float]:
    """The held-out split's metrics for metrics.jsonl: `test_accuracy` always (exact match
    for QA), plus the task's own (SQuAD v2 `test_f1`, MultiRC `test_f1a`); fractions."""
    with eval_precision(cfg):
        return head_of(cfg).held_out_metrics(model, data, tokenizer, cfg)
