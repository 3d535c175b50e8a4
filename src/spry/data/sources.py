"""Read a labelled text task from a recipe, a local file or the hub, through `datasets`."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from spry.config import Config, ConfigError
from spry.data import synthetic
from spry.data.files import (SPLIT_NAMES, Rows, data_stem, data_suffix, dataset_rows,
                             file_format, is_saved_dataset, read_rows, read_saved, read_split,
                             split_files)
from spry.data.examples import Examples
from spry.data.recipes import LABEL_OFFSETS, RECIPES, FileSpec
from spry.seeds import derive_seed, generator

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SPRY_DATA_DIR"
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "question", "query",
                "body", "comment", "tweet", "utterance", "description", "abstract", "title")
"""Where a file's text is looked for when text_column is unset, in this order."""
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


@dataclass
class Task:
    name: str
    train: Examples
    test: Examples | None
    label_names: tuple[str, ...]
    columns: dict[str, str | None] | None = None
    """The columns read (text_column, pair_column, label_column), where the data has them."""
    label_words: tuple[str, ...] | None = None
    """What a verbalizer head scores per label, where the task names them (its recipe)."""
    unread: tuple[str, ...] = ()
    """A file's columns that hold text but are not read (neither text, pair nor label):
    the run names them, as a second text left out changes the task."""


def load_task(cfg: Config) -> Task:
    task = _load_task(cfg)
    if cfg.test_fraction is not None:
        if task.test is not None:
            raise ConfigError(f"test_fraction: dataset={cfg.dataset!r} already has a held-out "
                              f"test split ({'test_file' if cfg.test_file else 'its own'}); "
                              "remove test_fraction or the other split")
        task.train, task.test = stratified_split(task.train, cfg.test_fraction,
                                                 derive_seed(cfg.seed, "test-fraction"),
                                                 strata(task.train.labels, cfg))
    return task


def _load_task(cfg: Config) -> Task:
    if cfg.task_head == "regression" and (cfg.dataset == "sentiment" or cfg.dataset in RECIPES):
        raise ConfigError(f"task_head: regression learns a numeric score, and "
                          f"dataset={cfg.dataset!r} is a classification task; give a file "
                          "(or hub dataset) with a numeric label column, or set "
                          "task_head=classifier")
    if cfg.dataset == "sentiment":
        texts, labels = synthetic.make_sentiment(2000, seed=cfg.seed)
        test = None
        if cfg.test_fraction is None:
            test = Examples(*synthetic.make_sentiment(400, seed=cfg.seed + 1))
        return Task("sentiment", Examples(texts, labels), test, synthetic.LABEL_NAMES)
    if cfg.dataset in RECIPES:
        return _load_recipe(cfg)
    if file_format(Path(cfg.dataset)) or Path(cfg.dataset).exists():
        return _load_files(cfg)
    return _load_hub(cfg)


SCORE_STRATA = 5
"""task_head=regression: how many quantile bins of the score stand in for classes where
the data is split by label (the held-out split, the Dirichlet partition)."""


def strata(labels: list, cfg: Config) -> list[int]:
    """The class of each example where a split is stratified by label: the label itself, or
    for scores (task_head=regression) its quantile bin (SCORE_STRATA of them, by rank)."""
    if cfg.task_head != "regression":
        return list(labels)
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    bins = [0] * len(labels)
    for rank, i in enumerate(order):
        bins[i] = rank * SCORE_STRATA // max(len(labels), 1)
    return bins


def stratified_split(examples: Examples, fraction: float, seed: int,
                     classes: list[int] | None = None) -> tuple[Examples, Examples]:
    """(train, test): `fraction` of each class's examples (rounded, at least one where the
    class has two or more) go to test, chosen by a seeded shuffle; order is kept. `classes`:
    each example's class (default: its label; spry.data.sources.strata)."""
    if not 0 < fraction < 1:
        raise ConfigError(f"test_fraction: must be in (0, 1), got {fraction}")
    classes = examples.labels if classes is None else classes
    g = generator(seed)
    test: list[int] = []
    for label in sorted(set(classes)):
        members = [i for i, y in enumerate(classes) if y == label]
        take = min(max(round(fraction * len(members)), 1), len(members) - 1)
        order = torch.randperm(len(members), generator=g).tolist()
        test += [members[j] for j in order[:take]]
    chosen = set(test)
    if not chosen:
        raise ConfigError(f"test_fraction: {len(examples)} examples leave none to hold out; "
                          "give more data or a test_file")
    train = [i for i in range(len(examples)) if i not in chosen]
    return examples.subset(train), examples.subset(sorted(chosen))


def data_dir(cfg: Config) -> Path | None:
    root = cfg.data_dir or os.environ.get(DATA_DIR_ENV)
    return Path(root) if root else None


