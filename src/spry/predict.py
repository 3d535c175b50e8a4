"""`spry predict RUN_DIR DATA`: a finished run's model on new texts.

The model is rebuilt as the run built it (its config.yaml, the same seeded
initialisation, so TinyLoRA's frozen projections and any frozen LoRA factors are the
run's), and the final trainable weights (trainable.safetensors: adapters and head) are
loaded into it. DATA is read as the run read its own data: the same text, pair and label
columns and label set; a label column is optional (with one, the accuracy is reported).
The predictions are written as a csv: the text (and pair), the label where given, the
predicted label, its probability, and each label's probability; for a regression run the
predicted score (with DATA's scores, the run's test metrics against them); for a tagging
run (task_head=token) each word's predicted tag, as CoNLL lines.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from spry.config import Config, ConfigError
from spry.config.choices import LABEL_HEADS
from spry.data.examples import Examples
from spry.data.files import data_stem, data_suffix, is_saved_dataset, read_rows
from spry.data.recipes import RECIPES
from spry.data.columns import row_texts, text_columns
from spry.data.labels import (UNLABELLED, class_label, label_columns, label_key, multi_hot,
                              read_score, row_label_set)
from spry.models import check_device
from spry.resume import FINAL
from spry.seeds import derive_seed, seeded_global_rng
from spry.tasks.metrics import class_report, macro_f1

PREDICT_OVERRIDES = ("device", "eval_batch_size", "eval_dtype", "threads")
"""What may differ from the run's settings when predicting: where and how fast, never
what the model is."""


@dataclass
class Predictions:
    path: Path
    count: int
    accuracy: float | None
    """Against DATA's label column, where it has one."""
    loss: float | None
    """The mean cross-entropy against it (metrics.jsonl's test_loss on a run's test file)."""
    counts: dict[str, int]
    """How many examples each label was predicted for."""
    macro_f1: float | None = None
    """The mean of the per-class F1s (spry.tasks.metrics.macro_f1), where DATA has labels."""
    report: dict[str, tuple[float, float, float, int]] | None = None
    """Per label that DATA holds or the model predicts: (precision, recall, F1, support)."""
    scores: dict[str, float] | None = None
    """task_head=regression, where DATA has scores: metrics.jsonl's test_loss, test_rmse,
    test_pearson and test_spearman against them (spry.tasks.regression.score_metrics)."""
    micro_f1: float | None = None
    """task_head=multilabel, where DATA has labels: F1 over every (text, label) decision
    (spry.tasks.metrics.label_set_scores); `accuracy` is then the exact-match rate."""
    entities: dict[str, float] | None = None
    """task_head=token with BIO tags, where DATA has tags: metrics.jsonl's test_entity_f1,
    _precision and _recall against them; `accuracy` is then over words."""


def predict(run_dir: str | Path, data: str | Path, out: str | Path | None = None,
            overrides: list[str] | None = None) -> Predictions:
    """Predict DATA's labels with RUN_DIR's final model; write them to `out` (default
    RUN_DIR/predictions/<DATA's stem>.csv)."""
    from spry.client import eval_precision
    from spry.models import load_tokenizer
    from spry.tasks.classifier import predict_logits
    from spry.tasks.heads import head_of

    cfg = run_config(Path(run_dir), overrides or [])
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    names = tuple(cfg.label_names or ())
    if cfg.task_head == "token":
        return _tag(Path(run_dir), Path(data), out, cfg, names)
    texts, pairs, labels = _read(Path(data), cfg, names)
    tokenizer = load_tokenizer(cfg)
    encoded = head_of(cfg).encode(Examples(texts, labels or [0] * len(texts), pairs), tokenizer,
                                  cfg.max_length)
    model = load_run_model(Path(run_dir), cfg, tokenizer)
    with eval_precision(cfg):
        logits = predict_logits(model, encoded, tokenizer, cfg)
    path = Path(out) if out else Path(run_dir) / "predictions" / f"{data_stem(Path(data))}.csv"
    if cfg.task_head == "regression":
        return _scores(path, texts, pairs, labels, logits[:, 0].tolist())
    if cfg.task_head == "multilabel":
        return _label_sets(path, cfg, texts, pairs, labels, logits, names)
    probabilities = logits.softmax(-1)
    predicted = probabilities.argmax(-1).tolist()
    _write(path, texts, pairs, labels, predicted, probabilities, names)
    accuracy = loss = f1 = report = None
    if labels:
        accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
        loss = float(torch.nn.functional.cross_entropy(logits, torch.tensor(labels)))
        f1 = macro_f1(predicted, labels)
        report = {names[c]: row for c, row in class_report(predicted, labels).items()}
    counts = {n: predicted.count(i) for i, n in enumerate(names)}
    return Predictions(path, len(texts), accuracy, loss, counts, f1, report)


