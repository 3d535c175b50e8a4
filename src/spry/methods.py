"""What `method=` selects: a gradient estimator and whether the server splits the units."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import torch

from spry.estimators import ESTIMATORS

if TYPE_CHECKING:
    from spry.config import Config


@dataclass(frozen=True)
class Method:
    estimator: str
    split: bool
    """True: each client trains only the units dealt to it (Spry). False: every client
    trains every unit."""
    local_steps: int | None = None
    """Fixed local steps per round (FedSGD: 1), overriding local_epochs/max_steps for
    training; personalization still runs its F epochs."""
    uses_previous_update: bool = False
    """The server sends the last round's global update Δ with the weights (FwdLLM)."""


METHODS: dict[str, Method] = {
    "spry": Method("forward_gradient", split=True),
    # Forward gradient with no split: each client perturbs all trainable weights.
    "fedfgd": Method("forward_gradient", split=False),
    # Backprop FL; the server optimizer picks FedAvg / FedAdam / FedYogi.
    "backprop": Method("backprop", split=False),
    # Split ablation: Spry's unit split with exact gradients.
    "backprop_split": Method("backprop", split=True),
    # FedSGD (McMahan et al. 2017): one backprop step per exchange and the server averages
    # the gradients. Each client takes exactly one plain SGD step of client_lr from the
    # global point and returns w − lr·g_c; the example-weighted mean over clients is
    # w − lr·mean_c g_c, so FedAvg (server lr 1) is FedSGD exactly and FedAdam/FedYogi step
    # on the averaged gradient. Gradients are averaged, never summed or chained from one
    # client to the next (the published baseline compounded them). Needs
    # client_optimizer=sgd: Adam's first step is sign(g), not g.
    "fedsgd": Method("backprop", split=False, local_steps=1),
    # FedMeZO: MeZO's in-place SPSA, z regenerated from seeds; K = tangents.
    "fedmezo": Method("spsa", split=False),
    # BAFFLE: K = tangents Gaussian central differences, scaled to an unbiased estimate.
    "baffle": Method("finite_difference", split=False),
    # FwdLLM: finite differences over perturbations chosen by cosine similarity to the
    # previous global update, as many as the variance needs (fwdllm_* settings).
    "fwdllm": Method("fwdllm", split=False, uses_previous_update=True),
}


def sends_previous_update(cfg: "Config") -> bool:
    """The server sends the last global update Δ of the client's units: FwdLLM ranks its
    perturbations by it; guided_tangent takes one tangent along it."""
    return METHODS[cfg.method].uses_previous_update or cfg.guided_tangent


def make_estimator(cfg: "Config", previous_update: Mapping[str, torch.Tensor] | None = None
                   ) -> Callable:
    """The method's estimator with its settings bound: `(loss_fn, params, seeds) -> Estimate`."""
    name = METHODS[cfg.method].estimator
    estimator = ESTIMATORS[name]
    if name in ("spsa", "finite_difference"):
        return functools.partial(estimator, epsilon=cfg.fd_epsilon)
    if name == "fwdllm":
        return functools.partial(estimator, previous_update=previous_update,
                                 epsilon=cfg.fd_epsilon, candidates=cfg.fwdllm_candidates,
                                 max_perturbations=cfg.fwdllm_max_perturbations,
                                 variance_threshold=cfg.fwdllm_variance_threshold)
    return estimator
