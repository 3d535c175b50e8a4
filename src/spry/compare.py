"""Compare finished (or running) runs as a Markdown table, from their run directories.

    spry compare runs/sst2-spry runs/sst2-fedmezo --target 0.8 --bench benchmarks/results/minilm.json

Reads only each run's metrics.jsonl and config.yaml (metrics are data), so it works on a
run that is still going. Per run: final and best generalized and personalized accuracy,
the first evaluated round (and the wall time then) at which generalized accuracy reached
the target, the final accuracy on the data set's global test split (where it has one),
rounds and wall time in all, bytes up and down, and the peak memory of one
client step of the run's method as `spry bench` measured it (`--bench`; the bench's own
batch and length, not the run's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from spry.config import Config, ConfigError


@dataclass
class Run:
    path: Path
    rows: list[dict]
    config: dict
    finished: bool
    """The run loop ended and wrote trainable.safetensors."""

    @property
    def name(self) -> str:
        return self.path.name

    def evaluated(self, key: str) -> list[dict]:
        return [r for r in self.rows if r.get(key) is not None]


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "metrics.jsonl").is_file():
        raise ConfigError(f"{path}: no metrics.jsonl there; give run directories written by "
                          "`spry run` (e.g. runs/sentiment-spry-<time>)")
    config_file = path / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return Run(path, _complete_rows(path / "metrics.jsonl"), config or {},
               (path / "trainable.safetensors").is_file())


def _complete_rows(path: Path) -> list[dict]:
    """The rows of metrics.jsonl, less a last line that a live run is still writing."""
    text = path.read_text()
    if not text.endswith("\n") and "\n" in text:
        text = text[:text.rindex("\n") + 1]
    elif not text.endswith("\n"):
        text = ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------- peak memory ---
def read_bench(path: str | Path) -> dict:
    """A `spry bench --out` JSON report."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--bench: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--bench: {path} is not JSON ({exc}); give a `spry bench --out` "
                          "report") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise ConfigError(f"--bench: {path} has no `results` list; give a `spry bench --out` "
                          "report")
    return report


def bench_peaks(report: dict) -> dict[str, float]:
    """mode -> peak MiB of one step above the loaded model; glibc rows win over others
    (the allocator a plain install has), failed modes are left out."""
    peaks: dict[str, float] = {}
    for r in sorted(report.get("results", []), key=lambda r: r.get("allocator") != "glibc"):
        if r.get("error") is None and r.get("available", True) and r["mode"] not in peaks:
            peaks[r["mode"]] = r["peak_mib"]
    return peaks


def bench_setting(report: dict, key: str):
    """A setting the bench ran with, as its overrides give it (a string), or the default."""
    for item in report.get("settings", {}).get("overrides", []):
        name, _, value = item.partition("=")
        if name == key:
            return value
    return getattr(Config, key)


# What a client step's memory depends on besides the method: a run that differs from the
# bench in any of these gets no peak (the bench measured another adapter).
BENCH_MATCH = ("model", "peft", "lora_r")


# The bench mode that measures one client step of a run's method. Spry's client trains
# only the units dealt to it (spry_share: one of 10 clients in a round).
BENCH_MODE = {"spry": ("spry_share", "spry"), "fedfgd": ("spry",), "backprop": ("backprop",),
              "fedsgd": ("backprop",), "fedmezo": ("fedmezo",), "baffle": ("baffle",),
              "fwdllm": ("fwdllm",)}


def peak_mib(run: Run, report: dict | None) -> float | None:
    if report is None or any(str(run.config.get(key, getattr(Config, key)))
                             != str(bench_setting(report, key)) for key in BENCH_MATCH):
        return None
    peaks = bench_peaks(report)
    k = run.config.get("tangents", 1)
    for mode in BENCH_MODE.get(run.config.get("method", "spry"), ()):
        name = mode if k == 1 else f"{mode.removesuffix('_share')}:{k}"
        if name in peaks:
            return peaks[name]
    return None


