"""Tokenize once; pad each minibatch only to its longest sequence.

An encoded split knows how to collate its own rows (`collate(indices, tokenizer)`), so the
one batch generator here, a torch DataLoader over row indices, serves every task head:
`Encoded` is labelled text (the classifier and verbalizer heads), padded by transformers'
DataCollatorWithPadding; the QA heads' encodings live with them in spry.tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler

from spry.data.examples import Examples
from spry.seeds import generator


@dataclass
class Encoded:
    features: list[dict[str, list[int]]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> "Encoded":
        return Encoded([self.features[i] for i in indices], [self.labels[i] for i in indices])

    def length(self, index: int) -> int:
        return len(self.features[index]["input_ids"])

    def collate(self, indices: list[int], tokenizer) -> dict[str, torch.Tensor]:
        from transformers import DataCollatorWithPadding

        rows = [{**self.features[i], "labels": self.labels[i]} for i in indices]
        return dict(DataCollatorWithPadding(tokenizer, return_tensors="pt")(rows))


def encode(examples: Examples, tokenizer, max_length: int) -> Encoded:
    """Texts (and pairs) tokenized, truncated to max_length, with their labels."""
    if len(examples) == 0:
        return Encoded([], [])
    enc = tokenizer(examples.texts, examples.pairs, truncation=True, max_length=max_length)
    keys = [k for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
    features = [{k: enc[k][i] for k in keys} for i in range(len(examples))]
    return Encoded(features, list(examples.labels))


def iterate_batches(encoded, tokenizer, batch_size: int, seed: int | None = None
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over an encoded split in batches; shuffled by `seed` (a RandomSampler on
    its own seeded Generator), or in order when `seed` is None."""
    return (batch for _, batch in _loader(encoded, tokenizer, batch_size, seed, False))


def indexed_batches(encoded, tokenizer, batch_size: int, by_length: bool = True
                    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Evaluation batches with the row indices each holds, for scores that map a row back
    to its example; shortest rows first unless `by_length` is False, so a batch pads
    little (SST-2 dev with MiniLM: half the time of the file's order)."""
    return _loader(encoded, tokenizer, batch_size, None, by_length)


def _loader(encoded, tokenizer, batch_size: int, seed: int | None, by_length: bool):
    rows = range(len(encoded))
    if by_length:
        sampler = sorted(rows, key=encoded.length)
    else:
        sampler = None if seed is None else RandomSampler(rows, generator=generator(seed))
    # The loader's own generator: without one, starting an iterator draws its base seed
    # from the global RNG, which dropout masks read (spry.seeds.seeded_global_rng).
    return iter(DataLoader(rows, batch_size=batch_size, sampler=sampler,
                           generator=generator(0 if seed is None else seed),
                           collate_fn=lambda idx: (idx, encoded.collate(idx, tokenizer))))