def _load_recipe(cfg: Config) -> Task:
    recipe = RECIPES[cfg.dataset]
    names = tuple(cfg.label_names or recipe.label_names)
    root = data_dir(cfg)
    if recipe.train is not None and root is not None and (root / recipe.train.path).exists():
        train = _read_spec(root / recipe.train.path, recipe.train, names)
        test = None
        if recipe.test is not None and (root / recipe.test.path).exists():
            test = _read_spec(root / recipe.test.path, recipe.test, names)
        spec = recipe.train
        return Task(cfg.dataset, train, test, names,
                    None if spec.reader else _columns(spec.text, spec.pair, spec.label),
                    recipe.label_words)
    local_only = recipe.train is not None and recipe.train.reader is not None
    if (local_only or os.environ.get("HF_HUB_OFFLINE") == "1"
            or os.environ.get("HF_DATASETS_OFFLINE") == "1"):
        raise ConfigError(
            f"dataset: {cfg.dataset!r} has no local files under data_dir={root}"
            f"{'' if local_only else ' and the hub is offline'}; set data_dir (or ${DATA_DIR_ENV}) to the folder holding "
            f"{recipe.train.path if recipe.train else 'its files'}")
    hub = cfg.replace(dataset=recipe.hub_id, text_column=recipe.hub_text,
                      pair_column=recipe.hub_pair, label_column=recipe.hub_label,
                      label_names=list(names))
    task = _load_hub(hub, test_split=recipe.hub_test_split, name=cfg.dataset)
    return dataclasses.replace(task, label_words=recipe.label_words)


def _read_spec(path: Path, spec: FileSpec, names: tuple[str, ...]) -> Examples:
    if spec.reader is not None:
        return spec.reader(path, names)
    rows = read_rows(path, columns=spec.columns, csv_options=spec.csv_options)
    return _to_examples(rows, spec.text, spec.pair, spec.label, names, where=str(path),
                        offset=LABEL_OFFSETS.get(_rel(path), 0))


def _rel(path: Path) -> str:
    return "/".join(path.parts[-2:])


def _columns(text: str, pair: str | None, label: str) -> dict[str, str | None]:
    return {"text_column": text, "pair_column": pair, "label_column": label}


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
    if label not in columns:
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
    if text is None:
        raise ConfigError(f"text_column: {where} has columns {columns}; set "
                          "text_column=<the column holding the text>")
    if pair is None and cfg.pair_column is None:
        pair = next((second for first, second in PAIR_LAYOUTS
                     if first == text and second in columns), None)
    return text, pair


def _load_files(cfg: Config) -> Task:
    given = tuple(cfg.column_names) if cfg.column_names else None
    train_path, test_path = Path(cfg.dataset), Path(cfg.test_file) if cfg.test_file else None
    candidates: list[tuple[str, Callable[[], Rows]]] = []
    if train_path.is_dir() and is_saved_dataset(train_path):
        train_rows, candidates = _named_splits(read_saved(train_path),
                                               f"{train_path} (saved by datasets)")
    elif train_path.is_dir():  # a folder of splits: train.csv and, where it has one, test.csv
        train_files, held_out = split_files(train_path)
        train_rows = read_split(train_files, given)
        candidates = [(_shown(files), lambda files=files: read_split(files, given))
                      for files in held_out]
    else:
        train_rows = read_rows(train_path, columns=given)
    columns = list(train_rows.rows[0].keys()) if train_rows.rows else []
    try:
        text, pair, label = resolve_columns(columns, cfg, cfg.dataset)
    except ConfigError as exc:
        if given is None:
            _raise_if_headerless(train_rows, exc)
        _raise_with_guess(train_rows, exc, cfg)
        raise
    test_rows = read_rows(test_path, columns=given) if test_path else None
    if test_path is None and candidates:
        test_rows = _held_out(candidates, label)
    names = _label_set(cfg, train_rows, label, cfg.dataset)
    train = _to_examples(train_rows, text, pair, label, names, where=str(train_rows.path),
                         group=cfg.partition_by)
    test = (_to_examples(test_rows, text, pair, label, names, where=str(test_rows.path))
            if test_rows is not None else None)
    return Task(data_stem(Path(cfg.dataset)), train, test, names or (),
                _columns(text, pair, label),
                unread=_text_columns(train_rows,
                                     set(columns) - {text, pair, label, cfg.partition_by}))


