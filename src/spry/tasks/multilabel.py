"""task_head=multilabel: any number of labels a text (topics, emotions, kinds of toxicity);
the classifier's pooled linear head with one sigmoid output a label, trained by binary
cross-entropy (spry.tasks.classifier.pointwise_loss on multi-hot rows).

The model, the exact head gradient (residual σ(z) − y) and round 0's closed-form head (one
discriminant a label: spry.tasks.linear_head.multilabel_lda_head) are the classifier's with
a yes/no question a label. A label is predicted where its probability passes 0.5 (its
logit passes 0). A split is scored by exact match (the predicted set is the gold set:
`accuracy`, which the clients report), micro- and macro-averaged F1 and the mean binary
cross-entropy (spry.tasks.metrics.label_set_scores).
"""

from __future__ import annotations

import torch
from torch import nn

from spry.config import Config
from spry.data.batches import Encoded
from spry.tasks import classifier
from spry.tasks.metrics import label_set_scores


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> nn.Module:
    """The classifier's model, one output a label; a *ForSequenceClassification head
    (pooling=model) is marked multi-label, as transformers' pipelines read it."""
    model = classifier.load_model(cfg, num_labels, pad_token_id)
    model.config.problem_type = "multi_label_classification"
    return model


def label_sets(logits: torch.Tensor) -> list[tuple[int, ...]]:
    """Each row's predicted labels: those whose logit passes 0 (probability 0.5)."""
    return [tuple(torch.nonzero(row > 0).flatten().tolist()) for row in logits]


def gold_sets(labels) -> list[tuple[int, ...]]:
    """Each multi-hot row's labels."""
    return [tuple(c for c, hot in enumerate(row) if hot) for row in labels]


@torch.no_grad()
def predict_sets(model: nn.Module, data: Encoded, tokenizer, cfg: Config
                 ) -> tuple[list[tuple[int, ...]], float]:
    """(each example's predicted labels, the summed per-example loss), in the split's order."""
    logits = classifier.predict_logits(model, data, tokenizer, cfg)
    if not len(data):
        return [], 0.0
    gold = torch.tensor(list(data.labels), dtype=torch.float32)
    loss = float(classifier.pointwise_loss(logits, gold).sum())
    return label_sets(logits), loss


def evaluate(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> tuple[int, int, float]:
    """(exact matches, total, summed loss) of the model as it stands."""
    predicted, loss = predict_sets(model, data, tokenizer, cfg)
    gold = gold_sets(data.labels)
    return sum(set(p) == set(y) for p, y in zip(predicted, gold)), len(gold), loss


def held_out_metrics(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> dict:
    """`test_accuracy` (exact match), `test_micro_f1`, `test_macro_f1`, the mean binary
    cross-entropy (`test_loss`), and how many labels the model predicts anywhere
    (`test_predicted_labels`: 0 flags a model that says no label for every text)."""
    predicted, loss = predict_sets(model, data, tokenizer, cfg)
    scores = label_set_scores(predicted, gold_sets(data.labels))
    return {"test_accuracy": scores["accuracy"], "test_loss": loss / len(data),
            "test_micro_f1": scores["micro_f1"], "test_macro_f1": scores["macro_f1"],
            "test_predicted_labels": len({c for p in predicted for c in p})}
