"""task_head=token: a tag for every word (named entities, parts of speech, chunks): sequence
tagging, FedNLP's third task kind beside classification and question answering.

The model is the classifier's linear head applied to every token state instead of a pooled
one (`TokenClassifier`); each word is tagged by its first sub-word token, the rest of its
tokens and the special tokens carry no label (-100, as transformers' token-classification
examples do). Everything the pooled heads have carries over with the labelled tokens in
place of the texts: the loss is the mean cross-entropy over a batch's labelled tokens, the
exact head gradient mean (p − y) hᵀ over them (spry.tasks.linear_head.head_gradient), round
0's statistics are sums over labelled token states (spry.engines.node), and per-example
tangents see each sentence's share of the batch's loss.

A split is scored per word: `accuracy` over every word (a word cut off by max_length is
predicted as the tag `O`, or the first tag where there is no `O`: the model never saw it),
macro-F1 over the tags, and where the tags are BIO/IOBES-shaped (`B-PER`, `I-PER`, `O`) the
entity-level precision, recall and F1 of seqeval (the CoNLL-2003 scorer's definition: an
entity counts only where its type and both its ends are right).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spry.config import Config, ConfigError
from spry.data.batches import indexed_batches
from spry.data.examples import Examples
from spry.models import apply_peft, head_module_names, resolve_model_path
from spry.tasks.linear_head import UNLABELLED_TOKEN
from spry.tasks.metrics import macro_f1
from spry.tasks.pooling import PooledClassifier, PooledOutput

ENTITY_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


class TokenClassifier(PooledClassifier):
    """A transformer body and one linear head named `classifier` over every token state:
    `logits` (batch, tokens, tags), `features` the token states the head read."""

    def __init__(self, body: nn.Module, num_labels: int):
        super().__init__(body, num_labels, pooling=None)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **inputs) -> PooledOutput:
        body = getattr(self, self.body_name)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, **inputs)[0]
        features = hidden.to(self.classifier.weight.dtype)
        return PooledOutput(self.classifier(features), features)


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> nn.Module:
    """The token classifier with PEFT applied (pooling=model: the architecture's own
    *ForTokenClassification, whose head reads dropout-ed token states)."""
    from transformers import AutoModel, AutoModelForTokenClassification

    path = resolve_model_path(cfg.model)
    dtype = getattr(torch, cfg.dtype)
    try:
        if cfg.pooling == "model":
            model = AutoModelForTokenClassification.from_pretrained(
                path, num_labels=num_labels, attn_implementation="eager", dtype=dtype,
                ignore_mismatched_sizes=True)
        else:
            model = TokenClassifier(AutoModel.from_pretrained(
                path, attn_implementation="eager", dtype=dtype), num_labels)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load {cfg.model!r} ({exc}); give a hub name (online), "
                          "a local directory, or all-minilm-l6-v2") from None
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return apply_peft(model, cfg, heads=head_module_names(model)).to(cfg.device)


# --- words to tokens ---------------------------------------------------------------------
@dataclass
class TokenEncoded:
    """Tokenized sentences: each token's tag (UNLABELLED_TOKEN but on a word's first token), and for
    each sentence its words' gold tags and the token each word is read at (-1: cut off)."""

    features: list[dict[str, list[int]]]
    labels: list[list[int]]
    word_tags: list[list[int]]
    word_tokens: list[list[int]]

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, indices: list[int]) -> "TokenEncoded":
        return TokenEncoded(*([part[i] for i in indices] for part in
                              (self.features, self.labels, self.word_tags, self.word_tokens)))

    def length(self, index: int) -> int:
        return len(self.features[index]["input_ids"])

    def collate(self, indices: list[int], tokenizer) -> dict[str, torch.Tensor]:
        from transformers import DataCollatorForTokenClassification

        rows = [{**self.features[i], "labels": self.labels[i]} for i in indices]
        collator = DataCollatorForTokenClassification(
            tokenizer, label_pad_token_id=UNLABELLED_TOKEN, return_tensors="pt")
        return dict(collator(rows))


