"""The pooled linear head W f + b: its start from federated class means and its exact
gradient, both from the forward pass alone.

- Its federated initialisation needs only per-class sums of f (FedNCM, Legate et al.
  2023, "Guiding the last layer in federated learning with pre-trained models"): one
  forward pass per client, no backward. With each client's within-class scatter of the
  features as well, the server solves linear discriminant analysis instead
  (`head_init=lda`): the same one forward pass, d(d+1)/2 numbers more on the uplink
  (the scatter's upper triangle), and a head that weighs the feature
  directions by how well they separate the classes, not only by where the means lie
  (closed-form heads from federated statistics: Fed3R, Fanì et al. 2024, "Accelerating
  heterogeneous federated learning with closed-form classifiers", solves ridge regression
  from the same statistics).
- Its gradient is closed-form: with p = softmax(W f + b) and y the one-hot label,
  ∂L/∂W = mean_i (p_i − y_i) f_iᵀ and ∂L/∂b = mean_i (p_i − y_i).
"""

from __future__ import annotations

import math
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
    """What one client sends for the head's initialisation: per-class sums of its pooled
    features (unit-normalised for class means, as the head reads them for lda), per-class
    counts, the sum of the features' norms, and for lda the within-class scatter
    Σ_i (f_i − m_{y_i})(f_i − m_{y_i})ᵀ about the client's own class means m_c."""

    client_id: int
    sums: torch.Tensor  # (classes, hidden)
    counts: torch.Tensor  # (classes,)
    norm_sum: float
    seconds: float = 0.0
    scatter: torch.Tensor | None = None  # head_init=lda only: its upper triangle, packed

    def bytes(self) -> int:
        scatter = 0 if self.scatter is None else self.scatter.numel() * self.scatter.element_size()
        return (self.sums.numel() * self.sums.element_size()
                + self.counts.numel() * self.counts.element_size() + 8 + scatter)


def class_statistics(features: torch.Tensor, labels: torch.Tensor, num_labels: int,
                     scatter: bool = False) -> tuple:
    """(per-class sums of the unit features, per-class counts, sum of feature norms); with
    `scatter` (lda) the sums are of the features as the head reads them, followed by the
    within-class scatter. It is taken about the client's own class means, not as the raw
    moment Σ f fᵀ: pooled features share a large mean direction, and Σ f fᵀ − n μμᵀ in
    float32 would cancel most of the digits that the covariance lives in."""
    f = features.float()
    onehot = F.one_hot(labels, num_labels).to(f.dtype)
    counts, norms = onehot.sum(0), float(f.norm(dim=-1).sum())
    if scatter:
        sums = onehot.T @ f
        centred = f - (sums / counts.clamp(min=1.0)[:, None])[labels]
        return sums, counts, norms, pack_symmetric(centred.T @ centred)
    return onehot.T @ F.normalize(f, dim=-1), counts, norms


def score_statistics(features: torch.Tensor, scores: torch.Tensor) -> tuple:
    """task_head=regression's round-0 statistics: lda's, of the features with the score
    appended as one more coordinate, all one class (ridge_head reads them)."""
    joined = torch.cat([features.float(), scores.float()[:, None]], dim=-1)
    return class_statistics(joined, torch.zeros(len(scores), dtype=torch.long), 1,
                            scatter=True)


def multilabel_statistics(features: torch.Tensor, labels: torch.Tensor, num_labels: int,
                          scatter: bool = False) -> tuple:
    """task_head=multilabel's round-0 statistics, as class_statistics' with a row per label
    plus one for all: the sums of the features of the examples that have each label, then
    of every example (labels + 1 rows; those without a label are the total less that sum),
    their counts, the sum of norms, and for lda the scatter about the client's overall mean
    (each label's within-class covariance follows from it: multilabel_lda_head)."""
    f = features.float()
    hot = labels.to(f.dtype).reshape(len(f), num_labels)  # (0,) from a client without data
    if scatter:
        total, count, norms, packed = class_statistics(
            f, torch.zeros(len(f), dtype=torch.long), 1, scatter=True)
        return (torch.cat([hot.T @ f, total]), torch.cat([hot.sum(0), count]), norms, packed)
    unit = F.normalize(f, dim=-1)
    return (torch.cat([hot.T @ unit, unit.sum(0, keepdim=True)]),
            torch.cat([hot.sum(0), torch.tensor([float(len(f))])]), float(f.norm(dim=-1).sum()))


