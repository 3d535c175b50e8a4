"""The defaults that follow other settings: per recipe, per optimizer, per method."""

from __future__ import annotations

from typing import Any

from spry.config.choices import (NO_EXAMPLE_TANGENTS, POOLED_HEAD_INITS, POOLED_HEADS,
                                 SHARED_TANGENT_DEFAULT)
from spry.methods import METHODS

Config = Any
"""spry.config.schema.Config, which resolves its defaults here: not imported, so the
schema stands above this module (no import circle)."""

RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    # What this project measured to learn at CPU budgets (docs/learning.md): the head reads
    # the feature the model was trained to produce, starts from federated class means and
    # takes its exact gradient; forward gradients go to the adapters only: TinyLoRA's few
    # numbers a module, where a K=1 guess is sharp (LoRA: one tangent per example and none
    # on a factor whose gradient is exactly zero). The head is trained by every client
    # (head=shared): its exact gradient costs nothing. The estimators train without
    # dropout (the same accuracy, a cheaper step; backprop keeps it: BACKPROP_TRAIN_DROPOUT).
    # peft comes first: tangent_sharing follows it. Round 0 solves linear discriminant
    # analysis from the clients' statistics (since 2026-12-03; before, class means): at
    # round 0 +1.1 SST-2, +2.5 AG News, +0.4 MNLI over class means, level with a central
    # logistic probe (benchmarks/head_init.py, docs/learning.md).
    # Personalized accuracy scores the model each client's own training of the round left
    # (no second training pass: a user's first run on a 4,000-row file spent 86 % of its
    # time on the paper's F=5 personalization epochs, docs/learning.md).
    "spry": dict(peft="tinylora", pooling="auto", head_init="lda",
                 head_gradient="exact", tangent_sharing="example", skip_zero_factors=True,
                 head="shared", train_dropout=False, personalization="round"),
    # The paper's recipe (Panchal et al. 2024): the architecture's own head, randomly
    # initialised, one shared tangent over every trainable tensor of the client.
    "paper": dict(peft="lora", pooling="model", head_init="random", head_gradient="estimator",
                  tangent_sharing="batch", skip_zero_factors=False, head="split",
                  train_dropout=True, personalization="global"),
}

# Defaults that follow another choice (None in the schema): the server's step size follows
# its optimizer (FedAvg's mean replaces the weights, FedAvgM's momentum of it steps as far
# in steady state; the paper's FedYogi steps 1e-2).
SERVER_LR = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 1e-2, "fedyogi": 1e-2}
# The client's learning rate per recipe and method (None: every other method). The paper
# uses AdamW 1e-4 throughout; recipe=spry takes the rate measured here where the methods
# table has one (Method.measured_client_lr: docs/learning.md, docs/baselines.md).
CLIENT_LR = {"spry": {None: 1e-4, **{name: method.measured_client_lr
                                     for name, method in METHODS.items()
                                     if method.measured_client_lr is not None}},
             "paper": {None: 1e-4}}
# TinyLoRA's v under Adam(W): 1e-2 for every method (docs/learning.md, the central probe:
# backprop learns faster at 1e-2 than 1e-3, and the forward gradient at 1e-2 follows it).
TINYLORA_CLIENT_LR = 1e-2
# The class-mean head under Adam(W): 1e-3 walked it off its start in 40 rounds, 1e-4 holds it.
CLASS_MEAN_HEAD_LR = 1e-4
# The token head (task_head=token) under Adam(W): its round-0 discriminant starts far from
# its optimum (WNUT-17: loss 0.571 against a logistic probe's 0.335), and 1e-3 lowered the
# held-out loss and raised entity F1 for every method in the grid (docs/tokens.md).
TOKEN_HEAD_LR = 1e-3
# Backprop keeps the model's dropout under every recipe: it regularises exact-gradient
# finetuning; only the estimators lose by its mask (noise in their estimate, a multiply on
# every tangent).
BACKPROP_TRAIN_DROPOUT = True
# M, the clients a round samples: the paper's 10, or every client where there are fewer
# (num_clients=4 alone is a complete setting, not an error).
CLIENTS_PER_ROUND = 10
CHOICE_DEFAULTS = ("clients_per_round", "server_lr", "client_lr", "head_lr")
"""In this order: head_lr reads client_lr."""
ADAMS = ("adam", "adamw")


def resolved_default(cfg: Config, name: str) -> tuple[Any, str]:
    """(value, the settings it follows) for a setting left unset."""
    if name == "clients_per_round":
        if not isinstance(cfg.num_clients, int):  # the type check names num_clients next
            return CLIENTS_PER_ROUND, "num_clients"
        return min(CLIENTS_PER_ROUND, cfg.num_clients), f"num_clients={cfg.num_clients}"
    if name == "server_lr":
        return SERVER_LR[cfg.server_optimizer], f"server_optimizer={cfg.server_optimizer}"
    if name == "client_lr":
        if (cfg.recipe == "spry" and cfg.peft == "tinylora" and cfg.client_optimizer in ADAMS
                and METHODS[cfg.method].local_steps is None):
            return TINYLORA_CLIENT_LR, (f"recipe=spry, peft=tinylora, "
                                        f"client_optimizer={cfg.client_optimizer}")
        lrs = CLIENT_LR[cfg.recipe]
        return lrs.get(cfg.method, lrs[None]), f"recipe={cfg.recipe}, method={cfg.method}"
    if name == "head_lr":
        if (cfg.recipe == "spry" and cfg.head_init in POOLED_HEAD_INITS
                and cfg.task_head in POOLED_HEADS and cfg.client_optimizer in ADAMS):
            lr = TOKEN_HEAD_LR if cfg.task_head == "token" else CLASS_MEAN_HEAD_LR
            return lr, (f"recipe=spry, head_init={cfg.head_init}, "
                        + ("task_head=token, " if cfg.task_head == "token" else "")
                        + f"client_optimizer={cfg.client_optimizer}")
        return None, "client_lr"
    because = f"recipe={cfg.recipe}" + (f", method={cfg.method}" if name == "train_dropout"
                                        else "")
    return _recipe_default(cfg, name), because


def _recipe_default(cfg: Config, name: str) -> Any:
    """The recipe's value for `name`, where this run can use it."""
    value = RECIPE_DEFAULTS[cfg.recipe][name]
    # Per-example tangents need per-example losses (the classifier head) and linear-layer
    # tensors (not IA3's scales or BitFit's LayerNorm biases); per-iteration uploads K
    # scalars a step, so it keeps one tangent per batch and the head on the estimator.
    if name == "tangent_sharing" and (cfg.peft in (*NO_EXAMPLE_TANGENTS, *SHARED_TANGENT_DEFAULT)
                                      or cfg.task_head not in POOLED_HEADS
                                      or cfg.communication == "per_iteration"):
        return "batch"
    if name == "head_gradient" and cfg.communication == "per_iteration":
        return "estimator"
    if name == "personalization" and cfg.communication == "per_iteration":
        return "global"  # per_iteration clients keep no model of their own
    if name == "train_dropout" and METHODS[cfg.method].estimator == "backprop":
        return BACKPROP_TRAIN_DROPOUT
    if name == "head" and cfg.task_head in ("verbalizer", "generate"):
        return "split"  # no head unit to share
    # The architecture's own head (pooling=model) is no single linear layer on a pooled
    # feature: no class means, no closed-form gradient for it.
    if name == "head_init" and cfg.pooling == "model":
        return "random"
    if name == "head_gradient" and cfg.pooling == "model":
        return "estimator"
    return value