def _named_splits(splits: dict[str, Rows], where: str
                  ) -> tuple[Rows, list[tuple[str, Callable[[], Rows]]]]:
    """The training split of a `datasets` DatasetDict (saved to disk or from the hub) and
    its held-out candidates, ranked as a folder's files are (SPLIT_NAMES: validation
    before test)."""
    train = next((splits[n] for n in splits if n.lower() in SPLIT_NAMES["train"]), None)
    if train is None:
        raise ConfigError(f"dataset: {where} has the splits {sorted(splits)} and no train "
                          "split; give a dataset whose training split is named 'train', or "
                          "a file of it")
    rank = {name: i for i, name in enumerate(SPLIT_NAMES["test"])}
    held_out = sorted((n for n in splits if n.lower() in rank), key=lambda n: rank[n.lower()])
    return train, [(f"split {n!r}", lambda n=n: splits[n]) for n in held_out]


def _shown(files: list[Path]) -> str:
    return files[0].name if len(files) == 1 else f"{files[0].parent.name}/ ({len(files)} files)"


def read_node_file(path: Path, cfg: Config) -> Examples:
    """A SuperNode's own file (client_data=node), or the server's test_file there: read as a
    `dataset` file is, with the run's columns where set (else found by name in this file)
    and the run's label set, which every node must share."""
    if not path.is_file():
        raise ConfigError(f"data-file: {path} is not a file on this node; start the SuperNode "
                          "with --node-config 'partition-id=<id> data-file=\"<its labelled "
                          "csv/tsv/json/jsonl/parquet file>\"'")
    rows = read_rows(path, columns=tuple(cfg.column_names) if cfg.column_names else None)
    columns = list(rows.rows[0]) if rows.rows else []
    text, pair, label = resolve_columns(columns, cfg, str(path))
    names = None if cfg.task_head == "regression" else tuple(cfg.label_names)
    return _to_examples(rows, text, pair, label, names, where=str(path))


def _held_out(candidates: list[tuple[str, Callable[[], Rows]]], label: str) -> Rows:
    """The first of a folder's held-out splits (validation before test) that has labels,
    its rows; the others are named as left unread. None has labels: refused, since a
    held-out split without them cannot score the model."""
    chosen, unlabelled = None, []
    for name, read in candidates:
        rows = read()
        if _labelled(rows, label):
            chosen = (name, rows)
            break
        unlabelled.append(name)
    names = [name for name, _ in candidates]
    if chosen is None:
        raise ConfigError(f"dataset: the held-out files {names} have no labels in column "
                          f"{label!r} (no such column, or only -1: datasets' mark of an "
                          "unlabelled split), so they cannot score the model; give "
                          "test_file=<a labelled file> or test_fraction=0.2 (and move the "
                          "unlabelled files out of the folder)")
    if len(candidates) > 1:
        left = ", ".join(name + (" (no labels)" if name in unlabelled else "")
                         for name in names if name != chosen[0])
        log.info("dataset: %s is the held-out split; %s left unread (test_file=<file> picks "
                 "another)", chosen[0], left)
    return chosen[1]


def _labelled(rows: Rows, label: str) -> bool:
    """Whether a split has labels: the label column, and not only -1 in a ClassLabel column
    (how `datasets` marks an unlabelled split, e.g. GLUE's test)."""
    if not rows.rows or label not in rows.rows[0]:
        return False
    return label not in rows.class_names or any(r[label] != -1 for r in rows.rows)


def _text_columns(rows: Rows, columns: set[str]) -> tuple[str, ...]:
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


def _load_hub(cfg: Config, test_split: str | None = None, name: str | None = None) -> Task:
    """A hub dataset: its train split, and as the held-out split `test_split` (a recipe
    names it) or else its first labelled one of validation, ..., test (as a folder's)."""
    import datasets

    try:
        ds = datasets.load_dataset(cfg.dataset)
    except Exception as exc:  # datasets raises many types for "not found / offline"
        raise ConfigError(
            f"dataset: cannot load {cfg.dataset!r} from the hub ({type(exc).__name__}: "
            f"{str(exc)[:200]}); give a recipe ({', '.join(['sentiment', *RECIPES])}) with "
            "data_dir, or a local csv/tsv/json/jsonl/parquet file") from None
    splits = {split: dataset_rows(ds[split], Path(f"{cfg.dataset}[{split}]")) for split in ds}
    train_rows, candidates = _named_splits(splits, repr(cfg.dataset))
    text, pair, label = resolve_columns(list(train_rows.rows[0]) if train_rows.rows else [],
                                        cfg, cfg.dataset)
    if test_split is not None:  # a recipe's
        test_rows = splits.get(test_split)
    else:
        test_rows = _held_out(candidates, label) if candidates else None
    names = _label_set(cfg, train_rows, label, cfg.dataset)
    train = _to_examples(train_rows, text, pair, label, names, where=str(train_rows.path),
                         group=cfg.partition_by)
    test = (_to_examples(test_rows, text, pair, label, names, where=str(test_rows.path))
            if test_rows is not None else None)
    return Task(name or cfg.dataset, train, test, names or (), _columns(text, pair, label))


