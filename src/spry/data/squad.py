"""SQuAD v2 (Rajpurkar et al. 2018) as read from the official JSON: questions with their
contexts and gold answers, unanswerable ones included, and the article-wise split into the
clients' part and the held-out part. The heads that train on it are in spry.tasks.squad
(an encoder's span head) and spry.tasks.squad_generate (a decoder writes the answer)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from spry.config import ConfigError
from spry.data.examples import Examples


@dataclass
class QAExample:
    qid: str
    title: str
    question: str
    context: str
    answers: list[str]
    """Gold answer texts; empty for an unanswerable question."""
    starts: list[int]
    """Character offsets of `answers` in `context`."""


def read_squad_v2(path: str | Path) -> list[QAExample]:
    """Every question of an official SQuAD v2.0 JSON file, unanswerable ones included."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"dataset: cannot read {path} as SQuAD v2.0 JSON ({exc})") from None
    out = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                out.append(QAExample(qa["id"], article.get("title", ""), qa["question"],
                                     paragraph["context"], [a["text"] for a in answers],
                                     [a["answer_start"] for a in answers]))
    return out


def split_by_article(examples: list[QAExample], held_out_fraction: float, seed: int
                     ) -> tuple[list[QAExample], list[QAExample]]:
    """(client data, held-out data) with whole articles on one side, so no held-out
    question shares a context with a training one."""
    titles = sorted({e.title for e in examples})
    random.Random(seed).shuffle(titles)
    held = set(titles[: max(1, round(held_out_fraction * len(titles)))])
    return ([e for e in examples if e.title not in held], [e for e in examples if e.title in held])


# --- as a federated task (dataset=squad_v2) ------------------------------------------
LABEL_NAMES = ("unanswerable", "answerable")
"""The "label" of a question, used only to deal questions to clients (Dirichlet α over
answerable vs unanswerable)."""
HELD_OUT_FRACTION = 0.25
SPLIT_SEED = 0


def _as_examples(examples: list[QAExample]) -> Examples:
    return Examples([e.question for e in examples], [int(bool(e.answers)) for e in examples],
                    [e.context for e in examples], qa=list(examples))


def read_client_part(path: Path, names: tuple[str, ...] = LABEL_NAMES):
    """The questions of the articles not held out (the clients' data)."""
    return _as_examples(split_by_article(read_squad_v2(path), HELD_OUT_FRACTION, SPLIT_SEED)[0])


def read_held_out_part(path: Path, names: tuple[str, ...] = LABEL_NAMES):
    """The questions of the held-out articles (the global test split)."""
    return _as_examples(split_by_article(read_squad_v2(path), HELD_OUT_FRACTION, SPLIT_SEED)[1])
