"""The task heads behind one interface, and the registry `HEADS` that `task_head=` names.

A head decides everything task-specific a run does: which model it loads (and which of
its modules train in full), how examples become batches, the loss a step differentiates,
and how a split is scored. The rest of Spry (clients, engines, the server) asks the head
and never branches on the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from spry.config import Config
from spry.data.batches import encode as encode_texts
from spry.tasks import (classifier, multilabel, regression, squad, squad_generate, tokens,
                        verbalizer)


@dataclass(frozen=True)
class TaskHead:
    load_model: Callable
    """(cfg, num_labels, pad_token_id, label_words) -> the PEFT-adapted model (only the
    trainable weights require grad)."""
    encode: Callable
    """(Examples, tokenizer, max_length) -> an encoded split: len() and
    `.collate(indices, tokenizer)` -> a batch dict and `.length(index)` -> its tokens
    (spry.data.batches: iterate_batches, indexed_batches)."""
    loss: Callable
    """(model, batch) -> L(params), the mean loss with `params` swapped in functionally."""
    evaluate: Callable
    """(model, encoded, tokenizer, cfg) -> (correct, total, summed loss); QA heads count
    an exact match as correct, regression nothing (a score has no accuracy)."""
    held_out_metrics: Callable
    """(model, encoded, tokenizer, cfg) -> metrics.jsonl's test_* values (fractions)."""


HEADS: dict[str, TaskHead] = {
    "classifier": TaskHead(classifier.load_model, encode_texts, classifier.task_loss,
                           classifier.evaluate, classifier.held_out_metrics),
    # The classifier's model and loss with a sigmoid a label: a set of labels a text.
    "multilabel": TaskHead(multilabel.load_model, encode_texts, classifier.task_loss,
                           multilabel.evaluate, multilabel.held_out_metrics),
    # The classifier's model and loss with one output: a score, not a class.
    "regression": TaskHead(regression.load_model, encode_texts, classifier.task_loss,
                           regression.evaluate, regression.held_out_metrics),
    # The classifier's head on every token state: a tag a word (named entities, parts of
    # speech); its loss the classifier's, over the labelled tokens.
    "token": TaskHead(tokens.load_model, tokens.encode, classifier.task_loss, tokens.evaluate,
                      tokens.held_out_metrics),
    # A causal LM read as a classifier: its logits are the label words', so the
    # classifier's loss and scores apply unchanged.
    "verbalizer": TaskHead(verbalizer.load_model, encode_texts, classifier.task_loss,
                           classifier.evaluate, classifier.held_out_metrics),
    "span": TaskHead(squad.load_model, squad.encode, squad.span_loss, squad.evaluate_spans,
                     squad.held_out_metrics),
    "generate": TaskHead(squad_generate.load_model, squad_generate.encode,
                         squad_generate.answer_loss, squad_generate.evaluate_generation,
                         squad_generate.held_out_metrics),
}


def head_of(cfg: Config) -> TaskHead:
    return HEADS[cfg.task_head]


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None, label_words=None):
    """The model of cfg's task head (TaskHead.load_model)."""
    return head_of(cfg).load_model(cfg, num_labels, pad_token_id, label_words)
