"""Read a labelled text task from a recipe, a local file or the hub, through `datasets`."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from spry.config import Config, ConfigError
from spry.data import synthetic
from spry.data import tags as tagging
from spry.data.columns import (group_of, raise_if_headerless, raise_with_guess,
                               resolve_columns, row_texts, unread_text_columns)
from spry.data.examples import Examples
from spry.data.files import (SPLIT_NAMES, Rows, data_stem, dataset_rows, file_format,
                             held_out_order, is_saved_dataset, read_rows, read_saved,
                             read_split, split_files)
from spry.data.labels import (UNLABELLED, check_label, class_index, class_label,
                              label_columns, label_set, multi_hot, read_score,
                              row_label_set)
from spry.data.recipes import LABEL_OFFSETS, RECIPES, FileSpec
from spry.seeds import derive_seed, generator

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SPRY_DATA_DIR"


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
    if cfg.task_head == "multilabel" and (cfg.dataset == "sentiment" or cfg.dataset in RECIPES):
        raise ConfigError(f"task_head: multilabel learns a set of labels a text, and "
                          f"dataset={cfg.dataset!r} has one label a text; give a file (or "
                          "hub dataset) whose label column lists each text's labels, or set "
                          "task_head=classifier")
    if cfg.task_head == "token" and (cfg.dataset == "sentiment" or cfg.dataset in RECIPES):
        raise ConfigError(f"task_head: token tags each word of a text, and "
                          f"dataset={cfg.dataset!r} has one label a text; give a CoNLL file "
                          "(.conll, .conllu) or a file with a column of words and one of their "
                          "tags, or set task_head=classifier")
    if cfg.partition_by is not None and (cfg.dataset == "sentiment" or cfg.dataset in RECIPES):
        raise ConfigError(f"partition_by: names a column of your own data; dataset="
                          f"{cfg.dataset!r} is a recipe, dealt by dirichlet_alpha: give a "
                          "file (or folder, or hub id) with that column")
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
    """The class of each example where a split is stratified by label: the label itself;
    for scores (task_head=regression) its quantile bin (SCORE_STRATA of them, by rank); for
    a set of labels (task_head=multilabel) the rarest label it has, or one class past the
    labels for a row with none, so the rare labels are dealt and held out as classes are
    (a common way to stratify multi-label data; exact only for one label a row); for a
    sentence's tags (task_head=token) its rarest tag."""
    if cfg.task_head == "multilabel":
        return rarest_labels(labels)
    if cfg.task_head == "token":
        return tagging.rarest_tags(labels)
    if cfg.task_head != "regression":
        return list(labels)
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    bins = [0] * len(labels)
    for rank, i in enumerate(order):
        bins[i] = rank * SCORE_STRATA // max(len(labels), 1)
    return bins


def rarest_labels(labels: list[tuple[float, ...]]) -> list[int]:
    """Each multi-hot row's rarest label (by its count over all rows; ties: the first), or
    len(labels[0]) for a row with none."""
    if not labels:
        return []
    counts = [sum(column) for column in zip(*labels)]
    return [min((c for c, hot in enumerate(row) if hot), key=lambda c: (counts[c], c),
                default=len(row)) for row in labels]


def num_strata(task: Task, cfg: Config) -> int:
    """How many classes strata() gives: the labels, one more for multi-label rows with
    none, SCORE_STRATA for scores."""
    if not task.label_names:
        return SCORE_STRATA
    return len(task.label_names) + (cfg.task_head == "multilabel")


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


def _resolve_columns(columns: list[str], cfg: Config, where: str
                     ) -> tuple[str, str | None, str]:
    """(text, pair, label) columns of the task head: a tagger's words and tags (no pair)."""
    if cfg.task_head == "token":
        words, tags = tagging.token_columns(columns, cfg, where)
        return words, None, tags
    return resolve_columns(columns, cfg, where)


def _columns(text: str, pair: str | None, label: str) -> dict[str, str | None]:
    return {"text_column": text, "pair_column": pair, "label_column": label}


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
        text, pair, label = _resolve_columns(columns, cfg, cfg.dataset)
    except ConfigError as exc:
        if given is None:
            raise_if_headerless(train_rows, exc)
        raise_with_guess(train_rows, exc, cfg)
        raise
    test_rows = read_rows(test_path, columns=given) if test_path else None
    if test_path is None and candidates:
        test_rows = _held_out(candidates, label)
    return _task(cfg, data_stem(Path(cfg.dataset)), train_rows, test_rows, text, pair, label,
                 unread=unread_text_columns(
                     train_rows, set(columns) - {text, pair, label, cfg.partition_by}))


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
    return train, [(f"split {n!r}", lambda n=n: splits[n]) for n in held_out_order(list(splits))]


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
    text, pair, label = _resolve_columns(columns, cfg, str(path))
    names = None if cfg.task_head == "regression" else tuple(cfg.label_names)
    if cfg.task_head == "token":
        return tagging.to_token_examples(rows, text, label, names, str(path))
    return _to_examples(rows, text, pair, label, names, where=str(path),
                        separator=label_separator(cfg))