# ------------------------------------------------------------------------------ table ---
def auto_target(runs: list[Run]) -> float | None:
    """The lowest best generalized accuracy among the runs: every run reaches it, so the
    time to it compares all of them."""
    bests = [max(r["generalized_accuracy"] for r in run.evaluated("generalized_accuracy"))
             for run in runs if run.evaluated("generalized_accuracy")]
    return min(bests) if bests else None


def summarize(run: Run, target: float | None = None, bench: dict | None = None) -> dict:
    last = run.rows[-1] if run.rows else {}
    out = {"run": run.name, "method": run.config.get("method"),
           "dataset": run.config.get("dataset"), "alpha": run.config.get("dirichlet_alpha"),
           "rounds": last.get("round"), "seconds": last.get("elapsed_seconds"),
           "bytes_up": last.get("bytes_up_total"), "bytes_down": last.get("bytes_down_total"),
           "finished": run.finished, "peak_mib": peak_mib(run, bench)}
    for key, short in (("generalized_accuracy", "gen"), ("personalized_accuracy", "pers")):
        rows = run.evaluated(key)
        out[f"final_{short}"] = rows[-1][key] if rows else None
        out[f"best_{short}"] = max(r[key] for r in rows) if rows else None
    tested = run.evaluated("test_accuracy")
    out["final_test"] = tested[-1]["test_accuracy"] if tested else None
    hit = next((r for r in run.evaluated("generalized_accuracy")
                if target is not None and r["generalized_accuracy"] >= target), None)
    out["target_round"] = hit["round"] if hit else None
    out["target_seconds"] = hit.get("elapsed_seconds") if hit else None
    return out


def _acc(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _int(v) -> str:
    return "–" if v is None else f"{v:,}"


def _seconds(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _bytes(v) -> str:
    if v is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v} B"


def _mib(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


# (key, header, format); the order of the table's columns.
COLUMNS = [
    ("run", "run", str), ("method", "method", str),
    ("final_gen", "final gen. acc", _acc), ("best_gen", "best gen. acc", _acc),
    ("final_pers", "final pers. acc", _acc), ("best_pers", "best pers. acc", _acc),
    ("final_test", "final test acc", _acc),
    ("target_round", "rounds to target", _int), ("target_seconds", "s to target", _seconds),
    ("rounds", "rounds", _int), ("seconds", "wall s", _seconds),
    ("bytes_up", "bytes up", _bytes), ("bytes_down", "bytes down", _bytes),
    ("peak_mib", "client peak MiB", _mib),
]


def markdown_table(summaries: list[dict], extra: list[tuple] = ()) -> str:
    """One row per summary; `extra` adds (key, header, format) columns at the end."""
    columns = COLUMNS + list(extra)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    for s in summaries:
        cells = []
        for key, _, fmt in columns:
            cell = "–" if s.get(key) is None else fmt(s[key])
            if key == "run" and not s.get("finished", True):
                cell += " (running or stopped)"
            cells.append(cell.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(run_dirs: list[str | Path], target: float | None = None,
            bench: dict | None = None) -> str:
    """The Markdown text `spry compare` prints: a line naming the target, then the table."""
    runs = [load_run(d) for d in run_dirs]
    chosen = target if target is not None else auto_target(runs)
    summaries = [summarize(run, chosen, bench) for run in runs]
    if chosen is None:
        head = "No run has evaluated yet: no accuracy to compare."
    elif target is None:
        head = (f"Target: generalized accuracy ≥ {chosen:.3f}, the lowest best among these "
                "runs (`--target` sets it).")
    else:
        head = f"Target: generalized accuracy ≥ {chosen:.3f}."
    note = ("Accuracies are fractions; wall s is the run's elapsed time; client peak MiB is one "
            "client step of the method as measured by `spry bench`" if bench is not None else
            "Accuracies are fractions; wall s is the run's elapsed time")
    return f"{head} {note}.\n\n{markdown_table(summaries)}\n"