def _scores(path: Path, texts, pairs, scores, predicted: list[float]) -> Predictions:
    """task_head=regression: the predicted scores written beside the texts (and DATA's
    scores where it has them), scored against them."""
    from spry.tasks.regression import score_metrics

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", *(["pair"] if pairs else []), *(["label"] if scores else []),
                    "predicted"])
        for i, text in enumerate(texts):
            w.writerow([text, *([pairs[i]] if pairs else []), *([scores[i]] if scores else []),
                        f"{predicted[i]:.4f}"])
    metrics = score_metrics(predicted, scores) if scores else None
    loss = None if metrics is None else metrics["test_loss"]
    return Predictions(path, len(texts), None, loss, {}, scores=metrics)


def _label_sets(path: Path, cfg: Config, texts, pairs, labels, logits: torch.Tensor,
                names: tuple[str, ...]) -> Predictions:
    """task_head=multilabel: each text's predicted labels (those past probability 0.5,
    joined by the run's label_separator) and every label's probability written beside it;
    where DATA has labels, the run's held-out metrics against them."""
    from spry.tasks.classifier import pointwise_loss
    from spry.tasks.metrics import label_set_report, label_set_scores
    from spry.tasks.multilabel import gold_sets, label_sets

    predicted = label_sets(logits)
    gold = gold_sets(labels) if labels else None
    joined = [cfg.label_separator.join(names[c] for c in s) for s in (gold or [])]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", *(["pair"] if pairs else []), *(["label"] if gold else []),
                    "predicted", *(f"p({n})" for n in names)])
        for i, text in enumerate(texts):
            w.writerow([text, *([pairs[i]] if pairs else []), *([joined[i]] if gold else []),
                        cfg.label_separator.join(names[c] for c in predicted[i]),
                        *(f"{x:.4f}" for x in logits[i].sigmoid().tolist())])
    counts = {n: sum(c in s for s in predicted) for c, n in enumerate(names)}
    if gold is None:
        return Predictions(path, len(texts), None, None, counts)
    scores = label_set_scores(predicted, gold)
    loss = float(pointwise_loss(logits, torch.tensor(labels, dtype=torch.float32)).mean())
    report = {names[c]: row for c, row in label_set_report(predicted, gold).items()}
    return Predictions(path, len(texts), scores["accuracy"], loss, counts, scores["macro_f1"],
                       report, micro_f1=scores["micro_f1"])


def _tag(run_dir: Path, data: Path, out, cfg: Config, names: tuple[str, ...]) -> Predictions:
    """task_head=token: each word's predicted tag and its probability, written as CoNLL
    lines (`word [gold] predicted probability`, conlleval's layout; a blank line after each
    sentence) to RUN_DIR/predictions/<DATA's stem>.conll, or a row a sentence (tags joined
    by spaces) where `out` ends in .csv; where DATA has tags, the run's held-out metrics
    against them."""
    from spry.client import eval_precision
    from spry.models import load_tokenizer
    from spry.tasks.tokens import encode, entity_scores, is_entity_tagging, predict_tags

    words, gold = _read_tagged(data, cfg, names)
    tokenizer = load_tokenizer(cfg)
    examples = Examples([" ".join(w) for w in words],
                        gold or [[0] * len(w) for w in words], words=words)
    encoded = encode(examples, tokenizer, cfg.max_length)
    model = load_run_model(run_dir, cfg, tokenizer)
    with eval_precision(cfg):
        tags, probabilities, loss, seen = predict_tags(model, encoded, tokenizer, cfg)
    path = Path(out) if out else run_dir / "predictions" / f"{data_stem(data)}.conll"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        if path.suffix.lower() == ".csv":
            w = csv.writer(f)
            w.writerow(["text", *(["tags"] if gold else []), "predicted"])
            for i, sentence in enumerate(words):
                w.writerow([" ".join(sentence),
                            *([" ".join(names[t] for t in gold[i])] if gold else []),
                            " ".join(names[t] for t in tags[i])])
        else:
            for i, sentence in enumerate(words):
                for j, word in enumerate(sentence):
                    p = probabilities[i][j]
                    shown = "-" if p is None else f"{p:.4f}"
                    f.write("\t".join([word, *([names[gold[i][j]]] if gold else []),
                                       names[tags[i][j]], shown]) + "\n")
                f.write("\n")
    flat = [t for s in tags for t in s]
    counts = {n: flat.count(c) for c, n in enumerate(names)}
    if not gold:
        return Predictions(path, len(words), None, None, counts)
    truth = [t for s in gold for t in s]
    report = {names[c]: row for c, row in class_report(flat, truth).items()}
    made = Predictions(path, len(words), sum(p == y for p, y in zip(flat, truth)) / len(truth),
                       loss / max(seen, 1), counts, macro_f1(flat, truth), report)
    if is_entity_tagging(names):
        made.entities = entity_scores([[names[t] for t in s] for s in gold],
                                      [[names[t] for t in s] for s in tags])
    return made


