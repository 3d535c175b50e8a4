"""What `method=` selects: a gradient estimator and whether the server splits the units."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    estimator: str
    split: bool
    """True: each client trains only the units dealt to it (Spry). False: every client
    trains every unit."""


METHODS: dict[str, Method] = {
    "spry": Method("forward_gradient", split=True),
    # Forward gradient with no split: each client perturbs all trainable weights.
    "fedfgd": Method("forward_gradient", split=False),
    # Backprop FL; the server optimizer picks FedAvg / FedAdam / FedYogi.
    "backprop": Method("backprop", split=False),
    # Split ablation: Spry's unit split with exact gradients.
    "backprop_split": Method("backprop", split=True),
}
