"""Gradient estimators: pure functions of a loss function and a dict of parameters.

Each returns an `Estimate`. Registry keys are the names used by `method=` in configs.
"""

from spry.estimators.autograd import backprop_gradient
from spry.estimators.base import Estimate, LossFn, draw_tangents
from spry.estimators.forward_gradient import forward_gradient

ESTIMATORS = {
    "forward_gradient": forward_gradient,
    "backprop": backprop_gradient,
}

__all__ = ["ESTIMATORS", "Estimate", "LossFn", "backprop_gradient", "draw_tangents",
           "forward_gradient"]
