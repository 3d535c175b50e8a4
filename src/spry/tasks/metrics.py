"""Task metrics: per-class precision, recall and F1 with their macro average (a classifier's
held-out split), MultiRC's F1a, and SQuAD v2's exact match and F1.

Macro-F1 follows scikit-learn's `f1_score(average="macro")`: the unweighted mean of the
per-class F1 over every class that occurs among the gold labels or the predictions. On a
skewed task it tells a model that finds the rare classes from one that does not, where
accuracy is dominated by the common class.

The SQuAD functions follow the official v2.0 evaluation script
(https://worksheets.codalab.org/rest/bundles/0x6b567e1cf2e041ec80d7098f031c5c9e/contents/blob/):
lower-case, strip punctuation, the articles a/an/the and extra white space; a question's
score is its best over the gold answers; an unanswerable question's only gold answer is
the empty string, so it scores 1 exactly when the prediction is empty too.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence


def binary_f1(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class; MultiRC's F1a when taken over all answer options."""
    tp = sum(p == positive and y == positive for p, y in zip(predictions, labels))
    fp = sum(p == positive and y != positive for p, y in zip(predictions, labels))
    fn = sum(p != positive and y == positive for p, y in zip(predictions, labels))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def class_report(predictions: Sequence[int], labels: Sequence[int]
                 ) -> dict[int, tuple[float, float, float, int]]:
    """{class: (precision, recall, F1, support)} for each class among the gold labels or
    the predictions; a ratio with nothing to divide by is 0 (scikit-learn's zero_division=0)."""
    out = {}
    for c in sorted(set(labels) | set(predictions)):
        tp = sum(p == c and y == c for p, y in zip(predictions, labels))
        predicted = sum(p == c for p in predictions)
        support = sum(y == c for y in labels)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        out[c] = (precision, recall, binary_f1(predictions, labels, positive=c), support)
    return out


def macro_f1(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """The mean per-class F1 over the classes among the gold labels or the predictions."""
    report = class_report(predictions, labels)
    return sum(f1 for _, _, f1, _ in report.values()) / len(report) if report else 0.0


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        # Unanswerable: 1 if both are empty, else 0.
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_v2_scores(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """Exact match and F1 in percent over every question in `golds`.

    `golds[qid]` lists the gold answer texts; an empty list marks an unanswerable question
    (its gold is ""). A question without a prediction counts as answered "" (no answer).
    Also reports both scores over the answerable ("HasAns") and unanswerable ("NoAns")
    questions separately, as the official script does.
    """
    per = {}
    for qid, answers in golds.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        pred = predictions.get(qid, "")
        per[qid] = (max(exact_match(pred, a) for a in answers),
                    max(token_f1(pred, a) for a in answers),
                    answers != [""])
    out = {}
    for name, keep in (("", lambda has: True), ("has_ans_", bool), ("no_ans_", lambda h: not h)):
        rows = [v for v in per.values() if keep(v[2])]
        if rows:
            out[f"{name}exact"] = 100 * sum(r[0] for r in rows) / len(rows)
            out[f"{name}f1"] = 100 * sum(r[1] for r in rows) / len(rows)
            out[f"{name}total"] = len(rows)
    return out


def label_set_report(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]
                     ) -> dict[int, tuple[float, float, float, int]]:
    """task_head=multilabel: {label: (precision, recall, F1, support)} for each label among
    the gold sets or the predicted ones, each label scored as its own yes/no question over
    every example (scikit-learn's multilabel precision_recall_fscore_support)."""
    out = {}
    for c in sorted({c for s in (*predicted, *gold) for c in s}):
        tp = sum(c in p and c in y for p, y in zip(predicted, gold))
        chosen = sum(c in p for p in predicted)
        support = sum(c in y for y in gold)
        precision = tp / chosen if chosen else 0.0
        recall = tp / support if support else 0.0
        out[c] = (precision, recall, 0.0 if tp == 0 else 2 * tp / (chosen + support), support)
    return out


def label_set_scores(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]
                     ) -> dict[str, float]:
    """task_head=multilabel's held-out scores: `accuracy`, the share of examples whose
    predicted set is exactly the gold set (scikit-learn's accuracy_score on multi-label
    data, "subset accuracy"); `micro_f1`, F1 over every (example, label) decision pooled,
    which weighs the common labels; `macro_f1`, the mean per-label F1 (label_set_report),
    which weighs every label alike."""
    predicted, gold = [set(p) for p in predicted], [set(y) for y in gold]
    tp = sum(len(p & y) for p, y in zip(predicted, gold))
    chosen, support = sum(map(len, predicted)), sum(map(len, gold))
    report = label_set_report(predicted, gold)
    return {"accuracy": sum(p == y for p, y in zip(predicted, gold)) / max(len(gold), 1),
            "micro_f1": 0.0 if tp == 0 else 2 * tp / (chosen + support),
            "macro_f1": (sum(f1 for _, _, f1, _ in report.values()) / len(report)
                         if report else 0.0)}
