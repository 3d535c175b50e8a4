"""SQuAD v2 (Rajpurkar et al. 2018) as extractive span prediction on an encoder.

The model (`AutoModelForQuestionAnswering`, head `qa_outputs`) gives each token a start and
an end logit. Unanswerable questions point both at the first token ([CLS]), as in
Devlin et al. (2019) and the transformers QA examples; at prediction time the best span
competes with that null score and an empty answer wins ties.

One window per question: the context is truncated to `max_length` (the paper used 384).
An answer that falls outside the window is trained as "no answer in this window"; at
evaluation it can then only be missed, which the official scores count against us.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from spry.config import Config, ConfigError
from spry.data.batches import indexed_batches
from spry.data.examples import Examples
from spry.data.squad import QAExample
from spry.models import apply_peft, call_with, head_module_names, resolve_model_path
from spry.tasks.metrics import squad_v2_scores

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class QAEncoded:
    """Tokenized questions, one window each, with the span targets and the offsets that
    turn a predicted span back into context text."""

    examples: list[QAExample]
    features: list[dict[str, list[int]]]
    start_positions: list[int]
    end_positions: list[int]
    offsets: list[list[tuple[int, int] | None]] = field(repr=False)
    """Per token: its character span in the context, None outside the context."""

    def __len__(self) -> int:
        return len(self.features)

    def length(self, index: int) -> int:
        return len(self.features[index]["input_ids"])

    def collate(self, indices: list[int], tokenizer) -> dict[str, torch.Tensor]:
        return collate_qa(self, indices, tokenizer)


def encode_qa(examples: list[QAExample], tokenizer, max_length: int) -> QAEncoded:
    """Question first, context second; only the context is truncated."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model: SQuAD needs a fast tokenizer (character offsets)")
    if not examples:
        return QAEncoded([], [], [], [], [])
    enc = tokenizer([e.question for e in examples], [e.context for e in examples],
                    truncation="only_second", max_length=max_length,
                    return_offsets_mapping=True)
    features, starts, ends, offsets = [], [], [], []
    for i, ex in enumerate(examples):
        sequence = enc.sequence_ids(i)
        spans = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], sequence)]
        start = end = 0  # [CLS]: no answer (in this window)
        if ex.answers:
            a_start = ex.starts[0]
            a_end = a_start + len(ex.answers[0])
            inside = [t for t, o in enumerate(spans) if o is not None and o[0] < a_end
                      and o[1] > a_start]
            if inside and spans[inside[0]][0] <= a_start and spans[inside[-1]][1] >= a_end:
                start, end = inside[0], inside[-1]
        features.append({k: enc[k][i] for k in MODEL_INPUTS if k in enc})
        starts.append(start)
        ends.append(end)
        offsets.append(spans)
    return QAEncoded(list(examples), features, starts, ends, offsets)


def encode(examples: Examples, tokenizer, max_length: int) -> QAEncoded:
    """The TaskHead `encode` contract: the questions of `examples` (read by spry.data.squad)."""
    return encode_qa(examples.qa, tokenizer, max_length)


def collate_qa(encoded: QAEncoded, indices: list[int], tokenizer) -> dict[str, torch.Tensor]:
    batch = dict(tokenizer.pad([encoded.features[i] for i in indices], return_tensors="pt"))
    batch["start_positions"] = torch.tensor([encoded.start_positions[i] for i in indices])
    batch["end_positions"] = torch.tensor([encoded.end_positions[i] for i in indices])
    return batch


def span_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """L(params): mean of the start and end cross-entropies, params swapped in functionally."""
    starts, ends = batch["start_positions"], batch["end_positions"]
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}

    def loss_fn(params):
        return _span_cross_entropy(call_with(model, params, inputs),
                                   starts, ends)

    return loss_fn


