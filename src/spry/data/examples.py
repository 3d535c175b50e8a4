"""Examples: a task's texts and labels as read, before tokenizing. Imports nothing of Spry,
so every layer (data readers, task heads) can hand them around."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Examples:
    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None
    qa: list | None = None
    """Extractive QA (spry.data.squad.QAExample per row; texts are the questions, pairs
    the contexts, labels 1 if answerable)."""
    groups: list[str] | None = None
    """partition_by: each row's value of that column, the client it belongs to."""
    words: list[list[str]] | None = None
    """task_head=token: each row's words (texts are them joined by spaces; labels a list of
    tag indices, one a word)."""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> "Examples":
        return Examples([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                        None if self.pairs is None else [self.pairs[i] for i in indices],
                        None if self.qa is None else [self.qa[i] for i in indices],
                        None if self.groups is None else [self.groups[i] for i in indices],
                        None if self.words is None else [self.words[i] for i in indices])
