"""A small sentiment task generated from templates: no files, no network.

It exists so `spry run` works offline on a fresh machine. The label is carried by the
sentiment words, so a model must read the words (not the length or the template) to
beat chance; a pretrained encoder learns it within a few rounds.
"""

from __future__ import annotations

import torch

from spry.seeds import generator

POSITIVE = ["good", "great", "wonderful", "excellent", "delightful", "brilliant", "moving",
            "charming", "superb", "enjoyable", "funny", "beautiful"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "poor", "tedious", "clumsy",
            "painful", "bland", "weak", "ugly"]
SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the story", "the script",
            "the ending", "the soundtrack", "the cast", "the director's work"]
TEMPLATES = ["{s} was {w}.", "i thought {s} was really {w}.", "honestly, {s} is {w}.",
             "{s} felt {w} from start to finish.", "what a {w} experience: {s}.",
             "everyone agreed {s} was {w}."]
LABEL_NAMES = ("negative", "positive")


def make_sentiment(n: int, seed: int) -> tuple[list[str], list[int]]:
    g = generator(seed)

    def pick(options: list[str]) -> str:
        return options[int(torch.randint(len(options), (1,), generator=g))]

    texts, labels = [], []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=g))
        word = pick(POSITIVE if label else NEGATIVE)
        texts.append(pick(TEMPLATES).format(s=pick(SUBJECTS), w=word))
        labels.append(label)
    return texts, labels