def _read_tagged(path: Path, cfg: Config, names: tuple[str, ...]
                 ) -> tuple[list[list[str]], list[list[int]] | None]:
    """DATA's sentences as words, and their tags as indices into the run's tag set where it
    has the run's tag column (a CoNLL file: where its lines have tags)."""
    from spry.data.tags import cell_list, row_words_tags

    if path.is_dir():
        raise ConfigError(f"predict: {path} is a folder; give the file to tag")
    rows = read_rows(path, unlabelled=True)
    if not rows.rows:
        raise ConfigError(f"predict: {path} has no rows")
    columns = list(rows.rows[0])
    text, label = cfg.text_column, cfg.label_column
    if text not in columns:
        raise ConfigError(f"predict: {path} has no column {text!r}, which the run read as its "
                          f"words; its columns are {sorted(columns)}: name that column "
                          f"{text!r}")
    if label not in columns:
        words = []
        for i, row in enumerate(rows.rows):
            found = cell_list(row.get(text))
            if not found:
                raise ConfigError(f"predict: {path} {rows.name(i)} has no words in column "
                                  f"{text!r}; give every sentence its words, or drop the row")
            words.append([str(w) for w in found])
        return words, None
    lookup = {n: i for i, n in enumerate(names)}
    words, gold = [], []
    for i in range(len(rows)):
        found, raw = row_words_tags(rows, i, text, label, str(path))
        index = [lookup.get(str(label_key(t))) for t in raw]
        if None in index:
            bad = raw[index.index(None)]
            raise ConfigError(f"predict: {path} {rows.name(i)} has the tag {bad!r}, which the "
                              f"run did not train on (its tags: {list(names)}); fix it, or "
                              f"drop column {label!r} to tag without scoring")
        words.append(found)
        gold.append(index)
    return words, gold


def load_run_model(run_dir: Path, cfg: Config, tokenizer):
    """The run's final model: built as spry.experiment.build built it (the same seeded
    initialisation, so TinyLoRA's frozen projections are the run's), with its final
    trainable weights loaded."""
    from safetensors.torch import load_file

    from spry.models import load_trainable, trainable_params
    from spry.tasks.heads import head_of

    names = tuple(cfg.label_names or ())
    with seeded_global_rng(derive_seed(cfg.seed, "init")):
        model = head_of(cfg).load_model(cfg, len(names), tokenizer.pad_token_id,
                                        _label_words(cfg) or names)
    weights = load_file(str(run_dir / FINAL))
    expected = set(trainable_params(model))
    if set(weights) != expected:
        raise ConfigError(f"predict: {run_dir / FINAL} holds {len(weights)} tensors that "
                          f"do not fit the model its config.yaml builds ({len(expected)} "
                          "trainable tensors); it was not written by this run's settings")
    load_trainable(model, weights)
    return model


