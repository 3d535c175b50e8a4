"""What `method=` selects: a gradient estimator and whether the server splits the units.

The one place the methods are named: spry.config validates `method` against this table,
and `spry bench` and `spry compare` read their modes from it. Importable without torch
(the estimators load when one is made), so the config can check a name cheaply.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import torch

Config = Any
"""spry.config.Config: not imported, since the config validates `method` against this
table (config imports methods, never the other way)."""

# (estimator keyword, Config setting) pairs a method binds into its estimator.
FORWARD_GRADIENT_SETTINGS = (("chunk", "tangent_chunk"), ("tangent_dtype", "tangent_dtype"))
FINITE_DIFFERENCE_SETTINGS = (("epsilon", "fd_epsilon"),)
FWDLLM_SETTINGS = (*FINITE_DIFFERENCE_SETTINGS, ("candidates", "fwdllm_candidates"),
                   ("max_perturbations", "fwdllm_max_perturbations"),
                   ("variance_threshold", "fwdllm_variance_threshold"))


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
    """The server sends the last round's global update Δ with the weights (FwdLLM); the
    estimator takes it as `previous_update`."""
    settings: tuple[tuple[str, str], ...] = ()
    """(estimator keyword, Config setting) pairs bound into the estimator."""
    measured_client_lr: float | None = None
    """recipe=spry's client_lr for this method where this project measured a better one than
    the paper's 1e-4 (spry.config.defaults.CLIENT_LR); None: the recipe's default."""
    bench_modes: tuple[str, ...] = ()
    """The `spry bench` modes that measure one client step of this method, best first. A
    mode is named after the method it runs, with `_share` where it trains one client's
    share of the units only (spry.bench.modes); none: the bench has no mode for it."""


METHODS: dict[str, Method] = {
    # Spry's client trains only the units dealt to it (spry_share: one of the round's
    # clients); the bench's all-units mode stands in where no share was measured.
    "spry": Method("forward_gradient", split=True, settings=FORWARD_GRADIENT_SETTINGS,
                   bench_modes=("spry_share", "spry")),
    # Forward gradient with no split: each client perturbs all trainable weights.
    "fedfgd": Method("forward_gradient", split=False, settings=FORWARD_GRADIENT_SETTINGS,
                     bench_modes=("spry",)),
    # Backprop FL; the server optimizer picks FedAvg / FedAdam / FedYogi. Measured here
    # (docs/learning.md), backprop learns faster at client_lr 1e-3 than the paper's 1e-4.
    "backprop": Method("backprop", split=False, measured_client_lr=1e-3,
                       bench_modes=("backprop",)),
    # Split ablation: Spry's unit split with exact gradients.
    "backprop_split": Method("backprop", split=True, measured_client_lr=1e-3),
    # FedSGD (McMahan et al. 2017): one backprop step per exchange and the server averages
    # the gradients. Each client takes exactly one plain SGD step of client_lr from the
    # global point and returns w − lr·g_c; the example-weighted mean over clients is
    # w − lr·mean_c g_c, so FedAvg (server lr 1) is FedSGD exactly and FedAdam/FedYogi step
    # on the averaged gradient. Gradients are averaged, never summed or chained from one
    # client to the next (the published baseline compounded them). Needs
    # client_optimizer=sgd: Adam's first step is sign(g), not g. Its plain SGD step learns
    # best at client_lr 3e-2 (docs/baselines.md).
    "fedsgd": Method("backprop", split=False, local_steps=1, measured_client_lr=3e-2,
                     bench_modes=("backprop",)),
    # FedMeZO: MeZO's in-place SPSA, z regenerated from seeds; K = tangents.
    "fedmezo": Method("spsa", split=False, settings=FINITE_DIFFERENCE_SETTINGS,
                      bench_modes=("fedmezo",)),
    # BAFFLE: K = tangents Gaussian central differences, scaled to an unbiased estimate.
    "baffle": Method("finite_difference", split=False, settings=FINITE_DIFFERENCE_SETTINGS,
                     bench_modes=("baffle",)),
    # FwdLLM: finite differences over perturbations chosen by cosine similarity to the
    # previous global update, as many as the variance needs (fwdllm_* settings).
    "fwdllm": Method("fwdllm", split=False, uses_previous_update=True,
                     settings=FWDLLM_SETTINGS, bench_modes=("fwdllm",)),
}


def sends_previous_update(cfg: "Config") -> bool:
    """The server sends the last global update Δ of the client's units: FwdLLM ranks its
    perturbations by it; guided_tangent takes one tangent along it."""
    return METHODS[cfg.method].uses_previous_update or cfg.guided_tangent


def make_estimator(cfg: "Config", previous_update: Mapping[str, torch.Tensor] | None = None
                   ) -> Callable:
    """The method's estimator with its settings bound: `(loss_fn, params, seeds) -> Estimate`."""
    from spry.estimators import ESTIMATORS  # torch: only once an estimator is wanted

    method = METHODS[cfg.method]
    estimator = ESTIMATORS[method.estimator]
    bound = {keyword: getattr(cfg, setting) for keyword, setting in method.settings}
    if method.uses_previous_update:
        bound["previous_update"] = previous_update
    # A method that binds nothing gets the registered function itself, not a partial.
    return functools.partial(estimator, **bound) if bound else estimator
