"""Macro-F1 and the per-class report agree with scikit-learn's, the reference a reader
would check them against."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from spry.tasks.metrics import class_report, macro_f1


@pytest.mark.parametrize("seed", range(20))
def test_macro_f1_and_the_class_report_match_scikit_learn(seed):
    rng = random.Random(seed)
    classes = rng.randint(2, 6)
    n = rng.randint(1, 40)
    labels = [rng.randrange(classes) for _ in range(n)]
    # predictions may miss a class or predict one the labels lack
    predictions = [rng.randrange(classes + 1) for _ in range(n)]
    assert macro_f1(predictions, labels) == pytest.approx(
        f1_score(labels, predictions, average="macro", zero_division=0))
    report = class_report(predictions, labels)
    present = sorted(set(labels) | set(predictions))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=present, zero_division=0)
    assert list(report) == present
    for i, c in enumerate(present):
        assert report[c] == pytest.approx((precision[i], recall[i], f1[i], support[i]))


def test_macro_f1_tells_a_majority_predictor_from_accuracy():
    labels = [0] * 9 + [1]
    always_zero = [0] * 10
    assert sum(p == y for p, y in zip(always_zero, labels)) / 10 == 0.9
    assert macro_f1(always_zero, labels) == pytest.approx((18 / 19) / 2)
