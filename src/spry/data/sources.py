"""Read a labelled text task from a recipe, a local file or the hub, through `datasets`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spry.config import Config, ConfigError
from spry.data import synthetic
from spry.data.recipes import LABEL_OFFSETS, RECIPES, FileSpec

FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                ".parquet": "parquet"}
DATA_DIR_ENV = "SPRY_DATA_DIR"


@dataclass
class Examples:
    texts: list[str]
    labels: list[int]
    pairs: list[str] | None = None
    qa: list | None = None
    """Extractive QA (spry.tasks.squad.QAExample per row; texts are the questions, pairs
    the contexts, labels 1 if answerable)."""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> "Examples":
        return Examples([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                        None if self.pairs is None else [self.pairs[i] for i in indices],
                        None if self.qa is None else [self.qa[i] for i in indices])


@dataclass
class Task:
    name: str
    train: Examples
    test: Examples | None
    label_names: tuple[str, ...]


def load_task(cfg: Config) -> Task:
    if cfg.dataset == "sentiment":
        texts, labels = synthetic.make_sentiment(2000, seed=cfg.seed)
        test_texts, test_labels = synthetic.make_sentiment(400, seed=cfg.seed + 1)
        return Task("sentiment", Examples(texts, labels), Examples(test_texts, test_labels),
                    synthetic.LABEL_NAMES)
    if cfg.dataset in RECIPES:
        return _load_recipe(cfg)
    suffix = Path(cfg.dataset).suffix.lower()
    if suffix in FILE_FORMATS or Path(cfg.dataset).exists():
        return _load_files(cfg)
    return _load_hub(cfg)


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
        return Task(cfg.dataset, train, test, names)
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
    return _load_hub(hub, test_split=recipe.hub_test_split, name=cfg.dataset)


def _read_spec(path: Path, spec: FileSpec, names: tuple[str, ...]) -> Examples:
    if spec.reader is not None:
        return spec.reader(path, names)
    rows = _read_file(path, columns=spec.columns, csv_options=spec.csv_options)
    return _to_examples(rows, spec.text, spec.pair, spec.label, names, where=str(path),
                        offset=LABEL_OFFSETS.get(_rel(path), 0))


def _rel(path: Path) -> str:
    return "/".join(path.parts[-2:])


def _load_files(cfg: Config) -> Task:
    train_rows = _read_file(Path(cfg.dataset))
    test_rows = _read_file(Path(cfg.test_file)) if cfg.test_file else None
    columns = list(train_rows[0].keys()) if train_rows else []
    text = cfg.text_column or next((c for c in ("text", "sentence", "premise") if c in columns),
                                   None)
    if text is None:
        raise ConfigError(f"text_column: {cfg.dataset} has columns {columns}; set "
                          "text_column=<the column holding the text>")
    label = cfg.label_column or "label"
    names = tuple(cfg.label_names) if cfg.label_names else _infer_label_names(train_rows, label,
                                                                              cfg.dataset)
    train = _to_examples(train_rows, text, cfg.pair_column, label, names, where=cfg.dataset)
    test = (_to_examples(test_rows, text, cfg.pair_column, label, names, where=cfg.test_file)
            if test_rows is not None else None)
    return Task(Path(cfg.dataset).stem, train, test, names)


def _load_hub(cfg: Config, test_split: str | None = "test", name: str | None = None) -> Task:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.dataset)
    except Exception as exc:  # datasets raises many types for "not found / offline"
        raise ConfigError(
            f"dataset: cannot load {cfg.dataset!r} from the hub ({type(exc).__name__}: "
            f"{str(exc)[:200]}); give a recipe ({', '.join(['sentiment', *RECIPES])}) with "
            "data_dir, or a local csv/tsv/json/jsonl/parquet file") from None
    text, label = cfg.text_column or "text", cfg.label_column or "label"
    train_rows = list(ds["train"])
    names = tuple(cfg.label_names) if cfg.label_names else _hub_label_names(ds["train"], label)
    train = _to_examples(train_rows, text, cfg.pair_column, label, names, where=cfg.dataset,
                         skip_negative=True)
    test = None
    if test_split and test_split in ds:
        test = _to_examples(list(ds[test_split]), text, cfg.pair_column, label, names,
                            where=f"{cfg.dataset}[{test_split}]", skip_negative=True)
    return Task(name or cfg.dataset, train, test, names)


def _hub_label_names(split, label: str) -> tuple[str, ...]:
    feature = split.features.get(label)
    if getattr(feature, "names", None):
        return tuple(feature.names)
    return _infer_label_names(list(split), label, "hub dataset")


def _read_file(path: Path, columns: tuple[str, ...] | None = None,
               csv_options: dict | None = None) -> list[dict]:
    import datasets

    if not path.is_file():
        raise ConfigError(f"dataset: file {path} does not exist or is not a file")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"dataset: {path} has suffix {path.suffix!r}; use one of "
                          f"{', '.join(FILE_FORMATS)}")
    options = dict(csv_options or {})
    if fmt == "csv":
        options.setdefault("delimiter", "\t" if path.suffix.lower() == ".tsv" else ",")
        if columns:
            options.update(column_names=list(columns), header=None)
        # Texts like "NA" or "null" stay text; labels are mapped below whatever their type.
        options.setdefault("keep_default_na", False)
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **options)
    except Exception as exc:
        raise ConfigError(f"dataset: cannot read {path} as {fmt} ({type(exc).__name__}: "
                          f"{str(exc)[:300]})") from None
    return list(ds)


def _infer_label_names(rows: list[dict], label: str, where: str) -> tuple[str, ...]:
    values = {row.get(label) for row in rows}
    if None in values:
        raise ConfigError(f"label_column: {where} has no column {label!r} in every row; set "
                          "label_column=<the label column>")
    as_ints = [_as_int(v) for v in values]
    if all(v is not None for v in as_ints):
        return tuple(str(i) for i in range(max(as_ints) + 1))
    return tuple(sorted(str(v) for v in values))


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _to_examples(rows: list[dict], text: str, pair: str | None, label: str,
                 names: tuple[str, ...], where: str, offset: int = 0,
                 skip_negative: bool = False) -> Examples:
    if not rows:
        raise ConfigError(f"dataset: {where} has no rows")
    present = set(rows[0])
    for field_name, column in (("text_column", text), ("pair_column", pair),
                               ("label_column", label)):
        if column is not None and column not in present:
            raise ConfigError(f"{field_name}: {where} has no column {column!r}; its columns are "
                              f"{sorted(present)}")
    lookup = {n: i for i, n in enumerate(names)}
    texts, pairs, labels = [], [] if pair else None, []
    for row_number, row in enumerate(rows):
        raw = row[label]
        index = lookup.get(str(raw))
        if index is None:
            as_int = _as_int(raw)
            index = None if as_int is None else as_int - offset
        if index is not None and index < 0 and skip_negative:
            continue  # hub NLI sets mark unlabelled pairs with -1
        if index is None or not 0 <= index < len(names):
            raise ConfigError(f"label_names: {where} row {row_number} has label {raw!r}, outside "
                              f"the label set {list(names)}; fix the data or set label_names")
        texts.append(str(row[text]).replace("\\n", " ").replace("\\", " "))
        if pair:
            pairs.append(str(row[pair]))
        labels.append(index)
    return Examples(texts, labels, pairs)