def label_separator(cfg: Config) -> str | None:
    """What _to_examples reads a row's labels by: task_head=multilabel's separator (a set
    of labels a row), None for one label (or a score) a row."""
    return cfg.label_separator if cfg.task_head == "multilabel" else None


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
    if not rows.rows:
        return False
    several = label_columns(label, rows.rows[0])
    if several is not None:  # task_head=multilabel's 0/1 columns
        return all(c in rows.rows[0] for c in several)
    if label not in rows.rows[0]:
        return False
    return label not in rows.class_names or any(r[label] != -1 for r in rows.rows)


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
    text, pair, label = _resolve_columns(list(train_rows.rows[0]) if train_rows.rows else [],
                                        cfg, cfg.dataset)
    if test_split is not None:  # a recipe's
        test_rows = splits.get(test_split)
    else:
        test_rows = _held_out(candidates, label) if candidates else None
    return _task(cfg, name or cfg.dataset, train_rows, test_rows, text, pair, label)


def _task(cfg: Config, name: str, train_rows: Rows, test_rows: Rows | None, text: str,
          pair: str | None, label: str, unread: tuple[str, ...] = ()) -> Task:
    """A file's or a hub dataset's task from its rows: the label set, the examples (the
    training split's with partition_by's clients), the columns read."""
    if cfg.task_head == "token":
        names = (tuple(cfg.label_names) if cfg.label_names
                 else tagging.tag_set(train_rows, text, label, cfg.dataset))
        train = tagging.to_token_examples(train_rows, text, label, names, str(train_rows.path),
                                          group=cfg.partition_by)
        test = (tagging.to_token_examples(test_rows, text, label, names, str(test_rows.path))
                if test_rows is not None else None)
        return Task(name, train, test, names, _columns(text, None, label), unread=unread)
    names = label_set(cfg, train_rows, label, cfg.dataset)
    separator = label_separator(cfg)
    train = _to_examples(train_rows, text, pair, label, names, where=str(train_rows.path),
                         group=cfg.partition_by, separator=separator)
    test = (_to_examples(test_rows, text, pair, label, names, where=str(test_rows.path),
                         separator=separator)
            if test_rows is not None else None)
    return Task(name, train, test, names or (), _columns(text, pair, label), unread=unread)


def _to_examples(rows: Rows, text: str, pair: str | None, label: str,
                 names: tuple[str, ...] | None, where: str, offset: int = 0,
                 group: str | None = None, separator: str | None = None) -> Examples:
    """The rows as examples: each label its index in `names`, or with names=None
    (task_head=regression) its number, or with a `separator` (task_head=multilabel) the
    multi-hot tuple of its labels (1.0 at each label it has). A ClassLabel column's -1 is
    `datasets`' mark of an unlabelled row (a hub NLI set's pairs without a gold label):
    such rows are left out, and counted in the log. `group` (partition_by): the column
    naming each row's client."""
    if not rows.rows:
        raise ConfigError(f"dataset: {where} has no rows")
    present = set(rows.rows[0])
    label_fields = label_columns(label, present) if separator is not None else None
    for field_name, column in (("text_column", text), ("pair_column", pair),
                               *(("label_column", c) for c in label_fields or [label]),
                               ("partition_by", group)):
        if column is not None and column not in present:
            raise ConfigError(f"{field_name}: {where} has no column {column!r}; its columns are "
                              f"{sorted(present)}")
    lookup = {n: i for i, n in enumerate(names or ())}
    texts, pairs, labels, skipped = [], [] if pair else None, [], 0
    groups: list[str] | None = [] if group else None
    for i, row in enumerate(rows.rows):
        if separator is not None:
            index = multi_hot(row_label_set(rows, i, label, separator, where), lookup,
                               names, where, rows.name(i))
        else:
            raw = class_label(rows, label, row.get(label))
            check_label(raw, label, where, rows.name(i))
            if raw is UNLABELLED:
                skipped += 1
                continue
            index = (read_score(raw, label, where, rows.name(i)) if names is None
                     else class_index(raw, lookup, names, offset, where, rows.name(i)))
        first, second = row_texts(rows, i, text, pair, where)
        texts.append(first)
        if pair:
            pairs.append(second)
        labels.append(index)
        if group:
            groups.append(group_of(row.get(group), group, where, rows.name(i)))
    if skipped:
        log.info("dataset: %s: %d rows with label -1 (no label, as datasets marks it) left out",
                 where, skipped)
    if not labels:
        raise ConfigError(f"dataset: {where} has no labelled rows (every label is -1, as "
                          "datasets marks an unlabelled split); give a labelled split")
    return Examples(texts, labels, pairs, groups=groups)