def _label_set(cfg: Config, rows: Rows, label: str, where: str) -> tuple[str, ...] | None:
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
        _check_label(row.get(label), label, where, rows.name(i))
    values = {label_key(row[label]) for row in rows.rows}
    _refuse_non_classes(values, len(rows), label, where)
    _refuse_case_twins(values, label, where)
    as_ints = [_as_int(v) for v in values]
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


def _no_label_column(where: str, label: str, columns: list[str]) -> ConfigError:
    return ConfigError(f"label_column: {where} has no column {label!r}; its columns are "
                       f"{sorted(columns)}; set label_column=<the label column>")


def _raise_if_headerless(rows: Rows, cause: ConfigError) -> None:
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


def _raise_with_guess(rows: Rows, cause: ConfigError, cfg: Config) -> None:
    """A file whose columns have none of the usual names: the error says which columns
    look like the text and the label, as settings to copy (those not set already)."""
    if not rows.rows:
        return
    text, label = _guess_roles(rows, list(rows.rows[0]))
    guess = " ".join(f"{setting}={name}" for setting, name in
                     (("text_column", text), ("label_column", label))
                     if name is not None and getattr(cfg, setting) is None)
    if guess:
        raise ConfigError(f"{cause} (by their values here: {guess})") from None


def _check_label(value, label: str, where: str, row: str) -> None:
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


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _to_examples(rows: Rows, text: str, pair: str | None, label: str,
                 names: tuple[str, ...] | None, where: str, offset: int = 0,
                 group: str | None = None) -> Examples:
    """The rows as examples: each label its index in `names`, or with names=None
    (task_head=regression) its number. A ClassLabel column's -1 is `datasets`' mark of an
    unlabelled row (a hub NLI set's pairs without a gold label): such rows are left out,
    and counted in the log. `group` (partition_by): the column naming each row's client."""
    if not rows.rows:
        raise ConfigError(f"dataset: {where} has no rows")
    present = set(rows.rows[0])
    for field_name, column in (("text_column", text), ("pair_column", pair),
                               ("label_column", label), ("partition_by", group)):
        if column is not None and column not in present:
            raise ConfigError(f"{field_name}: {where} has no column {column!r}; its columns are "
                              f"{sorted(present)}")
    lookup = {n: i for i, n in enumerate(names or ())}
    texts, pairs, labels, skipped = [], [] if pair else None, [], 0
    groups: list[str] | None = [] if group else None
    for i, row in enumerate(rows.rows):
        raw = class_label(rows, label, row.get(label))
        _check_label(raw, label, where, rows.name(i))
        if raw is UNLABELLED:
            skipped += 1
            continue
        if names is None:
            index = read_score(raw, label, where, rows.name(i))
        else:
            index = lookup.get(str(label_key(raw)))
            if index is None:
                as_int = _as_int(raw)
                index = None if as_int is None else as_int - offset
            if index is None or not 0 <= index < len(names):
                raise ConfigError(f"label_names: {where} {rows.name(i)} has label {raw!r}, "
                                  f"outside the label set {list(names)}; fix the data or set "
                                  "label_names")
        first, second = row_texts(rows, i, text, pair, where)
        texts.append(first)
        if pair:
            pairs.append(second)
        labels.append(index)
        if group:
            groups.append(_group_of(row.get(group), group, where, rows.name(i)))
    if skipped:
        log.info("dataset: %s: %d rows with label -1 (no label, as datasets marks it) left out",
                 where, skipped)
    if not labels:
        raise ConfigError(f"dataset: {where} has no labelled rows (every label is -1, as "
                          "datasets marks an unlabelled split); give a labelled split")
    return Examples(texts, labels, pairs, groups=groups)


def _group_of(value, column: str, where: str, row: str) -> str:
    """A row's client under partition_by: its value of that column, as text."""
    if value is None or isinstance(value, (list, dict)) or not str(value).strip():
        raise ConfigError(f"partition_by: {where} {row} has {value!r} in column {column!r}, "
                          "not a client's name; give every row the id of its client (a user, "
                          "a site), or drop the row")
    return str(label_key(value))


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


def row_texts(rows: Rows, i: int, text: str, pair: str | None, where: str
              ) -> tuple[str, str | None]:
    """Row i's text as the model reads it (model_text) and its pair, each refused with the
    row's line where missing or empty."""
    row = rows.rows[i]
    first = model_text(check_text(row.get(text), text, "text_column", where, rows.name(i)))
    second = check_text(row.get(pair), pair, "pair_column", where, rows.name(i)) if pair else None
    return first, second
