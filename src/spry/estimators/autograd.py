"""Backpropagation: the reference every estimator is tested against, and the FedAvg baseline."""

from __future__ import annotations

import torch

from spry.estimators.base import Estimate, LossFn, Params


def backprop_gradient(loss_fn: LossFn, params: Params, tangent_seeds=None) -> Estimate:
    """The exact gradient by reverse-mode AD. Memory: the activations of a full forward."""
    names = sorted(params)
    leaves = {n: params[n].detach().requires_grad_(True) for n in names}
    with torch.enable_grad():
        loss = loss_fn(leaves)
        # allow_unused: a trainable tensor the loss never reads (an adapter on a pooler
        # the head does not use) has gradient exactly zero, as the estimators report it.
        grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    return Estimate(loss=float(loss.detach()),
                    grads={n: torch.zeros_like(leaves[n]) if g is None else g.detach()
                           for n, g in zip(names, grads)})
