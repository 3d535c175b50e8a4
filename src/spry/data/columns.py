"""Which columns of a file hold the text, its pair and the label: the settings where given,
else the usual names and layouts; a headerless csv or unusual names are refused with the
settings to copy; a row's texts read as the model reads them."""

from __future__ import annotations

import re

from spry.config import Config, ConfigError
from spry.data.files import Rows, data_suffix
from spry.data.labels import label_columns, label_key

TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "question", "query",
                "body", "comment", "tweet", "utterance", "description", "abstract", "title")
"""Where a file's text is looked for when text_column is unset, in this order; then a
column whose name has the word `text` in it (`comment_text`)."""


LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "sentiment", "stars",
                 "rating", "y")
"""Where a file's label is looked for when label_column is unset, in this order."""


PAIR_LAYOUTS = (("premise", "hypothesis"), ("sentence1", "sentence2"),
                ("sentence_a", "sentence_b"), ("text_a", "text_b"), ("text1", "text2"),
                ("question1", "question2"), ("question", "passage"), ("question", "context"),
                ("question", "paragraph"), ("question", "sentence"), ("query", "passage"),
                ("query", "document"), ("claim", "evidence"), ("question", "answer"),
                ("query", "response"), ("prompt", "response"))
"""The usual sentence-pair layouts (first text, second text), detected when pair_column is
unset: a file with both columns is read as pairs."""


def resolve_columns(columns: list[str], cfg: Config, where: str) -> tuple[str, str | None, str]:
    """(text, pair, label) columns: the settings where given, else the usual names, else
    (for the label) the one column left beside the text; a label column the data lacks is
    refused here."""
    text, pair = text_columns(columns, cfg, where)
    label = cfg.label_column or next((c for c in LABEL_COLUMNS if c in columns), None)
    if label is None:
        # a file of a text and one more column (`is_positive`, `topic`): that one is the label
        rest = [c for c in columns if c not in (text, pair, cfg.partition_by)]
        label = rest[0] if len(rest) == 1 else "label"
    several = label_columns(label, columns)
    if several is not None:  # toxic,insult,threat: one 0/1 column a label
        if cfg.task_head != "multilabel":
            raise ConfigError(f"label_column: {label!r} names several columns, one a label: "
                              "a multi-label task; set task_head=multilabel (or name one "
                              "label column)")
        missing = [c for c in several if c not in columns]
        if missing:
            raise _no_label_column(where, missing[0], columns)
    elif label not in columns:
        raise _no_label_column(where, label, columns)
    return text, pair, label


def text_columns(columns: list[str], cfg: Config, where: str) -> tuple[str, str | None]:
    """(text, pair) columns: the settings where given, else the usual names and layouts."""
    text, pair = cfg.text_column, cfg.pair_column
    if text is None and pair is None:
        layout = next((lay for lay in PAIR_LAYOUTS if set(lay) <= set(columns)), None)
        if layout is not None:
            text, pair = layout
    if text is None:
        text = next((c for c in (*TEXT_COLUMNS, "premise", "sentence1") if c in columns), None)
    if text is None:  # `comment_text`, `review_text`, `full_text`: a name with the word text
        text = next((c for c in columns if "text" in re.split(r"[^a-z]+", str(c).lower())),
                    None)
    if text is None:
        raise ConfigError(f"text_column: {where} has columns {columns}; set "
                          "text_column=<the column holding the text>")
    if pair is None and cfg.pair_column is None:
        pair = next((second for first, second in PAIR_LAYOUTS
                     if first == text and second in columns), None)
    return text, pair


def _no_label_column(where: str, label: str, columns: list[str]) -> ConfigError:
    return ConfigError(f"label_column: {where} has no column {label!r}; its columns are "
                       f"{sorted(columns)}; set label_column=<the label column>")


def raise_if_headerless(rows: Rows, cause: ConfigError) -> None:
    """A csv/tsv whose first line is data, not a header, gets its columns named by that
    line: say so, with a `column_names` to copy, instead of listing the data as columns.
    The sign: a column's "name" recurs as a value of that column (a label such as
    `sports`, a class id such as `3`), or is longer than a name would be."""
    first = rows.shards[0][1].path if rows.shards else rows.path
    if data_suffix(first) not in (".csv", ".tsv") or not rows.rows:
        return
    names = list(rows.rows[0])
    recurs = any(any(str(row.get(n)) == n for row in rows.rows[:1000]) for n in names)
    if not recurs and max(len(n) for n in names) <= 40:
        return
    guess = _guess_column_names(rows, names)
    shown = ", ".join(repr(n if len(n) <= 40 else n[:37] + "...") for n in names)
    raise ConfigError(
        f"dataset: the first line of {rows.path} looks like data, not a header ({shown}); "
        f"if the file has no header row, name its {len(names)} columns, e.g. "
        f"column_names={','.join(guess)} (or add a header line)") from cause