def encode(examples: Examples, tokenizer, max_length: int) -> TokenEncoded:
    """Each sentence's words joined by spaces and tokenized (truncated to max_length); a
    word's tag goes on the first token that ends inside it. Through character offsets
    rather than `is_split_into_words`, so byte-level BPE tokenizers (GPT-2, SmolLM2) need no
    `add_prefix_space`."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model: task_head=token needs a fast tokenizer (character offsets "
                          "map tokens to words); give a model that ships tokenizer.json")
    if len(examples) == 0:
        return TokenEncoded([], [], [], [])
    words = examples.words or [text.split() for text in examples.texts]
    enc = tokenizer([" ".join(w) for w in words], truncation=True, max_length=max_length,
                    return_offsets_mapping=True)
    keys = [k for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
    features, labels, word_tokens = [], [], []
    for i, (sentence, tags) in enumerate(zip(words, examples.labels)):
        at = _first_tokens(sentence, enc["offset_mapping"][i])
        row = [UNLABELLED_TOKEN] * len(enc["input_ids"][i])
        for tag, token in zip(tags, at):
            if token >= 0:
                row[token] = tag
        features.append({k: enc[k][i] for k in keys})
        labels.append(row)
        word_tokens.append(at)
    return TokenEncoded(features, labels, [list(t) for t in examples.labels], word_tokens)


def _first_tokens(words: list[str], offsets) -> list[int]:
    """For each word, the first token whose last character lies in it (-1: none, the word
    was cut off or is empty)."""
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    first = [-1] * len(words)
    for token, (start, end) in enumerate(offsets):
        if end <= start:  # a special token
            continue
        w = bisect.bisect_right(starts, end - 1) - 1
        if 0 <= w < len(words) and end - 1 < starts[w] + len(words[w]) and first[w] < 0:
            first[w] = token
    return first


# --- the loss ------------------------------------------------------------------------------
def token_losses(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "none"
                 ) -> torch.Tensor:
    """Cross-entropy over the labelled tokens of (B, T, tags) logits: their mean
    (reduction="mean"), or each sentence's share of it (reduction="none": B · its summed
    token losses / the batch's labelled tokens, so their mean is the batch's mean loss, as
    per-example tangents need). No data-dependent shapes, so vmap can batch it."""
    terms = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=UNLABELLED_TOKEN,
                            reduction="none")  # (B, T), 0 where ignored
    count = (labels != UNLABELLED_TOKEN).sum().clamp(min=1)
    if reduction == "mean":
        return terms.sum() / count
    if reduction == "sum":
        return terms.sum()
    return terms.sum(1) * (labels.shape[0] / count)


# --- scores --------------------------------------------------------------------------------
def default_tag(names) -> int:
    """What a word the model never saw (cut off by max_length) is predicted as."""
    names = list(names or ())
    return names.index("O") if "O" in names else 0


@torch.no_grad()
def predict_tags(model: nn.Module, data: TokenEncoded, tokenizer, cfg: Config
                 ) -> tuple[list[list[int]], list[list[float | None]], float, int]:
    """(each sentence's predicted tag a word, that tag's probability (None where the word
    was cut off), the summed cross-entropy over the words seen, how many were seen)."""
    fallback = default_tag(cfg.label_names)
    tags: list = [None] * len(data)
    probabilities: list = [None] * len(data)
    loss, seen = 0.0, 0
    model.eval()
    for rows, batch in indexed_batches(data, tokenizer, cfg.eval_batch_size):
        batch = {k: v.to(cfg.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        loss += float(token_losses(logits, labels, "sum"))
        seen += int((labels != UNLABELLED_TOKEN).sum())
        # One transfer a batch: per-word tensor indexing would cost a call a word.
        top, best = (x.tolist() for x in logits.softmax(-1).max(-1))
        for j, row in enumerate(rows):
            at = data.word_tokens[row]
            probabilities[row] = [top[j][t] if t >= 0 else None for t in at]
            tags[row] = [best[j][t] if t >= 0 else fallback for t in at]
    return tags, probabilities, loss, seen


def evaluate(model: nn.Module, data: TokenEncoded, tokenizer, cfg: Config
             ) -> tuple[int, int, float]:
    """(words tagged right, words, summed cross-entropy over the words seen)."""
    tags, _, loss, _ = predict_tags(model, data, tokenizer, cfg)
    pairs = [(p, y) for pred, gold in zip(tags, data.word_tags) for p, y in zip(pred, gold)]
    return sum(p == y for p, y in pairs), len(pairs), loss


def held_out_metrics(model: nn.Module, data: TokenEncoded, tokenizer, cfg: Config) -> dict:
    """`test_accuracy` (words tagged right), `test_loss` (mean cross-entropy a word seen),
    `test_macro_f1` over the tags, how many tags the model predicts at all, and where the
    tags name entities (BIO/IOBES) `test_entity_f1` with its precision and recall."""
    tags, _, loss, seen = predict_tags(model, data, tokenizer, cfg)
    predicted = [t for sentence in tags for t in sentence]
    gold = [t for sentence in data.word_tags for t in sentence]
    out = {"test_accuracy": sum(p == y for p, y in zip(predicted, gold)) / max(len(gold), 1),
           "test_loss": loss / max(seen, 1),
           "test_macro_f1": macro_f1(predicted, gold),
           "test_predicted_classes": len(set(predicted))}
    names = list(cfg.label_names or ())
    if names and is_entity_tagging(names):
        out.update(entity_scores([[names[t] for t in s] for s in data.word_tags],
                                 [[names[t] for t in s] for s in tags]))
    return out


def is_entity_tagging(names) -> bool:
    """Tags that name entities: every one `O` or prefixed B-/I-/E-/S-/L-/U- (BIO, IOBES),
    with at least one prefixed."""
    prefixed = [n for n in names if n.upper().startswith(ENTITY_PREFIXES)]
    return bool(prefixed) and all(n == "O" or n in prefixed for n in names)


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level micro precision, recall and F1 (seqeval's default, conlleval's
    definition)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {"test_entity_f1": float(f1_score(gold, predicted, zero_division=0)),
            "test_entity_precision": float(precision_score(gold, predicted, zero_division=0)),
            "test_entity_recall": float(recall_score(gold, predicted, zero_division=0))}

