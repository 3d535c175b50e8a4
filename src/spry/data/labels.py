"""A task's label set and each row's label: classes read from the data (integers, strings,
a ClassLabel's names), a set of them (task_head=multilabel), or scores for
task_head=regression, refused with the row and the fix where they cannot be classes."""

from __future__ import annotations

import ast
import json
import math

from spry.config import Config, ConfigError
from spry.data.files import Rows


def label_set(cfg: Config, rows: Rows, label: str, where: str) -> tuple[str, ...] | None:
    """The run's label set: label_names where given, else the file's; None for scores
    (task_head=regression)."""
    if cfg.task_head == "regression":
        return None
    if cfg.label_names:
        return tuple(cfg.label_names)
    if label in rows.class_names:  # a ClassLabel's names, in its order
        return rows.class_names[label]
    if cfg.task_head == "multilabel":
        return _infer_label_set_names(rows, label, cfg.label_separator, where)
    return _infer_label_names(rows, label, where)


# --- task_head=multilabel: a set of labels a row ---------------------------------------
def label_columns(label: str, columns) -> list[str] | None:
    """The 0/1 columns a multi-label task's `label_column=toxic,insult,threat` names (one
    column a label, as Jigsaw's toxic comments are laid out), or None where `label` is one
    column (a list, or labels joined by label_separator, in each row)."""
    if label in columns or "," not in label:
        return None
    return [c.strip() for c in label.split(",") if c.strip()]


def row_label_set(rows: Rows, i: int, label: str, separator: str, where: str) -> list[str]:
    """Row i's labels as written (names; for several 0/1 columns, the names of those set):
    a list (json, parquet, a `datasets` Sequence whose ClassLabel names are kept), a list
    written as text (`['joy', 'love']`), or a text of labels joined by `separator`
    (`joy,love`); an empty list or text is a row with no label, which multi-label tasks
    have (a clean comment)."""
    row = rows.rows[i]
    columns = label_columns(label, row)
    if columns is not None:
        return [c for c in columns if _flag(row.get(c), c, where, rows.name(i))]
    value = row.get(label)
    if value is None:
        raise ConfigError(f"label_column: {where} {rows.name(i)} has no value in column "
                          f"{label!r} (missing or null); give every row its labels (an empty "
                          "list for none), or drop the row")
    if isinstance(value, str):
        value = parse_list_text(value.strip(), separator)
    elif not isinstance(value, (list, tuple)):
        value = [value]
    names = rows.class_names.get(label)
    out = []
    for item in value:
        if isinstance(item, (list, tuple, dict)) or item is None:
            raise ConfigError(f"label_column: {where} {rows.name(i)} has {item!r} among its "
                              f"labels in column {label!r}; give each label as a string or "
                              "an integer")
        if names is not None and isinstance(item, int) and 0 <= item < len(names):
            item = names[item]
        if str(label_key(item)):
            out.append(str(label_key(item)))
    return out


def multi_hot(found: list[str], lookup: dict[str, int], names: tuple[str, ...], where: str,
               row: str) -> tuple[float, ...]:
    """task_head=multilabel: a row's labels as a multi-hot tuple over the label set."""
    hot = [0.0] * len(names)
    for name in found:
        if name not in lookup:
            raise ConfigError(f"label_names: {where} {row} has label {name!r}, outside the "
                              f"label set {list(names)}; fix the data or set label_names")
        hot[lookup[name]] = 1.0
    return tuple(hot)


def parse_list_text(text: str, separator: str | None) -> list:
    """A csv cell's list: written out (`["joy", "love"]` as json, `['joy']` as Python
    writes it), or its parts joined by `separator` (None: white space)."""
    if text.startswith("[") and text.endswith("]"):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, list):
                return parsed
    return [part for part in (p.strip() for p in text.split(separator)) if part]


FLAGS = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False}