def _span_cross_entropy(out, starts: torch.Tensor, ends: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    return (F.cross_entropy(out.start_logits.float(), starts, reduction=reduction)
            + F.cross_entropy(out.end_logits.float(), ends, reduction=reduction)) / 2


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor,
              offsets: list[tuple[int, int] | None], context: str,
              max_answer_tokens: int = 30) -> str:
    """The highest start+end span inside the context, or "" if the null span scores more."""
    n = len(offsets)
    s, e = start_logits[:n].float(), end_logits[:n].float()
    inside = torch.tensor([o is not None for o in offsets])
    scores = s[:, None] + e[None, :]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    valid = inside[:, None] & inside[None, :] & (j >= i) & (j - i < max_answer_tokens)
    if not bool(valid.any()):
        return ""
    scores = scores.masked_fill(~valid, float("-inf"))
    flat = int(scores.argmax())
    best_i, best_j = divmod(flat, n)
    if float(s[0] + e[0]) >= float(scores[best_i, best_j]):
        return ""
    return context[offsets[best_i][0]:offsets[best_j][1]]


@torch.no_grad()
def predict_answers(model: nn.Module, encoded: QAEncoded, tokenizer, batch_size: int = 32,
                    device: str = "cpu") -> dict[str, str]:
    model.eval()
    predictions = {}
    for idx, batch in indexed_batches(encoded, tokenizer, batch_size):
        out = model(**{k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS})
        for row, i in enumerate(idx):
            ex = encoded.examples[i]
            predictions[ex.qid] = best_span(out.start_logits[row], out.end_logits[row],
                                            encoded.offsets[i], ex.context)
    return predictions


def evaluate_qa(model: nn.Module, encoded: QAEncoded, tokenizer, batch_size: int = 32,
                device: str = "cpu") -> dict[str, float]:
    """Official SQuAD v2 exact match and F1 (percent), unanswerable questions included."""
    predictions = predict_answers(model, encoded, tokenizer, batch_size, device)
    return squad_v2_scores(predictions, {e.qid: e.answers for e in encoded.examples})


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> nn.Module:
    """An extractive QA model with PEFT, its `qa_outputs` head a unit; eager attention."""
    from transformers import AutoModelForQuestionAnswering

    try:
        model = AutoModelForQuestionAnswering.from_pretrained(
            resolve_model_path(cfg.model), attn_implementation="eager",
            dtype=getattr(torch, cfg.dtype))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load {cfg.model!r} for extractive QA ({exc})") from None
    # The span head (qa_outputs) starts random: it trains in full, a unit of its own.
    return apply_peft(model, cfg, heads=head_module_names(model)).to(cfg.device)


@torch.no_grad()
def evaluate_spans(model: nn.Module, encoded: QAEncoded, tokenizer, cfg: Config
                   ) -> tuple[int, int, float]:
    """(exact matches, questions, summed span loss): the `evaluate` contract, with exact
    match (official normalisation) in place of correct labels."""
    from spry.tasks.metrics import exact_match

    model.eval()
    matches, loss = 0.0, 0.0
    for idx, batch in indexed_batches(encoded, tokenizer, cfg.eval_batch_size):
        batch = {k: v.to(cfg.device) for k, v in batch.items()}
        out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
        loss += float(_span_cross_entropy(out, batch["start_positions"], batch["end_positions"],
                                          reduction="sum"))
        for row, i in enumerate(idx):
            ex = encoded.examples[i]
            pred = best_span(out.start_logits[row], out.end_logits[row], encoded.offsets[i],
                             ex.context)
            matches += max(exact_match(pred, a) for a in ex.answers) if ex.answers else \
                float(pred == "")
    return int(matches), len(encoded), loss


def held_out_metrics(model: nn.Module, encoded: QAEncoded, tokenizer, cfg: Config) -> dict:
    """`test_accuracy` (exact match) and `test_f1`, fractions, official SQuAD v2 rules."""
    scores = evaluate_qa(model, encoded, tokenizer, cfg.eval_batch_size, cfg.device)
    return {"test_accuracy": scores["exact"] / 100, "test_f1": scores["f1"] / 100}
