"""MultiRC (Khashabi et al. 2018; SuperGLUE): multi-sentence reading comprehension.

Each question has several answer options, any number of them correct. As in SuperGLUE,
every answer option is one binary example: (passage, question + answer) -> true/false.
The passage is the first text and the question/answer the pair, so truncation to
max_length (longest first) shortens the passage and keeps the question, the answer and
the closing prompt that a verbalizer reads its label word after.

Metrics: accuracy over answer options and SuperGLUE's F1a, the F1 of the "true" class over
all answer options (spry.tasks.metrics.binary_f1); a verbalizer reads LABEL_WORDS.
"""

from __future__ import annotations

import json
from pathlib import Path

from spry.config import ConfigError
from spry.data.examples import Examples

LABEL_NAMES = ("false", "true")
# Read as the next word after "Is the answer correct?".
LABEL_WORDS = ("No", "Yes")


def format_pair(question: str, answer: str) -> str:
    return f"Question: {question}\nAnswer: {answer}\nIs the answer correct?"


def read_multirc(path: Path, names: tuple[str, ...] = LABEL_NAMES):
    """One example per answer option of a SuperGLUE MultiRC .jsonl file (labelled)."""
    texts, pairs, labels = [], [], []
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            passage = json.loads(line)["passage"]
            for question in passage["questions"]:
                for answer in question["answers"]:
                    if "label" not in answer:
                        raise ConfigError(f"dataset: {path} line {line_number} has an answer "
                                          "without a label (an unlabelled test file?)")
                    texts.append(passage["text"].strip() + "\n")
                    pairs.append(format_pair(question["question"], answer["text"]))
                    labels.append(int(answer["label"]))
    if not labels:
        raise ConfigError(f"dataset: {path} holds no MultiRC answer options")
    if len(names) != 2:
        raise ConfigError(f"label_names: MultiRC is binary, got {list(names)}")
    return Examples(texts, labels, pairs)
