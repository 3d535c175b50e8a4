"""Build a run from a Config and drive its rounds; writes the run directory.

Whichever engine runs the clients (spry.runner chooses: in process, or Flower's
ServerApp handing in a FlowerEngine), the round loop is this one.

A run directory holds: config.yaml (resolved), metrics.jsonl (one line per round),
units.json (the trainable units in network order) and trainable.safetensors (the final
trainable weights); with checkpoint_every, checkpoint.pt (spry.checkpoint), from which
`run(cfg, resume_dir=...)` / `spry run --resume RUN_DIR` continue exactly.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from spry import checkpoint
from spry.client import held_out_metrics
from spry.config import POOLED_HEAD_INITS, Config, ConfigError
from spry.config.choices import LABEL_HEADS, POOLED_HEADS
from spry.data import (Examples, FederatedData, Task, build_federated_data, held_out_split,
                       load_task)
from spry.data.files import data_stem
from spry.data.sources import read_node_file
from spry.engines import LocalEngine
from spry.engines.protocol import Engine
from spry.metrics import MetricsLog
from spry.models import (HEAD_UNIT, check_device, check_max_length, list_units, load_tokenizer,
                         load_trainable, trainable_state)
from spry.per_iteration import LocalStepEngine, PerIterationServer
from spry.seeds import derive_seed, seeded_global_rng
from spry.tasks.heads import head_of
from spry.tasks.linear_head import head_param_names
from spry.tasks.pooling import is_pooled
from spry.progress import Progress
from spry.resume import FINAL, resume_state, rewrite_metrics
from spry.rundir import RunLock
from spry.server import Server, scheduled_eval
from spry.settings import to_yaml

log = logging.getLogger(__name__)

class RunStopped(RuntimeError):
    """The run ended early as configured (on_all_clients_failed=stop); metrics.jsonl,
    trainable.safetensors and the last checkpoint are written."""


@dataclass
class Experiment:
    cfg: Config
    tokenizer: object
    data: FederatedData
    model: nn.Module
    server: Server
    engine: Engine
    driver: object = None
    """What runs a round: the Server itself, or PerIterationServer for per_iteration."""

    def __post_init__(self) -> None:
        self.driver = self.driver or self.server


CUT_WARNING = 0.25
"""The share of truncated training texts above which a run says so before it starts."""


def cut_words(word_tokens: list[list[int]]) -> int:
    """task_head=token: how many words of an encoded split no token reads (past
    max_length)."""
    return sum(t < 0 for sentence in word_tokens for t in sentence)


def build(cfg: Config, held_out: bool = True) -> Experiment:
    """Everything a run needs; every input is checked here, before the first round.
    The Experiment's cfg is the resolved one: the columns and label names the data used.
    `held_out=False` (a SuperNode with client_data=node) reads no test_file: only the
    server scores the held-out split."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    log.info("loading the tokenizer of %s", cfg.model)
    tokenizer = load_tokenizer(cfg)
    check_max_length(cfg, tokenizer)
    head = head_of(cfg)
    if cfg.client_data == "node":
        task, data = _node_data(cfg, tokenizer, head, held_out)
    else:
        cfg, task, data = _dealt_data(cfg, tokenizer, head)
    if cfg.task_head in LABEL_HEADS and (
            cut := data.cut_share(cfg.max_length)) > CUT_WARNING:
        log.warning("%.0f%% of the training texts reach max_length=%d tokens and are cut "
                    "there; if what decides their label may come later, raise max_length "
                    "(a step's cost grows about in proportion)", 100 * cut, cfg.max_length)
    if cfg.task_head == "token" and data.test is not None and (
            cut := cut_words(data.test.word_tokens)):
        words = sum(map(len, data.test.word_tokens))
        log.warning("%d of the %d held-out words (%.1f%%) lie past max_length=%d tokens: the "
                    "model never sees them and they count as predicted `O`; raise "
                    "max_length to score them", cut, words, 100 * cut / words, cfg.max_length)
    log.info("loading %s (peft=%s)", cfg.model, cfg.peft)
    # Head and adapter initialisation read the global RNG inside transformers/peft.
    with seeded_global_rng(derive_seed(cfg.seed, "init")):
        model = head.load_model(cfg, data.num_labels, tokenizer.pad_token_id,
                                task.label_words or task.label_names)
    units = list_units(model)
    if not units:
        raise ConfigError(f"peft: {cfg.peft!r} left no trainable weights in {cfg.model!r}")
    server = Server(cfg, units, trainable_state(model))
    if cfg.communication == "per_iteration":
        driver = PerIterationServer(server)
        engine = LocalStepEngine(cfg, model, tokenizer, data, driver.params_of)
        return Experiment(cfg, tokenizer, data, model, server, engine, driver)
    return Experiment(cfg, tokenizer, data, model, server, LocalEngine(cfg, model, tokenizer, data))