def pack_symmetric(matrix: torch.Tensor) -> torch.Tensor:
    """The upper triangle of a symmetric (d, d) matrix, d(d+1)/2 numbers: what goes on the
    wire (half the bytes of the full matrix)."""
    rows, cols = torch.triu_indices(len(matrix), len(matrix))
    return matrix[rows, cols]


def unpack_symmetric(packed: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle pack_symmetric gave."""
    d = int(round(((8 * packed.numel() + 1) ** 0.5 - 1) / 2))
    rows, cols = torch.triu_indices(d, d)
    matrix = packed.new_zeros(d, d)
    matrix[rows, cols] = packed
    matrix[cols, rows] = packed
    return matrix


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


def pooled_moments(stats: list[ClassStatistics]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-class counts, class means μ_c, the pooled within-class covariance Σ) of all
    clients' features, in float64: each client's scatter about its own class means m_kc,
    plus Σ_k,c n_kc (m_kc − μ_c)(m_kc − μ_c)ᵀ, over n."""
    sums = sum(s.sums.double() for s in stats)
    counts = sum(s.counts.double() for s in stats)
    means = sums / counts.clamp(min=1.0)[:, None]
    scatter = unpack_symmetric(sum(s.scatter.double() for s in stats))
    for s in stats:  # the spread of the clients' class means about the global ones
        n = s.counts.double()  # a class the client lacks weighs 0 here
        gap = s.sums.double() / n.clamp(min=1.0)[:, None] - means
        scatter = scatter + (gap.T * n) @ gap
    return counts, means, scatter / counts.sum()


def shrink(covariance: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """Σ_λ = (1 − λ) Σ + λ (tr Σ / d) I (scikit-learn's shrinkage), plus a ridge of 1e-9 of
    the mean variance: at λ = 0 with fewer examples than features (or a constant feature)
    Σ is singular, and the ridge keeps the solve defined while changing nothing measurable
    elsewhere."""
    eye = torch.eye(len(covariance), dtype=covariance.dtype)
    level = covariance.diagonal().mean()
    return (1.0 - shrinkage) * covariance + (shrinkage + 1e-9) * level * eye


def lda_head(stats: list[ClassStatistics], shrinkage: float, scale: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of linear discriminant analysis from the clients' statistics: with class means
    μ_c, priors π_c and the pooled within-class covariance Σ (pooled_moments) shrunk
    toward a multiple of the identity (shrink; scikit-learn's
    LinearDiscriminantAnalysis(shrinkage=λ)), W_c = Σ_λ⁻¹ μ_c and
    b_c = −½ μ_cᵀ Σ_λ⁻¹ μ_c + log π_c: the logits are the log posteriors of Gaussian
    classes sharing Σ_λ, up to a constant; both are then multiplied by `scale` (a softmax
    temperature, head_init_lda_scale). A class no client holds gets a zero row and a very
    negative bias."""
    counts, means, covariance = pooled_moments(stats)
    weight = torch.linalg.solve(shrink(covariance, shrinkage), means.T).T
    bias = -0.5 * (weight * means).sum(-1) + torch.log(counts.clamp(min=1e-30) / counts.sum())
    weight[counts == 0] = 0.0
    return (weight * scale).float(), (bias * scale).float()


def _with_and_without(stats: list[ClassStatistics]) -> tuple[torch.Tensor, torch.Tensor]:
    """task_head=multilabel: (sums, counts), float64, of the examples with each label (row
    0 of each pair) and without it (row 1), from multilabel_statistics' label and total
    rows: (labels, 2, hidden) and (labels, 2)."""
    sums = sum(s.sums.double() for s in stats)
    counts = sum(s.counts.double() for s in stats)
    with_sums, with_counts = sums[:-1], counts[:-1]
    return (torch.stack([with_sums, sums[-1] - with_sums], 1),
            torch.stack([with_counts, counts[-1] - with_counts], 1))


def multilabel_class_mean_head(stats: list[ClassStatistics], scale: float
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of task_head=multilabel from class means: for each label, class_mean_head's
    two-class head (the examples with the label against those without) as one logit,
    the difference of the two cosines times the scale; b = 0."""
    sums, counts = _with_and_without(stats)
    mean_norm = sum(s.norm_sum for s in stats) / max(float(sum(s.counts[-1] for s in stats)), 1.0)
    rows = F.normalize(sums, dim=-1) * (scale / max(mean_norm, 1e-12))
    return (rows[:, 0] - rows[:, 1]).float(), torch.zeros(len(sums))


def multilabel_lda_head(stats: list[ClassStatistics], shrinkage: float, scale: float = 1.0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of task_head=multilabel: for each label, linear discriminant analysis of the
    examples with it against those without, as one logit (the log-odds of two Gaussian
    classes sharing a covariance; lda_head's two rows, the second taken from the first).
    With π₁, π₀ the two shares, μ₁, μ₀ their means, δ = μ₁ − μ₀ and Σ the covariance of
    all the features, the label's within-class covariance is Σ − π₁π₀ δδᵀ (the total less
    the between-class part), shrunk as lda_head's; w = Σ_λ⁻¹ δ and
    b = −½ w·(μ₁ + μ₀) + log(π₁/π₀), both times `scale`. A label no example has (or every
    example has) gets w = 0 and a very negative (positive) bias."""
    overall = [ClassStatistics(s.client_id, s.sums[-1:], s.counts[-1:], s.norm_sum,
                               scatter=s.scatter) for s in stats]
    _, _, covariance = pooled_moments(overall)
    sums, counts = _with_and_without(stats)
    weights, biases = [], []
    for label_sums, label_counts in zip(sums, counts):
        log_odds = torch.log(label_counts.clamp(min=1e-30))
        bias = log_odds[0] - log_odds[1]
        if (label_counts == 0).any():
            weights.append(torch.zeros(covariance.shape[0], dtype=covariance.dtype))
            biases.append(bias)
            continue
        means = label_sums / label_counts[:, None]
        delta = means[0] - means[1]
        shares = label_counts / label_counts.sum()
        within = covariance - shares[0] * shares[1] * torch.outer(delta, delta)
        weight = torch.linalg.solve(shrink(within, shrinkage), delta)
        weights.append(weight)
        biases.append(-0.5 * weight @ (means[0] + means[1]) + bias)
    return (torch.stack(weights) * scale).float(), (torch.stack(biases) * scale).float()


RIDGE_SHRINKAGES = (0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
"""The shrinkages λ generalized cross-validation chooses among (ridge_head)."""


def ridge_head(stats: list[ClassStatistics], shrinkage: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of least squares from the clients' statistics (task_head=regression): each
    client sent the statistics of [f, y], its features with the score appended, as one
    class, so pooled_moments gives their means (m, ȳ) and covariance [[Σ_ff, Σ_fy], ·]. With
    Σ_ff shrunk as lda's is (a ridge penalty), w = Σ_λ⁻¹ Σ_fy and b = ȳ − w·m: the linear
    head of least squared error on the features (Fed3R, Fanì et al. 2024, solves the same
    ridge regression from federated statistics). `shrinkage` None: λ is the one of
    RIDGE_SHRINKAGES with the least generalized cross-validation error (ridge_gcv), which
    the same statistics give, so no client sends more."""
    counts, means, covariance = pooled_moments(stats)
    d = covariance.shape[0] - 1
    if shrinkage is None:
        shrinkage = gcv_shrinkage(covariance, counts.sum())
    weight = _ridge_weight(covariance, shrinkage)
    bias = means[0, d] - weight @ means[0, :d]
    return weight[None].float(), bias.reshape(1).float()


def gcv_shrinkage(covariance: torch.Tensor, n: torch.Tensor) -> float:
    """The λ of RIDGE_SHRINKAGES with the least generalized cross-validation error, from
    the pooled moments of [f, y] (pooled_moments) over n examples."""
    return min(RIDGE_SHRINKAGES, key=lambda s: ridge_gcv(covariance, n, s))


def _ridge_weight(covariance: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """w = (1 − λ)((1 − λ) Σ_ff + λ μ I)⁻¹ Σ_fy = (Σ_ff + α I)⁻¹ Σ_fy, α = λ μ / (1 − λ):
    the (1 − λ) undoes the convex combination's rescaling, so the weights shrink to 0 (the
    mean score) as λ → 1 instead of growing by 1 / (1 − λ)."""
    d = covariance.shape[0] - 1
    return (1.0 - shrinkage) * torch.linalg.solve(shrink(covariance[:d, :d], shrinkage),
                                                  covariance[:d, d])


def ridge_gcv(covariance: torch.Tensor, n: torch.Tensor, shrinkage: float) -> float:
    """Generalized cross-validation error of the ridge at `shrinkage` (Golub, Heath and
    Wahba 1979), from the pooled moments alone: the mean squared residual
    Σ_yy − 2 wᵀΣ_fy + wᵀΣ_ff w over (1 − df / n)², df = 1 + tr(Σ_ff (Σ_ff + α I)⁻¹) the
    effective number of parameters (the intercept and the shrunk weights). It estimates
    the held-out error without holding anything out, and is infinite where the fit
    interpolates (df ≥ n: fewer examples than features at λ = 0)."""
    d = covariance.shape[0] - 1
    sff, sfy, syy = covariance[:d, :d], covariance[:d, d], covariance[d, d]
    w = _ridge_weight(covariance, shrinkage)
    residual = syy - 2 * w @ sfy + w @ sff @ w
    eigen = torch.linalg.eigvalsh(sff).clamp(min=0)
    alpha = shrinkage * sff.diagonal().mean() / (1.0 - shrinkage) + 1e-9 * sff.diagonal().mean()
    df = 1.0 + float((eigen / (eigen + alpha)).sum())
    if df >= float(n):
        return math.inf
    return float(residual) / (1.0 - df / float(n)) ** 2


# --- the exact head gradient ----------------------------------------------------------
def head_gradient(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """∂L/∂W, ∂L/∂b of the mean loss of logits = W f + b, in closed form: cross-entropy
    against class indices (residual p − y), binary cross-entropy against multi-hot rows
    (task_head=multilabel: residual σ(z) − y, over the labels too, as the loss averages
    them), or squared error against float scores (task_head=regression, one output:
    residual 2 (ŷ − y)). Token states (task_head=token: (B, T, hidden) features, (B, T)
    labels) count each labelled token as an example, as the token loss averages them."""
    if features.dim() == 3:
        features, logits, labels = labelled_tokens(features, logits, labels)
    dtype = torch.promote_types(features.dtype, torch.float32)  # bfloat16 -> float32
    if labels.dim() == 2:
        residual = (logits.to(dtype).sigmoid() - labels.to(dtype)) / labels.shape[1]
    elif labels.is_floating_point():
        residual = 2.0 * (logits.to(dtype) - labels.to(dtype)[:, None])
    else:
        residual = logits.to(dtype).softmax(-1)
        residual[torch.arange(len(labels)), labels] -= 1.0
    residual /= max(len(labels), 1)
    return residual.T @ features.to(dtype), residual.sum(0)


UNLABELLED_TOKEN = -100
"""task_head=token: the label of a token that is not a word's first (torch's cross-entropy
ignore_index, transformers' convention)."""


def labelled_tokens(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor):
    """(features, logits, labels) of the labelled tokens of (B, T, ·) token tensors,
    flattened: the examples of the exact head gradient and of round 0's statistics."""
    keep = labels.reshape(-1) != UNLABELLED_TOKEN
    return (features.reshape(-1, features.shape[-1])[keep],
            logits.reshape(-1, logits.shape[-1])[keep], labels.reshape(-1)[keep])