def _flag(value, column: str, where: str, row: str) -> bool:
    """A 0/1 label column's cell (1/0, true/false, yes/no)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in FLAGS:
        return FLAGS[value.strip().lower()]
    raise ConfigError(f"label_column: {where} {row} has {value!r} in column {column!r}, one "
                      "of the label columns, which hold 1 where the row has that label and 0 "
                      "where not (or true/false); fix the row, or name the label columns "
                      "that are 0/1")


def _infer_label_set_names(rows: Rows, label: str, separator: str, where: str
                           ) -> tuple[str, ...]:
    """A multi-label task's label set: the 0/1 columns named, in that order, else every
    label a row has, ordered as single labels are (_label_order)."""
    if not rows.rows:
        raise ConfigError(f"dataset: {where} has no rows")
    columns = label_columns(label, rows.rows[0])
    if columns is not None:
        return tuple(columns)
    found = [row_label_set(rows, i, label, separator, where) for i in range(len(rows))]
    values = {v for labels in found for v in labels}
    joined = [c for c in ";|/+ "
              if c != separator and sum(c in v for v in values) > len(values) / 2]
    if joined and max(map(len, found)) <= 1:
        shown = ", ".join(repr(v) for v in sorted(values)[:3])
        raise ConfigError(f"label_separator: {where} column {label!r} has one label a row, "
                          f"most with {joined[0]!r} in it ({shown}, …): if {joined[0]!r} joins "
                          f"several labels, set label_separator={joined[0]} (the separator "
                          f"now: {separator!r}); if not, each row has one label: "
                          "task_head=classifier")
    if not values:
        raise ConfigError(f"label_column: {where} column {label!r} has no label in any row; "
                          "give the rows their labels")
    _refuse_non_classes(values, len(rows), label, where)
    _refuse_case_twins(values, label, where)
    return _label_order(values)


def _infer_label_names(rows: Rows, label: str, where: str) -> tuple[str, ...]:
    """The label set of `rows`: 0..max for integer labels that start at 0 (a class absent
    from the file keeps its index), else the distinct labels sorted, as numbers where they
    are integers (1-5 stars: five classes, not six with an empty class 0)."""
    if not rows.rows:
        raise ConfigError(f"dataset: {where} has no rows")
    for i, row in enumerate(rows.rows):
        check_label(row.get(label), label, where, rows.name(i))
    values = {label_key(row[label]) for row in rows.rows}
    _refuse_non_classes(values, len(rows), label, where)
    _refuse_case_twins(values, label, where)
    return _label_order(values)


def _label_order(values: set) -> tuple[str, ...]:
    """Class order: 0..max for integer labels that start at 0, else sorted (as numbers
    where they are integers)."""
    as_ints = [as_int(v) for v in values]
    if all(v is not None for v in as_ints):
        if min(as_ints) == 0:
            return tuple(str(i) for i in range(max(as_ints) + 1))
        return tuple(str(i) for i in sorted(set(as_ints)))
    return tuple(sorted(str(v) for v in values))


def _refuse_non_classes(values: set, rows: int, label: str, where: str) -> None:
    """A label column of fractional numbers (a score to regress) or with a distinct value
    for most rows (an id, a free text) is no class label: a classifier over it would
    learn nothing and report accuracy 0, so say so before any work."""
    shown = ", ".join(repr(str(v)) for v in sorted(values, key=str)[:4])
    if any((number := _as_number(v)) is not None and number % 1 for v in values):
        raise ConfigError(f"label_column: {where} column {label!r} holds fractional numbers "
                          f"({shown}, …): a score to regress, not classes; to learn the "
                          "score set task_head=regression, else bin the scores into classes "
                          "or set label_column to the class column")
    if len(values) > 100 and len(values) > rows / 2:
        raise ConfigError(f"label_column: {where} column {label!r} has {len(values)} distinct "
                          f"values in {rows} rows ({shown}, …): ids or free text, not "
                          "classes; set label_column to the class column")


def label_key(value):
    """A label as the label set knows it: a string without its surrounding whitespace
    (`positive ` from a hand-edited csv is `positive`), anything else as it is."""
    return value.strip() if isinstance(value, str) else value


def _refuse_case_twins(values: set, label: str, where: str) -> None:
    """Labels that differ only in case (`Positive`, `positive`) are most often one class
    written two ways; training them as two would split it. Which it is, only the user
    knows: say so, with both ways out."""
    by_folded: dict[str, list[str]] = {}
    for v in values:
        by_folded.setdefault(str(v).casefold(), []).append(str(v))
    twins = [sorted(group) for group in by_folded.values() if len(group) > 1]
    if twins:
        shown = "; ".join(" / ".join(repr(v) for v in group) for group in sorted(twins))
        every = ",".join(sorted(str(v) for v in values))
        raise ConfigError(f"label_column: {where} column {label!r} has labels that differ "
                          f"only in case ({shown}): if they are one class, write them alike "
                          f"in the file; if they are distinct classes, set label_names={every}")


def _as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_label(value, label: str, where: str, row: str) -> None:
    if value is None:
        raise ConfigError(f"label_column: {where} {row} has no value in column {label!r} "
                          "(missing or null); give every row a label, or drop the row")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"label_column: {where} {row} has an empty label in column "
                          f"{label!r}; give every row a label, or drop the row")
    if isinstance(value, (list, tuple)):
        raise ConfigError(f"label_column: {where} {row} has a list of labels in column "
                          f"{label!r} ({value!r}): for a multi-label task (any number of "
                          "labels a row) set task_head=multilabel; for a tag a word beside "
                          "a column of words (named entities, parts of speech) set "
                          "task_head=token")
    if isinstance(value, dict):
        raise ConfigError(f"label_column: {where} {row} has an object in column {label!r} "
                          f"({value!r}); give the label itself, a string or an integer")


def as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


UNLABELLED = object()
"""class_label's answer for a row `datasets` marks as having no label."""


def class_label(rows: Rows, label: str, value):
    """A label as written, or for a ClassLabel column (parquet or arrow from `datasets`)
    the name its integer indexes, so that label_names in another order, or a test file
    whose ClassLabel orders them otherwise, still match by name; UNLABELLED for its -1."""
    names = rows.class_names.get(label)
    if names is None or not isinstance(value, int) or isinstance(value, bool):
        return value
    if value == -1:
        return UNLABELLED
    return names[value] if 0 <= value < len(names) else value


def read_score(value, label: str, where: str, row: str) -> float:
    """A regression label: a finite number (a string of one too, as csv cells are)."""
    number = _as_number(label_key(value))
    if number is None:
        raise ConfigError(f"label_column: {where} {row} has {value!r} in column {label!r}, not "
                          "a number; task_head=regression learns a numeric score (for "
                          "classes set task_head=classifier)")
    return number


def class_index(raw, lookup: dict[str, int], names: tuple[str, ...], offset: int,
                 where: str, row: str) -> int:
    """A single label's index in the label set (by name, else as an integer less the
    recipe's offset), refused where it is outside the set."""
    index = lookup.get(str(label_key(raw)))
    if index is None:
        number = as_int(raw)
        index = None if number is None else number - offset
    if index is None or not 0 <= index < len(names):
        raise ConfigError(f"label_names: {where} {row} has label {raw!r}, outside the label "
                          f"set {list(names)}; fix the data or set label_names")
    return index