def _dealt_data(cfg: Config, tokenizer, head) -> tuple[Config, Task, FederatedData]:
    """client_data=partition: `dataset` read here and dealt to the clients by the seed; the
    config resolved to the columns and label names the data used."""
    log.info("reading the data: %s", cfg.dataset)
    task = load_task(cfg)
    resolved = cfg.replace(**(task.columns or {}), label_names=list(task.label_names) or None)
    log.info("%s", describe_task(task))
    if task.unread:
        log.warning("column(s) %s hold text and are not read: the model sees column %r%s only; "
                    "to give one as the second text of a pair, set pair_column=%s",
                    list(task.unread), resolved.text_column,
                    f" and {resolved.pair_column!r}" if resolved.pair_column else "",
                    task.unread[0])
    kept = min(len(task.train), cfg.max_train_examples or len(task.train))
    log.info("tokenizing and dealing %d examples to %d clients (%s)", kept,
             cfg.num_clients, f"one a value of column {cfg.partition_by!r}" if cfg.partition_by
             else f"Dirichlet α={cfg.dirichlet_alpha:g}")
    data = build_federated_data(resolved, tokenizer, task, encoder=head.encode)
    _report_clients(cfg, data)
    return resolved, task, data


def _report_clients(cfg: Config, data: FederatedData) -> None:
    """Before the run: the clients' sizes where they differ (partition_by), those without
    a local test split, and a median client below one batch."""
    sizes = sorted(len(c.train) for c in data.clients)
    if sizes[0] != sizes[-1]:  # partition_by: the data's own sizes
        log.info("clients train on %d to %d examples (median %d)", sizes[0], sizes[-1],
                 sizes[len(sizes) // 2])
    if untested := sum(not len(c.test) for c in data.clients):
        log.info("%d of %d clients hold too few examples for a local test split "
                 "(client_test_fraction=%g): they train, and the generalized accuracy is the "
                 "other clients'", untested, len(data.clients), cfg.client_test_fraction)
    if sizes[len(sizes) // 2] < cfg.batch_size:
        log.warning("a client trains on %d examples (the median of %d clients), fewer than "
                    "batch_size=%d: its local epoch is one small step%s", sizes[len(sizes) // 2],
                    len(sizes), cfg.batch_size, "" if cfg.partition_by else
                    "; dealing the data to fewer clients (num_clients) gives each more")


def _node_data(cfg: Config, tokenizer, head, held_out: bool) -> tuple[Task, FederatedData]:
    """client_data=node: no training data in this process (each SuperNode reads its own
    data-file when a message names its client); the held-out split is test_file."""
    test = (read_node_file(Path(cfg.test_file), cfg)
            if held_out and cfg.test_file is not None else None)
    task = Task(data_stem(Path(cfg.dataset)), Examples([], []), test, tuple(cfg.label_names or ()))
    if held_out:
        log.info("data: each of the %d SuperNodes reads its own data-file (client_data=node), "
                 "labels %s; %s", cfg.num_clients, list(cfg.label_names or ["a score"]),
                 "no held-out split (give test_file for one)" if test is None else
                 describe_held_out(task))
    return task, FederatedData(task, [], held_out_split(cfg, tokenizer, task, head.encode))


def majority(labels: list, names) -> tuple[str, float]:
    """(the most frequent label, its share): the accuracy of always predicting it; for
    multi-hot rows (task_head=multilabel) the most frequent set of labels, joined by '+'
    ('(none)' for no label), whose share is the exact-match accuracy of predicting it; for
    tag sequences (task_head=token, a list a sentence) the most frequent tag over the words,
    whose share is the word accuracy of predicting it everywhere."""
    if labels and isinstance(labels[0], list):
        labels = [tag for sentence in labels for tag in sentence]
    counts = Counter(labels)
    label, count = counts.most_common(1)[0]
    if isinstance(label, tuple):
        chosen = "+".join(str(names[c]) for c, hot in enumerate(label) if hot)
        return chosen or "(none)", count / len(labels)
    return str(names[label]), count / len(labels)


def _label_line(labels: list, names) -> str:
    """How many labels, (multi-label: how many a text on average,) the majority rate."""
    name, rate = majority(labels, names)
    if labels and isinstance(labels[0], tuple):
        mean = sum(map(sum, labels)) / len(labels)
        return (f"{len(names)} labels, {mean:.2f} a text (most common set {name!r}: "
                f"{rate:.3f} of train)")
    if labels and isinstance(labels[0], list):
        words = sum(map(len, labels)) / len(labels)
        return (f"{len(names)} tags, {words:.1f} words a sentence (most common tag {name!r}: "
                f"{rate:.3f} of train words)")
    return f"{len(names)} labels (majority {name!r}: {rate:.3f} of train)"


def describe_task(task) -> str:
    """One line: the sizes, the columns read, each split's majority-class rate."""
    parts = [f"{len(task.train)} training examples"]
    if task.columns:
        parts.append(", ".join(f"{k.removesuffix('_column')} column {v!r}"
                               for k, v in task.columns.items() if v is not None))
    if task.train.qa is None and len(task.train) and not task.label_names:
        parts.append(f"scores {describe_scores(task.train.labels)} in train")
    elif task.train.qa is None and len(task.train):
        parts.append(_label_line(task.train.labels, task.label_names))
    if task.test is not None and task.test.qa is None and len(task.test):
        parts.append(describe_held_out(task))
    return "data: " + "; ".join(parts)


def describe_scores(scores: list[float]) -> str:
    """A score column's range, mean and standard deviation (the RMSE of always predicting
    the mean: what a regression must beat)."""
    mean = sum(scores) / len(scores)
    sd = (sum((y - mean) ** 2 for y in scores) / len(scores)) ** 0.5
    return f"{min(scores):g} to {max(scores):g}, mean {mean:.3f}, sd {sd:.3f}"


def describe_held_out(task) -> str:
    """The held-out split's size and majority-class rate (a labelled split); for scores,
    their spread (task_head=regression)."""
    if not task.label_names:
        scores = describe_scores(task.test.labels)
        return (f"held-out test {len(task.test)} examples (scores {scores}: the sd is the "
                "RMSE of predicting the mean)")
    name, rate = majority(task.test.labels, task.label_names)
    if isinstance(task.test.labels[0], list):
        return (f"held-out test {len(task.test)} sentences (tag {name!r}: {rate:.3f} of the "
                "words, the accuracy of predicting it everywhere)")
    what = "set" if isinstance(task.test.labels[0], tuple) else "class"
    return (f"held-out test {len(task.test)} examples (majority {name!r}: {rate:.3f}, the "
            f"accuracy of predicting one {what})")


def round_zero_head(exp: Experiment) -> tuple[str, str] | None:
    """(weight, bias) of the head that round 0 sets from the clients' features (head_init
    class_means or lda), or None."""
    cfg = exp.cfg
    if (cfg.head_init not in POOLED_HEAD_INITS or cfg.task_head not in POOLED_HEADS
            or not is_pooled(exp.model)):
        return None
    head = next((u for u in exp.server.units if u.name == HEAD_UNIT), None)
    return None if head is None else head_param_names(head.params)


class WallCap:
    """max_wall_seconds: a round is the last when, once its clients are done, another
    round as long as this one's training would end past the cap. So the final round is
    known before it is evaluated (it always is), and no round is cut short: the run can end
    past the cap by the last round's evaluation, or before it by a round's length."""

    def __init__(self, seconds: float | None, started: float):
        self.seconds, self.started, self.reached = seconds, started, False

    def final(self, round_started: float) -> bool:
        now = time.perf_counter()
        self.reached = (self.seconds is not None
                        and now - self.started + (now - round_started) > self.seconds)
        return self.reached


def run_dir_for(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = cfg.run_name or f"{data_stem(Path(cfg.dataset))}-{cfg.method}-{stamp}"
    return Path(cfg.output_dir) / name


def global_test_metrics(exp: Experiment) -> dict[str, float | None]:
    """The global model on the held-out split (spry.client.held_out_metrics)."""
    if exp.data.test is None or len(exp.data.test) == 0:
        return {"test_accuracy": None}
    load_trainable(exp.model, exp.server.weights)
    return held_out_metrics(exp.model, exp.data.test, exp.tokenizer, exp.cfg)


def run(cfg: Config, progress: bool = True, engine: Engine | None = None,
        resume_dir: str | Path | None = None) -> Path:
    """Run every round; return the run directory.

    `engine`: who runs the clients; None: in this process (spry.engines.local, or
    spry.per_iteration's engine). engine=flower is started by spry.runner.run, whose
    ServerApp calls this with a FlowerEngine.
    `resume_dir`: continue that run from its checkpoint.pt (spry.resume): the
    config must match the run's except `rounds`; rows the run wrote after its checkpoint
    are dropped and redone, and the run ends as an uninterrupted one would (weights and
    metrics.jsonl, up to the *_seconds timings).
    Raises RunStopped when a round accepted no update and on_all_clients_failed=stop.
    """
    if engine is None and cfg.engine == "flower":
        raise ConfigError("engine: engine=flower runs through spry.runner.run (Flower's "
                          "runtime hands this loop its engine)")
    check_device(cfg.device)  # before the run directory is made
    out = Path(resume_dir) if resume_dir is not None else run_dir_for(cfg)
    with RunLock(out):  # one writer per run directory, taken before anything is read
        return _run(cfg, out, progress, engine, resume_dir is not None)


def _run(cfg: Config, out: Path, progress: bool, engine, resuming: bool) -> Path:
    exp, metrics, first, elapsed = _open(cfg, out, engine, resuming)
    stopped = _drive(exp, out, metrics, first, elapsed, progress)
    save_file({n: t.contiguous() for n, t in exp.server.weights.items()}, str(out / FINAL))
    if stopped is not None:
        raise RunStopped(f"round {stopped}: no client's update was accepted (see failed_clients "
                         f"and rejected_updates in {out / 'metrics.jsonl'}), and "
                         "on_all_clients_failed=stop; set on_all_clients_failed=continue to "
                         "go on past such rounds")
    return out


def _open(cfg: Config, out: Path, engine, resuming: bool
          ) -> tuple[Experiment, MetricsLog, int, float]:
    """Build the run, write its files, restore a checkpoint or run round 0: (the
    experiment, its metrics log, the first round to run, the seconds already spent)."""
    state = resume_state(cfg, out) if resuming else None
    if not resuming and (out / "metrics.jsonl").exists():
        raise ConfigError(f"run_name: {out} already holds a run; choose another run_name or "
                          f"output_dir, or continue it: spry run --resume {out} (nothing was "
                          "overwritten)")
    exp = build(cfg)
    if engine is not None:
        exp.engine = engine
    if not resuming:
        (out / "config.yaml").write_text(to_yaml(exp.cfg))
    else:  # a resumed run keeps its file (and its comments); only `rounds` may have changed
        text = (out / "config.yaml").read_text()
        (out / "config.yaml").write_text(
            re.sub(r"(?m)^rounds: .*$", f"rounds: {cfg.rounds}", text, count=1))
    (out / "units.json").write_text(json.dumps(
        [{"name": u.name, "params": list(u.params)} for u in exp.server.units], indent=1))
    first, elapsed = 1, 0.0
    if state is not None:
        checkpoint.restore(exp, state)
        first, elapsed = state["round"] + 1, state["elapsed_seconds"]
        log.info("resuming %s after round %d", out, state["round"])
    if resuming:
        rewrite_metrics(out / "metrics.jsonl", state["metrics"] if state else [])
    metrics = MetricsLog(out / "metrics.jsonl")
    metrics.rows = list(state["metrics"]) if state is not None else []
    if state is None and (head := round_zero_head(exp)) is not None:
        elapsed = _round_zero(exp, metrics, head)
    return exp, metrics, first, elapsed


def _round_zero(exp: Experiment, metrics: MetricsLog, head: tuple[str, str]) -> float:
    """head_init=class_means or lda: the head from the clients' features, a round of its
    own; its seconds, which the run's elapsed time (and max_wall_seconds) counts from."""
    started = time.perf_counter()
    row = exp.server.initialize_head(exp.engine, *head)
    if exp.driver is not exp.server:
        exp.driver.load_weights(exp.server.weights)
    row.update(global_test_metrics(exp))
    row["elapsed_seconds"] = time.perf_counter() - started
    metrics.append(row)
    what, key = (("least-squares fit", "test_pearson") if exp.cfg.task_head == "regression"
                 else ("class means", "test_accuracy") if exp.cfg.head_init == "class_means"
                 else ("discriminant", "test_accuracy"))
    if row.get("test_entity_f1") is not None:  # task_head=token: entities are the score
        key = "test_entity_f1"
    log.info("round 0: the head starts from the %s of %d clients (%s %s)", what,
             len(row["clients"]), key.replace("_", " "),
             "–" if row.get(key) is None else f"{row[key]:.4f}")
    return row["elapsed_seconds"]


def _drive(exp: Experiment, out: Path, metrics: MetricsLog, first: int, elapsed: float,
           progress: bool) -> int | None:
    """Rounds first..cfg.rounds, each written and shown as it ends; the round at which the
    run stopped because no update was accepted (on_all_clients_failed=stop), or None."""
    cfg = exp.cfg
    view = Progress(cfg.rounds, first - 1, bar=progress, max_seconds=cfg.max_wall_seconds,
                    tensorboard_dir=out / "tensorboard" if cfg.tensorboard else None)
    if hasattr(exp.engine, "on_client"):
        exp.engine.on_client = view.client_done
    started = time.perf_counter() - elapsed
    cap = WallCap(cfg.max_wall_seconds, started)
    stopped, warned = None, False
    for server_round in range(first, cfg.rounds + 1):
        view.begin_round(server_round)
        round_started = time.perf_counter()
        row = exp.driver.run_round(server_round, exp.engine, evaluate=lambda: (
            cap.final(round_started) or scheduled_eval(cfg, server_round)))
        if "generalized_accuracy" in row:
            warned = _add_test_metrics(exp, row, server_round, warned)
        row["elapsed_seconds"] = time.perf_counter() - started
        metrics.append(row)
        view.show(row)
        every = cfg.checkpoint_every
        if every is not None and (server_round % every == 0 or server_round == cfg.rounds):
            checkpoint.save(out / checkpoint.CHECKPOINT,
                            checkpoint.capture(exp, server_round, metrics.rows,
                                               time.perf_counter() - started))
        if row.get("all_clients_failed"):
            log.warning("round %d: no client's update was accepted (failed: %s, rejected: %s)",
                        server_round, row.get("failed_clients"), row.get("rejected_updates"))
            if cfg.on_all_clients_failed == "stop":
                stopped = server_round
                break
        if cap.reached:
            log.info("stopping after round %d: another round would end past "
                     "max_wall_seconds=%g (%.0f s so far)", server_round, cfg.max_wall_seconds,
                     row["elapsed_seconds"])
            break
    view.close()
    return stopped


def _add_test_metrics(exp: Experiment, row: dict, server_round: int, warned: bool) -> bool:
    """The global model's held-out scores into an evaluated round's row (its seconds
    counted in wall_seconds); warns, once a run, of a model that predicts one class.
    Returns whether that warning has been given."""
    t0 = time.perf_counter()
    row.update(global_test_metrics(exp))
    row["test_seconds"] = time.perf_counter() - t0  # the global test split's share
    row["evaluate_seconds"] += row["test_seconds"]
    row["wall_seconds"] += row["test_seconds"]
    if row.get("test_predicted_classes") == 1 and not warned:
        log.warning("warning: after round %d the model predicts one class for every "
                    "held-out test example; its test accuracy %.4f is the "
                    "majority-class rate, not learning", server_round, row["test_accuracy"])
        return True  # once a run; the CLI's summary says it again
    if row.get("test_predicted_labels") == 0 and not warned:  # task_head=multilabel
        log.warning("warning: after round %d the model predicts no label for any held-out "
                    "test text; its exact-match rate %.4f is the share of texts without "
                    "one, not learning", server_round, row["test_accuracy"])
        return True
    return warned
