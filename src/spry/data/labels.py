"""A task's label set and each row's label: classes read from the data (integers, strings,
a ClassLabel's names), or scores for task_head=regression, refused with the row and the fix
where they cannot be classes."""

from __future__ import annotations

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
    return _infer_label_names(rows, label, where)


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
                          f"{label!r} ({value!r}): a multi-label task, or beside a list of "
                          "tokens token classification (a tag per token, e.g. NER), which "
                          "Spry does not train; Spry trains one label an example: give each "
                          "row one label (one row per label, or one class per combination)")
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
