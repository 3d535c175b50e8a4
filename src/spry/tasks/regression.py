"""task_head=regression: a numeric score per text (or pair), e.g. a similarity 0-5 or a
rating; the classifier's pooled linear head with one output, trained by squared error.

The model, its loss (spry.tasks.classifier.pointwise_loss), the exact head gradient and
round 0's closed-form head (least squares: spry.tasks.linear_head.ridge_head) are the
classifier's with a score in place of a class. What differs is how a split is scored: a
score is not right or wrong, so the clients report their squared error (`eval_loss`) and
no accuracy, and the held-out split reports the mean squared error and the correlations
GLUE scores STS-B by (Pearson and Spearman).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spry.config import Config
from spry.data.batches import Encoded
from spry.tasks import classifier


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> nn.Module:
    """The classifier's model with one output: the predicted score."""
    return classifier.load_model(cfg, 1, pad_token_id)


@torch.no_grad()
def predict_scores(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> list[float]:
    """The predicted score of each example of a split, in the split's order."""
    return classifier.predict_logits(model, data, tokenizer, cfg)[:, 0].tolist()


def squared_error(predictions: list[float], scores: list[float]) -> float:
    return sum((p - y) ** 2 for p, y in zip(predictions, scores))


def evaluate(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> tuple[int, int, float]:
    """(0, total, summed squared error): nothing counts as correct for a score, so the
    server reports no accuracy for it (spry.server.summarize_evals), only eval_loss."""
    predictions = predict_scores(model, data, tokenizer, cfg)
    return 0, len(predictions), squared_error(predictions, list(data.labels))


def score_metrics(predictions: list[float], scores: list[float]) -> dict:
    """`test_loss` (the mean squared error, the loss trained), `test_rmse` (in the score's
    own units), `test_pearson` and `test_spearman` (GLUE's STS-B metrics; a constant
    prediction or constant gold scores correlate with nothing: 0)."""
    from scipy.stats import pearsonr, spearmanr

    mse = squared_error(predictions, scores) / len(scores)
    constant = len(set(predictions)) < 2 or len(set(scores)) < 2
    return {"test_loss": mse, "test_rmse": math.sqrt(mse),
            "test_pearson": 0.0 if constant else float(pearsonr(predictions, scores)[0]),
            "test_spearman": 0.0 if constant else float(spearmanr(predictions, scores)[0])}


def held_out_metrics(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> dict:
    """The held-out split's score_metrics."""
    return score_metrics(predict_scores(model, data, tokenizer, cfg), list(data.labels))
