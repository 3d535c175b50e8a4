"""SQuAD v2 as generation on a causal LM: the model reads the context and the question and
writes the answer, or the word `unanswerable`.

Training is teacher-forced cross-entropy on the answer's tokens (and the end-of-sequence
token after them) only; the prompt is not scored. As in `verbalizer`, the decoder runs over
every position but the output embedding is applied only to the hidden states that predict
a scored token: a (scored tokens, hidden) x (hidden, vocabulary) product, never
(batch, length, vocabulary) logits nor, under forward-mode AD, their tangent.

Evaluation decodes greedily (left-padded prompts, the LM's own `generate`), cuts the text
at its first line break and scores it with the official SQuAD v2 normalisation; an answer
that normalises to `unanswerable` (or to nothing) is the empty prediction.

One window per question, as for the span head: the context is cut to fit `max_length`
with the question and the answer; an answer cut off with it is trained as `unanswerable`
(and can then only be missed at evaluation, which the official scores count against us).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutput

from spry.config import Config, ConfigError
from spry.tasks.metrics import exact_match, squad_v2_scores
from spry.data.batches import indexed_batches
from spry.data.examples import Examples
from spry.data.squad import QAExample
from spry.models import apply_peft, call_with
from spry.tasks.verbalizer import load_causal_lm

NO_ANSWER = "unanswerable"
MAX_ANSWER_TOKENS = 24
"""Longer gold answers are cut (no end token then); greedy decoding stops here too."""


def prompt_parts(question: str) -> tuple[str, str]:
    """(text before the context, text after it)."""
    return "Context: ", f"\nQuestion: {question}\nAnswer:"


@dataclass
class GenEncoded:
    """Per question: the prompt's token ids and the target's (answer tokens + end token)."""

    examples: list[QAExample]
    prompts: list[list[int]]
    targets: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompts)

    def length(self, index: int) -> int:
        return len(self.prompts[index]) + len(self.targets[index])

    def collate(self, indices: list[int], tokenizer) -> dict[str, torch.Tensor]:
        return collate_generative(self, indices, tokenizer)


def end_token_id(tokenizer) -> int:
    """The token that ends an answer: end-of-sequence, else a BERT-style [SEP]."""
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise ConfigError("model: task_head=generate needs a tokenizer with an end-of-sequence "
                          "token (a causal LM's)")
    return end


def _leading_special(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text (Llama's BOS; none for GPT-2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    return full[:full.index(plain[0])] if plain and plain[0] in full else []


def _target_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
    return ids[:MAX_ANSWER_TOKENS] + ([end_token_id(tokenizer)] if len(ids) <= MAX_ANSWER_TOKENS
                                      else [])


def encode_generative(examples: list[QAExample], tokenizer, max_length: int) -> GenEncoded:
    """Prompt = [BOS] "Context: " context "\\nQuestion: " question "\\nAnswer:"; only the
    context is shortened to fit `max_length` with the target."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("model: SQuAD needs a fast tokenizer (character offsets)")
    special = _leading_special(tokenizer)
    no_answer = _target_ids(tokenizer, NO_ANSWER)
    prompts, targets = [], []
    for ex in examples:
        before, after = prompt_parts(ex.question)
        head = special + tokenizer(before, add_special_tokens=False)["input_ids"]
        tail = tokenizer(after, add_special_tokens=False)["input_ids"]
        context = tokenizer(ex.context, add_special_tokens=False, return_offsets_mapping=True)
        target = _target_ids(tokenizer, ex.answers[0]) if ex.answers else no_answer
        room = max_length - len(head) - len(tail) - max(len(target), len(no_answer))
        if room < 1:
            raise ConfigError(f"max_length: {max_length} leaves no room for the context of "
                              f"question {ex.qid!r}; raise it (e.g. max_length=256)")
        kept = context["input_ids"][:room]
        kept_chars = context["offset_mapping"][len(kept) - 1][1]
        if ex.answers and kept_chars < ex.starts[0] + len(ex.answers[0]):
            target = no_answer  # the answer was cut off with the context
        prompts.append(head + kept + tail)
        targets.append(target)
    return GenEncoded(list(examples), prompts, targets)


def encode(examples: Examples, tokenizer, max_length: int) -> GenEncoded:
    """The TaskHead `encode` contract: the questions of `examples` (read by spry.data.squad)."""
    return encode_generative(examples.qa, tokenizer, max_length)


def collate_generative(encoded: GenEncoded, indices: list[int], tokenizer
                       ) -> dict[str, torch.Tensor]:
    """Prompt + target, right-padded; `target_mask` marks the target tokens (the scored ones)."""
    rows = [encoded.prompts[i] + encoded.targets[i] for i in indices]
    length = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    target = torch.zeros((len(rows), length), dtype=torch.bool)
    for r, (i, row) in enumerate(zip(indices, rows)):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
        target[r, len(encoded.prompts[i]):len(row)] = True
    return {"input_ids": ids, "attention_mask": mask, "target_mask": target}


