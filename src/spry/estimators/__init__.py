"""Gradient estimators: pure functions of a loss function and a dict of parameters.

Each returns an `Estimate`. Registry keys are the names used by `method=` in configs.
"""

from spry.estimators.autograd import backprop_gradient
from spry.estimators.base import Estimate, LossFn, draw_tangents
from spry.estimators.finite_difference import finite_difference_gradient
from spry.estimators.forward_gradient import forward_gradient
from spry.estimators.fwdllm import fwdllm_gradient
from spry.estimators.spsa import spsa_gradient

ESTIMATORS = {
    "forward_gradient": forward_gradient,
    "backprop": backprop_gradient,
    # Zeroth-order baselines (two forward passes per perturbation, no jvp).
    "spsa": spsa_gradient,  # FedMeZO
    "finite_difference": finite_difference_gradient,  # BAFFLE
    "fwdllm": fwdllm_gradient,  # FwdLLM
}

__all__ = ["ESTIMATORS", "Estimate", "LossFn", "backprop_gradient", "draw_tangents",
           "finite_difference_gradient", "forward_gradient", "fwdllm_gradient", "spsa_gradient"]
