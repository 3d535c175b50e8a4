"""The live view of a run: a tqdm bar, or one plain log line a round (`spry run --quiet`),
and optionally TensorBoard event files (`tensorboard=true`).

Both show the round, an ETA, the latest training loss and the latest accuracies, which are
kept from the last evaluated round (eval_every may skip rounds). The record of a run is its
metrics.jsonl; this only shows it as it is written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from spry.config import ConfigError

log = logging.getLogger("spry.experiment")

# metrics key -> the short name shown
# The held-out test split leads where there is one: the clients' local test splits (acc)
# are a few examples each at low α, so which clients were sampled dominates them.
SHOWN = (("train_loss", "loss"), ("test_accuracy", "test"), ("test_pearson", "pearson"),
         ("generalized_accuracy", "acc"), ("personalized_accuracy", "pers"))
CLIENT_LOG_SECONDS = 10.0
"""--quiet: the least time between two lines on the clients done within a round."""


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`show(row)` after each round, `close()` at the end.

    `done`: rounds already run (a resumed run); `max_seconds`: the run's max_wall_seconds,
    which can end it before `total` rounds, so the ETA is the sooner of the two.
    """

    def __init__(self, total: int, done: int = 0, bar: bool = True,
                 max_seconds: float | None = None, tensorboard_dir: Path | None = None):
        self.total, self.done, self.max_seconds = total, done, max_seconds
        self.latest: dict[str, tuple[float, int]] = {}
        self.started = time.perf_counter()
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            # initial=: a resumed run's earlier rounds do not count in tqdm's rate and ETA
            self.bar = tqdm(total=total, initial=done, desc="rounds", unit="round")
        self.writer = tensorboard_writer(tensorboard_dir) if tensorboard_dir else None
        self.round, self.last_line = done + 1, time.perf_counter()

    def begin_round(self, server_round: int) -> None:
        self.round = server_round

    def client_done(self, done: int, total: int) -> None:
        """Progress within a round: `done` of its `total` clients have trained."""
        what = f"round {self.round}: {done}/{total} clients trained"
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=True)
        elif time.perf_counter() - self.last_line >= CLIENT_LOG_SECONDS:
            log.info("%s", what)
            self.last_line = time.perf_counter()

    def text(self, row: dict) -> str:
        """`loss=0.6912, acc=0.6210, test=0.5011 (round 5)`: the accuracies' round is named
        when it is not this one."""
        for key, label in SHOWN:
            if row.get(key) is not None:
                self.latest[label] = (row[key], row["round"])
        parts = [f"{label}={value:.4f}" for label, (value, _) in self.latest.items()]
        evaluated = [r for label, (_, r) in self.latest.items() if label != "loss"]
        if evaluated and max(evaluated) != row["round"]:
            parts[-1] += f" (round {max(evaluated)})"
        return ", ".join(parts)

    def eta(self, row: dict) -> float | None:
        rounds = row["round"] - self.done
        if rounds <= 0:
            return None
        per_round = (time.perf_counter() - self.started) / rounds
        eta = per_round * (self.total - row["round"])
        if self.max_seconds is not None and row.get("elapsed_seconds") is not None:
            # the run starts no round that would end past max_seconds (spry.experiment.WallCap)
            eta = min(eta, max(self.max_seconds - row["elapsed_seconds"], 0))
        return eta

    def show(self, row: dict) -> None:
        text = self.text(row)
        if self.bar is not None:
            if self.max_seconds is not None and row.get("elapsed_seconds") is not None:
                text += f", wall cap in {_clock(self.max_seconds - row['elapsed_seconds'])}"
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        else:
            eta = self.eta(row)
            log.info("round %d/%d: %s; eta %s", row["round"], self.total, text,
                     "?" if eta is None else _clock(eta))
            self.last_line = time.perf_counter()
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and key != "round":
                    self.writer.add_scalar(scalar_tag(key), value, row["round"])
            self.writer.flush()  # a crashed run keeps its curves

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def scalar_tag(key: str) -> str:
    """TensorBoard groups tags by the part before '/': accuracy/, loss/, bytes/, seconds/."""
    for suffix, group in (("_accuracy", "accuracy"), ("_loss", "loss"), ("_seconds", "seconds")):
        if key.endswith(suffix):
            return f"{group}/{key}"
    if key.startswith("bytes_"):
        return f"bytes/{key}"
    return f"round/{key}"


def tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: true needs the tensorboard package: "
                          "pip install tensorboard (or set tensorboard=false)") from None
    return SummaryWriter(log_dir=str(log_dir))
