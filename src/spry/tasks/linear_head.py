"""The pooled linear head W f + b: its start from federated class means and its exact
gradient, both from the forward pass alone.

- Its federated initialisation needs only per-class sums of f (FedNCM, Legate et al.
  2023, "Guiding the last layer in federated learning with pre-trained models"): one
  forward pass per client, no backward.
- Its gradient is closed-form: with p = softmax(W f + b) and y the one-hot label,
  ∂L/∂W = mean_i (p_i − y_i) f_iᵀ and ∂L/∂b = mean_i (p_i − y_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def head_param_names(unit_params) -> tuple[str, str]:
    """(weight, bias) names of the head among a unit's parameter names."""
    weight = next(n for n in unit_params if n.endswith("weight"))
    bias = next(n for n in unit_params if n.endswith("bias"))
    return weight, bias


# --- FedNCM: the head from federated class means ---------------------------------------
@dataclass
class ClassStatistics:
    """What one client sends for the head's initialisation: per-class sums of its unit
    pooled features, per-class counts, and the sum of the features' norms."""

    client_id: int
    sums: torch.Tensor  # (classes, hidden)
    counts: torch.Tensor  # (classes,)
    norm_sum: float
    seconds: float = 0.0

    def bytes(self) -> int:
        return (self.sums.numel() * self.sums.element_size()
                + self.counts.numel() * self.counts.element_size() + 8)


def class_statistics(features: torch.Tensor, labels: torch.Tensor, num_labels: int
                     ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(per-class sums of the unit features, per-class counts, sum of feature norms)."""
    f = features.float()
    unit = F.normalize(f, dim=-1)
    onehot = F.one_hot(labels, num_labels).to(f.dtype)
    return onehot.T @ unit, onehot.sum(0), float(f.norm(dim=-1).sum())


def class_mean_head(stats: list[ClassStatistics], scale: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b): W_c = scale · mean direction of class c / mean feature norm; b = 0.

    For unit-length features the logits are scale × the cosine to each class mean, the
    nearest-class-mean classifier; a class no client holds gets a zero row."""
    sums = sum(s.sums for s in stats)
    counts = sum(s.counts for s in stats)
    mean_norm = sum(s.norm_sum for s in stats) / max(float(counts.sum()), 1.0)
    weight = F.normalize(sums, dim=-1) * (scale / max(mean_norm, 1e-12))
    return weight, torch.zeros(sums.shape[0])


# --- the exact head gradient ----------------------------------------------------------
def head_gradient(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """∂L/∂W, ∂L/∂b of the mean cross-entropy of logits = W f + b, in closed form."""
    dtype = torch.promote_types(features.dtype, torch.float32)  # bfloat16 -> float32
    residual = logits.to(dtype).softmax(-1)
    residual[torch.arange(len(labels)), labels] -= 1.0
    residual /= len(labels)
    return residual.T @ features.to(dtype), residual.sum(0)