class GenerativeLM(nn.Module):
    """Wraps a (PEFT-adapted) causal LM; `forward(...).logits` holds the LM logits at the
    positions that predict a target token only: shape (scored tokens, vocabulary), in the
    order of `input_ids[:, 1:][target_mask[:, 1:]]`.

    As `VerbalizerLM`, the adapted model is registered as `base_model` so parameter and
    unit names read as for a PeftModel.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.base_model = model.base_model if hasattr(model, "peft_config") else model
        self._causal_lm = [model.get_base_model() if hasattr(model, "peft_config") else model]

    @property
    def config(self):
        return self.get_base_model().config

    def get_base_model(self) -> nn.Module:
        return self._causal_lm[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                target_mask: torch.Tensor, **unused) -> CausalLMOutput:
        lm = self.get_base_model()
        hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                               use_cache=False).last_hidden_state
        scored = hidden[:, :-1][target_mask[:, 1:]]  # position t predicts token t + 1
        return CausalLMOutput(logits=lm.get_output_embeddings()(scored))


def answer_targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["input_ids"][:, 1:][batch["target_mask"][:, 1:]]


def answer_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """L(params): mean cross-entropy over the batch's target tokens."""
    targets = answer_targets(batch)

    def loss_fn(params):
        out = call_with(model, params, batch)
        return F.cross_entropy(out.logits.float(), targets)

    return loss_fn


def clean_answer(text: str) -> str:
    """The generated text as a SQuAD prediction: its first line; `unanswerable` → ""."""
    first = text.strip().split("\n", 1)[0].strip()
    return "" if exact_match(first, NO_ANSWER) else first


@torch.no_grad()
def generate_answers(model: GenerativeLM, encoded: GenEncoded, tokenizer, batch_size: int,
                     device: str = "cpu") -> dict[str, str]:
    """Greedy decoding of up to MAX_ANSWER_TOKENS tokens per question."""
    lm = model.get_base_model()
    model.eval()
    predictions = {}
    pad = tokenizer.pad_token_id
    for lo in range(0, len(encoded), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(encoded))))
        length = max(len(encoded.prompts[i]) for i in idx)
        ids = torch.full((len(idx), length), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):  # left padding: every prompt ends where decoding starts
            prompt = encoded.prompts[i]
            ids[r, length - len(prompt):] = torch.tensor(prompt)
            mask[r, length - len(prompt):] = 1
        out = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                          max_new_tokens=MAX_ANSWER_TOKENS, do_sample=False, num_beams=1,
                          pad_token_id=pad, eos_token_id=end_token_id(tokenizer))
        for r, i in enumerate(idx):
            text = tokenizer.decode(out[r, length:], skip_special_tokens=True)
            predictions[encoded.examples[i].qid] = clean_answer(text)
    return predictions


def evaluate_generation(model: GenerativeLM, encoded: GenEncoded, tokenizer, cfg: Config
                        ) -> tuple[int, int, float]:
    """(exact matches, questions, summed per-question answer loss): the `evaluate` contract,
    exact match (official normalisation) in place of correct labels."""
    scores = score_generation(model, encoded, tokenizer, cfg)
    return round(scores["exact"] * len(encoded) / 100), len(encoded), scores["loss_sum"]


@torch.no_grad()
def score_generation(model: GenerativeLM, encoded: GenEncoded, tokenizer, cfg: Config,
                     with_loss: bool = True) -> dict:
    """Official SQuAD v2 exact match and F1 (percent) of greedy answers, and (with_loss) the
    summed teacher-forced loss (each question's mean over its target tokens)."""
    model.eval()
    if len(encoded) == 0:
        return {"exact": 0.0, "f1": 0.0, "loss_sum": 0.0}
    loss = 0.0
    batches = indexed_batches(encoded, tokenizer, cfg.eval_batch_size) if with_loss else ()
    for idx, batch in batches:
        batch = {k: v.to(cfg.device) for k, v in batch.items()}
        logits = model(**batch).logits.float()
        per_token = F.cross_entropy(logits, answer_targets(batch), reduction="none")
        rows = batch["target_mask"][:, 1:].nonzero()[:, 0]  # the row of each scored token
        counts = torch.bincount(rows, minlength=len(idx)).clamp(min=1)
        loss += float((torch.zeros(len(idx)).index_add_(0, rows, per_token) / counts).sum())
    predictions = generate_answers(model, encoded, tokenizer, cfg.eval_batch_size, cfg.device)
    scores = squad_v2_scores(predictions, {e.qid: e.answers for e in encoded.examples})
    return {**scores, "loss_sum": loss}


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> GenerativeLM:
    """A causal LM with PEFT applied (eager attention), wrapped to score answer tokens."""
    model = load_causal_lm(cfg, pad_token_id)
    return GenerativeLM(apply_peft(model, cfg)).to(cfg.device)


def held_out_metrics(model: GenerativeLM, encoded: GenEncoded, tokenizer, cfg: Config) -> dict:
    """`test_accuracy` (exact match) and `test_f1`, fractions, official SQuAD v2 rules."""
    scores = score_generation(model, encoded, tokenizer, cfg, with_loss=False)
    return {"test_accuracy": scores["exact"] / 100, "test_f1": scores["f1"] / 100}
