"""task_head=token's data: a sentence's words and a tag for each (named entities, parts of
speech, chunks), from a column of words and one of their tags (the layout of `datasets`'
CoNLL-2003 and WNUT-17: `tokens`, `ner_tags`) or from a CoNLL file (spry.data.files reads it
into those two columns). Each row's tags become their indices in the tag set; a row is
dealt and held out by its rarest tag, so the rare entity types reach every split."""

from __future__ import annotations

import logging

from spry.config import Config, ConfigError
from spry.data.examples import Examples
from spry.data.files import Rows
from spry.data.columns import group_of
from spry.data.labels import _label_order, as_int, class_index, label_key, parse_list_text

log = logging.getLogger(__name__)

WORD_COLUMNS = ("tokens", "words", "token", "word", "text", "sentence")
"""Where a sentence's words are looked for when text_column is unset, in this order."""
TAG_COLUMNS = ("ner_tags", "tags", "ner", "labels", "label", "pos_tags", "upos", "xpos",
               "chunk_tags", "tag")
"""Where their tags are looked for when label_column is unset, in this order."""


def token_columns(columns: list[str], cfg: Config, where: str) -> tuple[str, str]:
    """(words, tags) columns: the settings where given, else the usual names."""
    words = cfg.text_column or next((c for c in WORD_COLUMNS if c in columns), None)
    tags = cfg.label_column or next((c for c in TAG_COLUMNS if c in columns and c != words),
                                    None)
    for setting, column, what in (("text_column", words, "the words"),
                                  ("label_column", tags, "their tags")):
        if column is None or column not in columns:
            named = f"has no column {column!r}" if column else "has none of the usual names"
            raise ConfigError(f"{setting}: {where} {named} for {what} (task_head=token); its "
                              f"columns are {columns}: set {setting}=<the column of {what}>")
    return words, tags


def cell_list(value) -> list | None:
    """A cell as a list: a list as it is, a list written as text (`['EU', 'rejects']` or
    JSON), else a string's whitespace-separated parts; None for no value."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return parse_list_text(str(value).strip(), None)


def row_words_tags(rows: Rows, i: int, words_column: str, tags_column: str, where: str
                   ) -> tuple[list[str], list]:
    """Row i's words and its tags as written (a ClassLabel's integers as their names),
    refused with the row's line where they are missing or their counts differ."""
    row, name = rows.rows[i], rows.name(i)
    words = cell_list(row.get(words_column))
    tags = cell_list(row.get(tags_column))
    if not words:
        raise ConfigError(f"text_column: {where} {name} has no words in column "
                          f"{words_column!r}; give every sentence its words, or drop the row")
    if tags is None or len(tags) != len(words):
        got = "no tags" if tags is None else f"{len(tags)} tags"
        raise ConfigError(f"label_column: {where} {name} has {len(words)} words in column "
                          f"{words_column!r} and {got} in column {tags_column!r}; give each "
                          "word one tag (task_head=token)")
    names = rows.class_names.get(tags_column)
    if names is not None:
        tags = [names[t] if isinstance(t, int) and 0 <= t < len(names) else t for t in tags]
    for tag in tags:
        if tag is None or isinstance(tag, (list, dict)) or not str(tag).strip():
            raise ConfigError(f"label_column: {where} {name} has the tag {tag!r} in column "
                              f"{tags_column!r}; give each word a tag (`O` for none)")
    return [str(w) for w in words], tags


def tag_set(rows: Rows, words: str, tags: str, where: str) -> tuple[str, ...]:
    """The tags of `rows`: a ClassLabel's names in its order, else those written, sorted
    (0..max where they are integers from 0)."""
    if tags in rows.class_names:
        return rows.class_names[tags]
    found = set()
    for i in range(len(rows)):
        found.update(label_key(t) for t in row_words_tags(rows, i, words, tags, where)[1])
    names = _label_order(found)
    if all(as_int(t) is not None for t in found):
        log.info("%s: the tags are integers without names (%s); where they are entity tags, "
                 "label_names=O,B-PER,I-PER,... in their order names them, and the held-out "
                 "split is scored per entity too", where, ",".join(names))
    return names


def to_token_examples(rows: Rows, words: str, tags: str, names: tuple[str, ...], where: str,
                      group: str | None = None) -> Examples:
    """The rows as examples: their words (the text: the words joined by spaces) and a list
    of tag indices a sentence; a tag outside `names` is refused with its row."""
    if not rows.rows:
        raise ConfigError(f"dataset: {where} has no rows")
    lookup = {n: i for i, n in enumerate(names)}
    sentences, labels, groups = [], [], [] if group else None
    for i, row in enumerate(rows.rows):
        found, raw = row_words_tags(rows, i, words, tags, where)
        labels.append([class_index(t, lookup, names, 0, where, rows.name(i)) for t in raw])
        sentences.append(found)
        if group:
            groups.append(group_of(row.get(group), group, where, rows.name(i)))
    return Examples([" ".join(s) for s in sentences], labels, groups=groups, words=sentences)


def rarest_tags(labels: list[list[int]]) -> list[int]:
    """Each sentence's rarest tag (by its count over all words; ties: the first)."""
    counts: dict[int, int] = {}
    for sentence in labels:
        for tag in sentence:
            counts[tag] = counts.get(tag, 0) + 1
    return [min(sentence, key=lambda t: (counts[t], t)) for sentence in labels]

