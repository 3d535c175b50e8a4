"""task_head=classifier: a sequence classifier on an encoder (or decoder), label cross-entropy
(and the model and loss task_head=regression shares: one output, squared error).

The model is a pooled linear head over the transformer body (spry.tasks.pooling; the
default, pooling=auto) or the architecture's own *ForSequenceClassification (pooling=model,
the paper's). Either way its output has `.logits` (batch, labels), which is all the loss
and the scores below read; the verbalizer head (a causal LM read as a classifier) shares
them.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from spry.config import Config, ConfigError
from spry.data.batches import Encoded, indexed_batches
from spry.models import apply_peft, call_with, head_module_names, resolve_model_path
from spry.tasks.metrics import binary_f1, macro_f1
from spry.tasks.pooling import load_pooled_classifier
from spry.tasks.tokens import token_losses


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> nn.Module:
    """A sequence classifier with PEFT applied; only trainable weights require grad; its
    head modules are trained in full.

    Attention is eager: the fused SDPA CPU kernel has no forward-AD formula
    (NotImplementedError for _scaled_dot_product_flash_attention_for_cpu).
    """
    from transformers import AutoModelForSequenceClassification

    path = resolve_model_path(cfg.model)
    if cfg.pooling != "model":
        model = load_pooled_classifier(cfg, path, num_labels)
    else:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, attn_implementation="eager",
                dtype=getattr(torch, cfg.dtype),
                # A checkpoint finetuned for another label set gets a fresh head for ours.
                ignore_mismatched_sizes=True)
        except OSError as exc:
            raise ConfigError(f"model: cannot load {cfg.model!r} ({exc}); give a hub name "
                              "(online), a local directory, or all-minilm-l6-v2") from None
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return apply_peft(model, cfg, heads=head_module_names(model)).to(cfg.device)


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor],
                        per_example: bool = False, capture: dict | None = None):
    """L(params) on one batch, with `params` swapped into the model functionally.

    `per_example`: the (B,) losses instead of their mean (spry.estimators.example_tangents).
    `capture`: filled with the first call's pooled features and logits (their primal
    values), from which the exact head gradient is computed (spry.tasks.linear_head)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def loss_fn(params):
        out = call_with(model, params, inputs)
        if capture is not None and "logits" not in capture:
            capture["features"] = fwAD.unpack_dual(out.features).primal.detach()
            capture["logits"] = fwAD.unpack_dual(out.logits).primal.detach()
        # Widen bfloat16 to float32, keep float64 (the estimator tests' precision).
        logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))
        return pointwise_loss(logits, labels, "none" if per_example else "mean")

    return loss_fn


def pointwise_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "none"
                   ) -> torch.Tensor:
    """The examples' loss (torch's `reduction`): cross-entropy against class indices; for
    multi-hot rows (task_head=multilabel, (B, labels) floats) the binary cross-entropy of
    each label's sigmoid, averaged over the labels (the mean of all B × labels terms, as
    BCEWithLogitsLoss takes it); for scores (float labels, task_head=regression, one
    output) the squared error; for (B, T, tags) token logits (task_head=token) the
    cross-entropy of the labelled tokens (spry.tasks.tokens.token_losses)."""
    if logits.dim() == 3:
        return token_losses(logits, labels, reduction)
    if labels.dim() == 2:
        terms = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype),
                                                   reduction="none").mean(-1)
        return terms if reduction == "none" else getattr(terms, reduction)()
    if labels.is_floating_point():
        return F.mse_loss(logits[:, 0], labels.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)


def task_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """The head's loss: label cross-entropy (the TaskHead `loss` contract)."""
    return classification_loss(model, batch)


def _batch_logits(model: nn.Module, data: Encoded, tokenizer, cfg: Config):
    """(rows, float32 logits, labels) for each evaluation batch of a split, in length
    order (which pads least)."""
    model.eval()
    for rows, batch in indexed_batches(data, tokenizer, cfg.eval_batch_size):
        batch = {k: v.to(cfg.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        yield rows, model(**batch).logits.float(), labels


@torch.no_grad()
def predict_logits(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> torch.Tensor:
    """(examples, labels) float32 logits over a classification split, on the CPU, in the
    split's order."""
    done = [(rows, logits.cpu()) for rows, logits, _ in _batch_logits(model, data, tokenizer, cfg)]
    if not done:
        return torch.empty(0, 0)
    out = torch.empty(len(data), done[0][1].shape[-1])
    for rows, logits in done:
        out[torch.tensor(rows)] = logits
    return out


@torch.no_grad()
def predict_labels(model: nn.Module, data: Encoded, tokenizer, cfg: Config
                   ) -> tuple[list[int], list[int], float]:
    """(predicted labels, gold labels, summed cross-entropy) over a classification split,
    in the split's order."""
    predictions, loss = [0] * len(data), 0.0
    for rows, logits, labels in _batch_logits(model, data, tokenizer, cfg):
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        for row, label in zip(rows, logits.argmax(-1).tolist()):
            predictions[row] = label
    return predictions, list(data.labels), loss


def evaluate(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> tuple[int, int, float]:
    """(correct, total, summed loss) of the model as it stands."""
    predictions, labels, loss = predict_labels(model, data, tokenizer, cfg)
    return sum(p == y for p, y in zip(predictions, labels)), len(labels), loss


def held_out_metrics(model: nn.Module, data: Encoded, tokenizer, cfg: Config) -> dict:
    """`test_accuracy`, the mean cross-entropy (`test_loss`: it moves before accuracy does,
    and on the same held-out examples for every run, unlike `eval_loss` over the sampled
    clients' own splits), the macro-averaged F1 (`test_macro_f1`: on a skewed label set
    accuracy rewards the common class, macro-F1 weighs every class alike), how many classes
    the model predicts at all (1 flags a constant predictor, whose accuracy is just the
    majority-class rate; spry.experiment warns), and for MultiRC its F1a (`test_f1a`)."""
    predictions, labels, loss = predict_labels(model, data, tokenizer, cfg)
    out = {"test_accuracy": sum(p == y for p, y in zip(predictions, labels)) / len(labels),
           "test_loss": loss / len(labels),
           "test_macro_f1": macro_f1(predictions, labels),
           "test_predicted_classes": len(set(predictions))}
    if cfg.dataset == "multirc":
        out["test_f1a"] = binary_f1(predictions, labels)
    return out
