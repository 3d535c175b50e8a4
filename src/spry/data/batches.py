"""Tokenize once; pad each minibatch only to its longest sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from spry.data.sources import Examples
from spry.seeds import generator


@dataclass
class Encoded:
    features: list[dict[str, list[int]]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def encode(examples: Examples, tokenizer, max_length: int, task_head: str = "classifier"
           ) -> Encoded:
    if examples.qa is not None and task_head == "generate":
        from spry.tasks.squad_generate import encode_generative

        return encode_generative(examples.qa, tokenizer, max_length)
    if examples.qa is not None:
        from spry.tasks.squad import encode_qa

        return encode_qa(examples.qa, tokenizer, max_length)
    if len(examples) == 0:
        return Encoded([], [])
    enc = tokenizer(examples.texts, examples.pairs, truncation=True, max_length=max_length)
    keys = [k for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
    features = [{k: enc[k][i] for k in keys} for i in range(len(examples))]
    return Encoded(features, list(examples.labels))


def collate(encoded: Encoded, indices: list[int], tokenizer) -> dict[str, torch.Tensor]:
    from spry.tasks.squad_generate import GenEncoded, collate_generative

    if isinstance(encoded, GenEncoded):  # generative QA
        return collate_generative(encoded, indices, tokenizer)
    if not isinstance(encoded, Encoded):  # extractive QA: spry.tasks.squad.QAEncoded
        from spry.tasks.squad import collate_qa

        return collate_qa(encoded, indices, tokenizer)
    batch = tokenizer.pad([encoded.features[i] for i in indices], return_tensors="pt")
    batch = dict(batch)
    batch["labels"] = torch.tensor([encoded.labels[i] for i in indices])
    return batch


def iterate_batches(encoded: Encoded, tokenizer, batch_size: int, seed: int | None = None
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """One pass; shuffled by `seed` (None keeps the order, for evaluation)."""
    n = len(encoded)
    order = list(range(n)) if seed is None else torch.randperm(n, generator=generator(seed)).tolist()
    for start in range(0, n, batch_size):
        yield collate(encoded, order[start:start + batch_size], tokenizer)