def _guess_column_names(rows: Rows, names: list[str]) -> list[str]:
    """`label` and `text` where `_guess_roles` puts them, `column<i>` for the rest: a guess
    the user checks."""
    text, label = _guess_roles(rows, names)
    return ["label" if n == label else "text" if n == text else f"column{i + 1}"
            for i, n in enumerate(names)]


def _guess_roles(rows: Rows, names: list[str]) -> tuple[str | None, str | None]:
    """(text, label) by their values: the text the column with the longest values, the
    label the one with the fewest distinct values (two or more; then the shortest) among
    the rest; None where no column fits."""
    sample = rows.rows[:1000]
    values = {n: [str(v) for r in sample if (v := r.get(n)) is not None and str(v).strip()]
              for n in names}
    length = {n: sum(map(len, vs)) for n, vs in values.items()}
    text = max((n for n in names if values[n]), key=lambda n: length[n], default=None)
    label = min((n for n in names if n != text and len(set(values[n])) >= 2),
                key=lambda n: (len(set(values[n])), length[n]), default=None)
    return text, label


def raise_with_guess(rows: Rows, cause: ConfigError, cfg: Config) -> None:
    """A file whose columns have none of the usual names: the error says which columns
    look like the text and the label, as settings to copy (those not set already); a
    file of words and their tags is told task_head=token."""
    if not rows.rows:
        return
    tagged = looks_like_tagging(rows) if cfg.task_head != "token" else None
    if tagged is not None:
        raise ConfigError(f"task_head: {rows.path} has a column of words ({tagged[0]!r}) and one "
                          f"of their tags ({tagged[1]!r}), a tag a word: set task_head=token "
                          "(sequence tagging: named entities, parts of speech)") from None
    columns = list(rows.rows[0])
    text, label = _guess_roles(rows, columns)
    try:  # a text column found by its name needs no setting
        text_columns(columns, cfg, "")
        text = None
    except ConfigError:
        pass
    guess = " ".join(f"{setting}={name}" for setting, name in
                     (("text_column", text), ("label_column", label))
                     if name is not None and getattr(cfg, setting) is None)
    if guess:
        raise ConfigError(f"{cause} (by their values here: {guess})") from None


def looks_like_tagging(rows: Rows) -> tuple[str, str] | None:
    """(words, tags) where two columns hold lists of the same length in the first rows (a
    sentence's words and a tag each): what a classifier run on such a file is told."""
    sample = rows.rows[:20]
    if not sample:
        return None
    listed = [c for c in sample[0] if all(isinstance(r.get(c), list) and r.get(c)
                                          for r in sample)]
    for words in listed:
        if all(isinstance(w, str) for r in sample for w in r[words]):
            for tags in listed:
                if tags != words and all(len(r[tags]) == len(r[words]) for r in sample):
                    return words, tags
    return None


def unread_text_columns(rows: Rows, columns: set[str]) -> tuple[str, ...]:
    """Those of `columns` that read as text: strings, mostly distinct, 20 characters or
    more on average (not an id, a date, a category or a number)."""
    sample = rows.rows[:1000]
    found = []
    for column in sorted(columns):
        values = [v for r in sample if isinstance(v := r.get(column), str) and v.strip()]
        if (len(values) > len(sample) / 2 and len(set(values)) > len(values) / 2
                and sum(map(len, values)) / len(values) >= 20):
            found.append(column)
    return tuple(found)


def check_text(value, column: str, setting: str, where: str, row: str) -> str:
    if isinstance(value, (list, tuple, dict)):  # its repr would be read as the text
        kind = "an object" if isinstance(value, dict) else "a list"
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(f"{setting}: {where} {row} has {kind} in column {column!r} "
                          f"({shown}), not a text; give the text as one string (tokens "
                          "joined by spaces), or set text_column to the column that holds it")
    if value is None or not str(value).strip():
        raise ConfigError(f"{setting}: {where} {row} has "
                          f"{'no value' if value is None else 'an empty text'} in column "
                          f"{column!r}; give every row its text, or drop the row")
    return str(value)


def model_text(value: str) -> str:
    """A text as the model reads it: the backslash escapes some corpora write for a line
    break (AG News: `\\n`, `\\`) read as spaces."""
    return value.replace("\\n", " ").replace("\\", " ")


def row_texts(rows: Rows, i: int, text: str, pair: str | None, where: str
              ) -> tuple[str, str | None]:
    """Row i's text as the model reads it (model_text) and its pair, each refused with the
    row's line where missing or empty."""
    row = rows.rows[i]
    first = model_text(check_text(row.get(text), text, "text_column", where, rows.name(i)))
    second = check_text(row.get(pair), pair, "pair_column", where, rows.name(i)) if pair else None
    return first, second


def group_of(value, column: str, where: str, row: str) -> str:
    """A row's client under partition_by: its value of that column, as text."""
    if value is None or isinstance(value, (list, dict)) or not str(value).strip():
        raise ConfigError(f"partition_by: {where} {row} has {value!r} in column {column!r}, "
                          "not a client's name; give every row the id of its client (a user, "
                          "a site), or drop the row")
    return str(label_key(value))
