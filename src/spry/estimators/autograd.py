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
        grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return Estimate(loss=float(loss.detach()), grads={n: g.detach() for n, g in zip(names, grads)})