def run_config(run_dir: Path, overrides: list[str], command: str = "predict",
               heads: tuple[str, ...] = LABEL_HEADS) -> Config:
    """A finished run's settings, for `spry predict` or `spry export` (`command`), which
    take runs of the task `heads`."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{command}: {run_dir} has no config.yaml; give a directory that "
                          "`spry run` wrote")
    if not (run_dir / FINAL).is_file():
        raise ConfigError(f"{command}: {run_dir} has no {FINAL}: the run did not finish; "
                          f"finish it with `spry run --resume {run_dir}` (it needs "
                          f"checkpoint_every), or {command} a finished run")
    bad = [o for o in overrides if o.partition("=")[0].strip() not in PREDICT_OVERRIDES]
    if bad:
        raise ConfigError(f"predict: the run's settings make the model; only "
                          f"{', '.join(k + '=' for k in PREDICT_OVERRIDES)} may change, "
                          f"not {bad}")
    cfg = Config.from_yaml(config, overrides)
    check_device(cfg.device)
    if cfg.task_head not in heads:
        raise ConfigError(f"{command}: the run's task_head={cfg.task_head!r}; spry {command} "
                          f"takes runs of task_head={' or '.join(heads)}")
    if not cfg.label_names and cfg.task_head != "regression":
        raise ConfigError(f"{command}: {config} records no label_names; it was written by an "
                          f"older spry: {command} a run of this version")
    return cfg


def _label_words(cfg: Config) -> tuple[str, ...] | None:
    """What the run's verbalizer scored per label: its setting, else its recipe's."""
    if cfg.label_words:
        return tuple(cfg.label_words)
    recipe = RECIPES.get(cfg.dataset)
    return None if recipe is None else recipe.label_words


def _read(path: Path, cfg: Config, names: tuple[str, ...]
          ) -> tuple[list[str], list[str] | None, list[int] | None]:
    """DATA's texts (and pairs), and its labels as indices into the run's label set where
    it has the run's label column."""
    if path.is_dir():
        hint = (f" (a split of this save_to_disk folder as one: datasets.load_from_disk("
                f"'{path}')['test'].to_parquet('test.parquet'))" if is_saved_dataset(path)
                else "")
        raise ConfigError(f"predict: {path} is a folder; give the file to predict{hint}")
    rows = read_rows(path, unlabelled=True)
    columns = list(rows.rows[0]) if rows.rows else []
    if cfg.column_names and cfg.text_column not in columns and data_suffix(path) in (
            ".csv", ".tsv"):
        # the run's files had no header row: nor has this one, unless it names the column
        rows = read_rows(path, columns=tuple(cfg.column_names))
        columns = list(cfg.column_names)
    if not rows.rows:
        raise ConfigError(f"predict: {path} has no rows")
    for setting in ("text_column", "pair_column"):
        column = getattr(cfg, setting)
        if column is not None and column not in columns:
            raise ConfigError(f"predict: {path} has no column {column!r}, which the run read "
                              f"as its {setting.removesuffix('_column')}; its columns are "
                              f"{sorted(columns)}: name that column {column!r}")
    text, pair = text_columns(columns, cfg, str(path))
    read = [row_texts(rows, i, text, pair, str(path)) for i in range(len(rows))]
    texts = [first for first, _ in read]
    pairs = [second for _, second in read] if pair else None
    label = cfg.label_column or "label"
    several = label_columns(label, columns)
    if several is None and label not in columns or several and set(several) - set(columns):
        return texts, pairs, None
    if cfg.task_head == "multilabel":
        lookup = {n: i for i, n in enumerate(names)}
        try:
            return texts, pairs, [
                multi_hot(row_label_set(rows, i, label, cfg.label_separator, str(path)),
                          lookup, names, str(path), rows.name(i)) for i in range(len(rows))]
        except ConfigError as exc:
            raise ConfigError(f"predict: {exc} (the run's labels; drop column {label!r} to "
                              "predict without scoring)") from None
    if cfg.task_head == "regression":
        return texts, pairs, [read_score(r.get(label), label, str(path), rows.name(i))
                              for i, r in enumerate(rows.rows)]
    values = [class_label(rows, label, r.get(label)) for r in rows.rows]
    if all(v is UNLABELLED for v in values):  # a split datasets marks as unlabelled
        return texts, pairs, None
    lookup = {n: i for i, n in enumerate(names)}
    labels = []
    for i, (r, value) in enumerate(zip(rows.rows, values)):
        index = lookup.get(str(label_key(value)))
        if index is None:
            raise ConfigError(f"predict: {path} {rows.name(i)} has label {r.get(label)!r}, "
                              f"which the run did not train on (its labels: {list(names)}); "
                              f"fix the label, or drop column {label!r} to predict without "
                              "scoring")
        labels.append(index)
    return texts, pairs, labels


def _write(path: Path, texts, pairs, labels, predicted, probabilities, names) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["text", *(["pair"] if pairs else []), *(["label"] if labels else []),
              "predicted", "probability", *(f"p({n})" for n in names)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, text in enumerate(texts):
            p = probabilities[i].tolist()
            w.writerow([text, *([pairs[i]] if pairs else []),
                        *([names[labels[i]]] if labels else []), names[predicted[i]],
                        f"{p[predicted[i]]:.4f}", *(f"{x:.4f}" for x in p)])
