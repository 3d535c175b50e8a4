"""A causal LM read as a classifier: label k's logit is the LM's next-token logit of label
word k's first token, at the last real (non-pad) position of the prompt.

This is prompt-based finetuning as in LM-BFF (Gao et al. 2021) and MeZO (Malladi et al.
2023): the cross-entropy runs over the label words only. No head is added, so the
trainable weights are the PEFT weights alone (no head unit).

Cost: the decoder runs over every position (attention needs them), but the output
embedding is applied to ONE hidden state per example and only to the label words' rows:
a (batch, hidden) x (hidden, labels) product instead of (batch, length, vocabulary)
logits — and, under forward-mode AD, instead of their tangent as well.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from spry.config import Config, ConfigError
from spry.models import apply_peft, load_tokenizer, resolve_model_path


class VerbalizerLM(nn.Module):
    """Wraps a (PEFT-adapted) causal LM; `forward(...).logits` has shape (batch, labels).

    The adapted model is registered as `base_model`, as in a peft PeftModel, so parameter
    names (and unit names) read the same as for a PeftModel.
    """

    def __init__(self, model: nn.Module, label_token_ids: list[int]):
        super().__init__()
        # A PeftModel's `base_model` is its LoraModel/IA3Model; a plain model stands as is.
        self.base_model = model.base_model if hasattr(model, "peft_config") else model
        self._causal_lm = [model.get_base_model() if hasattr(model, "peft_config") else model]
        self.register_buffer("label_token_ids", torch.tensor(label_token_ids), persistent=False)

    @property
    def config(self):
        return self.get_base_model().config

    def get_base_model(self) -> nn.Module:
        """The causal LM itself (PEFT layers injected in place)."""
        return self._causal_lm[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **unused) -> SequenceClassifierOutput:
        lm = self.get_base_model()
        # `base_model` of a transformers causal LM is its decoder stack without the LM head.
        hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask,
                               use_cache=False).last_hidden_state
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = last_token_index(attention_mask, input_ids.shape[1])
        final = hidden[rows, last]  # (batch, hidden): the only positions scored
        head = lm.get_output_embeddings()
        weight = head.weight.index_select(0, self.label_token_ids)
        bias = None if head.bias is None else head.bias.index_select(0, self.label_token_ids)
        return SequenceClassifierOutput(logits=nn.functional.linear(final, weight, bias))


def last_token_index(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor:
    """Index of the last attended position per row (right or left padding)."""
    if attention_mask is None:
        return torch.tensor([length - 1])
    positions = torch.arange(length, device=attention_mask.device)
    return (attention_mask.to(positions.dtype) * positions).argmax(dim=1)


def resolve_label_words(cfg: Config, num_labels: int, label_words=None) -> list[str]:
    """label_words (the setting), else the task's own label words (`label_words`: from its
    recipe, else its label names), else the label_names setting."""
    words = cfg.label_words
    if words is None:
        words = label_words
    if words is None:
        words = cfg.label_names
    if words is None:
        raise ConfigError("label_words: task_head=verbalizer needs one word per label; set "
                          "label_words=[word0, word1, ...] in label order")
    if len(words) != num_labels:
        raise ConfigError(f"label_words: {len(words)} words {list(words)} for {num_labels} "
                          "labels; give one word per label, in label order")
    return list(words)


def label_token_ids(tokenizer, words: list[str]) -> list[int]:
    """First token of each word as it follows the prompt (with a leading space).

    A tokenizer that splits the space off into its own token (SentencePiece's lone "▁")
    has that token skipped. Two words whose first tokens coincide could not be told
    apart, so that is an error.
    """
    ids = []
    for word in words:
        tokens = tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
        tokens = [t for t in tokens if tokenizer.decode([t]).strip()]
        if not tokens:
            raise ConfigError(f"label_words: {word!r} has no token in this tokenizer")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        pieces = [tokenizer.convert_ids_to_tokens(i) for i in ids]
        raise ConfigError(f"label_words: {words} begin with the same token(s) {pieces}; choose "
                          "words whose first tokens differ")
    return ids


def load_causal_lm(cfg: Config, pad_token_id: int | None) -> nn.Module:
    """The causal LM of `cfg.model` (eager attention, plain LM head checked), before PEFT;
    shared by task_head=verbalizer and task_head=generate."""
    from transformers import AutoModelForCausalLM

    try:
        # Fused SDPA kernels have no forward-AD formula; eager attention does.
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model),
                                                     attn_implementation="eager",
                                                     dtype=getattr(torch, cfg.dtype))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load {cfg.model!r} as a causal LM ({exc}); "
                          f"task_head={cfg.task_head} needs a decoder (e.g. smollm2-135m)"
                          ) from None
    check_plain_lm_head(model, cfg.model, cfg.task_head)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
        model.generation_config.pad_token_id = pad_token_id
    return model


def load_model(cfg: Config, num_labels: int, pad_token_id: int | None,
               label_words=None) -> VerbalizerLM:
    """A causal LM with PEFT applied (eager attention), wrapped as a label-word classifier
    scoring `label_words` (resolve_label_words)."""
    ids = label_token_ids(load_tokenizer(cfg), resolve_label_words(cfg, num_labels, label_words))
    model = load_causal_lm(cfg, pad_token_id)
    return VerbalizerLM(apply_peft(model, cfg), ids).to(cfg.device)


def check_plain_lm_head(model, name: str, task_head: str) -> None:
    """The verbalizer (and generative QA's loss) applies the output embedding straight to
    the decoder's last hidden state; refuse models whose LM logits need more (an MLM
    transform, soft-capping, a logit scale), which it would silently skip."""
    kind = type(model).__name__
    extra = [k for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
             if getattr(model.config, k, None) not in (None, 1, 1.0)]
    if not kind.endswith("ForCausalLM") or extra:
        raise ConfigError(f"model: {name!r} loads as {kind}{' with ' + str(extra) if extra else ''}"
                          f"; task_head={task_head} needs a causal LM whose logits are its output "
                          "embedding of the last hidden state (Llama, OPT, Qwen2, Mistral, "
                          "SmolLM2)")
