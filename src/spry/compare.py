"""Compare finished (or running) runs as a Markdown table, from their run directories.

    spry compare runs/sst2-spry runs/sst2-fedmezo --target 0.8 --bench benchmarks/results/minilm.json

Reads only each run's metrics.jsonl and config.yaml (metrics are data), so it works on a
run that is still going. Per run: final and best accuracy on the held-out test split
(where the data has one; it leads), generalized and personalized accuracy, the first
evaluated round (and the wall time then) at which the target was reached — on held-out
test accuracy where every run has it, else generalized — rounds and wall time in all, bytes up and down, and the peak memory of one
client step of the run's method as `spry bench` measured it (`--bench`; the bench's own
batch and length, not the run's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from spry.compare_table import ENTITY_COLUMNS, SCORE_COLUMNS, SET_COLUMNS, markdown_table
from spry.config import Config, ConfigError
from spry.methods import METHODS


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
    return Run(path, _complete_rows(path / "metrics.jsonl"), _config(path / "config.yaml"),
               (path / "trainable.safetensors").is_file())


def _config(path: Path) -> dict:
    """A run's config.yaml as a mapping ({} where the run has none)."""
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable config.yaml ({type(exc).__name__}); "
                          "give run directories written by `spry run`") from None
    if config is not None and not isinstance(config, dict):
        raise ConfigError(f"{path}: not a mapping of settings; give run directories written "
                          "by `spry run`")
    return config or {}


# Row keys that are read as numbers (None where a round did not measure them).
NUMBERS = ("train_loss", "generalized_accuracy", "personalized_accuracy", "test_accuracy",
           "test_loss", "test_macro_f1", "test_micro_f1", "test_entity_f1", "test_pearson",
           "elapsed_seconds",
           "wall_seconds",
           "bytes_up", "bytes_down", "bytes_up_total", "bytes_down_total", "test_predicted_classes")


def _complete_rows(path: Path) -> list[dict]:
    """The rows of metrics.jsonl, less a last line that a live run is still writing; a
    line that is not a metrics row is named."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); give run directories "
                          "written by `spry run`") from None
    if not text.endswith("\n") and "\n" in text:
        text = text[:text.rindex("\n") + 1]
    elif not text.endswith("\n"):
        text = ""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            rows.append(_row(line, f"{path} line {number}"))
    return rows


def _row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg}); metrics.jsonl holds one JSON "
                          "object a round, as `spry run` writes it") from None
    if not isinstance(row, dict) or not _is_int(row.get("round")):
        raise ConfigError(f"{where}: not a metrics row (a JSON object with an integer "
                          "`round`)")
    for key in NUMBERS:
        value = row.get(key)
        if value is not None and not _is_number(value):
            raise ConfigError(f"{where}: {key} is {value!r}, not a number")
    return row


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------- peak memory ---
def read_bench(path: str | Path) -> dict:
    """A `spry bench --out` JSON report."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--bench: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--bench: {path} is not UTF-8 text; give a `spry bench --out` "
                          "report") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--bench: {path} is not JSON ({exc}); give a `spry bench --out` "
                          "report") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise ConfigError(f"--bench: {path} has no `results` list; give a `spry bench --out` "
                          "report")
    for i, r in enumerate(report["results"], 1):
        measured = isinstance(r, dict) and r.get("error") is None and r.get("available", True)
        if not isinstance(r, dict) or not isinstance(r.get("mode"), str) or measured and not (
                isinstance(r.get("allocator"), str)
                and all(_is_number(r.get(k)) for k in ("peak_mib", "median_step_seconds"))):
            raise ConfigError(f"--bench: {path} result {i} is not a bench row (mode, "
                              "allocator, peak_mib, median_step_seconds); give a `spry bench "
                              "--out` report")
    settings = report.get("settings", {})
    if not isinstance(settings, dict) or not isinstance(settings.get("overrides", []), list) \
            or not all(isinstance(o, str) for o in settings.get("overrides", [])):
        raise ConfigError(f"--bench: {path} has malformed `settings`; give a `spry bench --out` "
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


def peak_mib(run: Run, report: dict | None) -> float | None:
    """The bench's peak for one client step of the run's method at the run's K: the first
    of the method's bench modes (spry.methods.METHODS) that the report measured."""
    if report is None or any(str(run.config.get(key, getattr(Config, key)))
                             != str(bench_setting(report, key)) for key in BENCH_MATCH):
        return None
    peaks = bench_peaks(report)
    k = run.config.get("tangents", 1)
    method = METHODS.get(run.config.get("method", Config.method))
    for mode in method.bench_modes if method else ():
        name = mode if k == 1 else f"{mode.removesuffix('_share')}:{k}"
        if name in peaks:
            return peaks[name]
    return None


# ------------------------------------------------------------------------ summaries ---
def target_metric(runs: list[Run]) -> str:
    """What the target is on: the held-out test accuracy where every run measured it (the
    clients' local test splits are a few examples each at low α, so which clients were
    sampled dominates the generalized accuracy), else the held-out Pearson correlation
    where every run measured it (task_head=regression, which has no accuracy), else the
    generalized accuracy."""
    for metric in ("test_accuracy", "test_pearson"):
        if runs and all(run.evaluated(metric) for run in runs):
            return metric
    return "generalized_accuracy"


def auto_target(runs: list[Run], metric: str = "generalized_accuracy") -> float | None:
    """The lowest best `metric` among the runs: every run reaches it, so the time to it
    compares all of them."""
    bests = [max(r[metric] for r in run.evaluated(metric)) for run in runs
             if run.evaluated(metric)]
    return min(bests) if bests else None


def summarize(run: Run, target: float | None = None, bench: dict | None = None,
              metric: str = "generalized_accuracy") -> dict:
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
    out["best_test"] = max(r["test_accuracy"] for r in tested) if tested else None
    out["final_test_f1"] = tested[-1].get("test_macro_f1") if tested else None
    out["final_micro_f1"] = tested[-1].get("test_micro_f1") if tested else None  # multilabel
    entities = run.evaluated("test_entity_f1")  # task_head=token
    out["final_entity_f1"] = entities[-1]["test_entity_f1"] if entities else None
    out["best_entity_f1"] = max(r["test_entity_f1"] for r in entities) if entities else None
    out["one_class"] = bool(tested) and tested[-1].get("test_predicted_classes") == 1
    scored = run.evaluated("test_pearson")  # task_head=regression
    out["final_pearson"] = scored[-1]["test_pearson"] if scored else None
    out["best_pearson"] = max(r["test_pearson"] for r in scored) if scored else None
    hit = next((r for r in run.evaluated(metric)
                if target is not None and r[metric] >= target), None)
    out["target_round"] = hit["round"] if hit else None
    out["target_seconds"] = hit.get("elapsed_seconds") if hit else None
    return out


def compare(run_dirs: list[str | Path], target: float | None = None,
            bench: dict | None = None) -> str:
    """The Markdown text `spry compare` prints: a line naming the target, then the table."""
    runs = [load_run(d) for d in run_dirs]
    metric = target_metric(runs)
    chosen = target if target is not None else auto_target(runs, metric)
    summaries = [summarize(run, chosen, bench, metric) for run in runs]
    without = [run.name for run in runs if not run.evaluated("test_accuracy")]
    lacking = ("no run has a held-out test split" if len(without) == len(runs) else
               f"{', '.join(without[:3])}{' …' if len(without) > 3 else ''} "
               f"{'has' if len(without) == 1 else 'have'} no held-out test split")
    what = {"test_accuracy": "held-out test accuracy",
            "test_pearson": "held-out test Pearson correlation"}.get(
        metric, f"generalized accuracy (the sampled clients' local test splits; {lacking})")
    if chosen is None:
        head = "No run has evaluated yet: no accuracy to compare."
    elif target is None:
        head = (f"Target: {what} ≥ {chosen:.3f}, the lowest best among these runs "
                "(`--target` sets it).")
    else:
        head = f"Target: {what} ≥ {chosen:.3f}."
    if any(s["one_class"] for s in summaries):
        head += (" (one class): the run's final model predicts one class for every test "
                 "example, so its test accuracy is the majority-class rate.")
    note = ("Accuracies are fractions; wall s is the run's elapsed time; client peak MiB is one "
            "client step of the method as measured by `spry bench`" if bench is not None else
            "Accuracies are fractions; wall s is the run's elapsed time")
    sets = any(s["final_micro_f1"] is not None for s in summaries)
    tags = any(s["final_entity_f1"] is not None for s in summaries)
    extra = [*(SCORE_COLUMNS if any(s["final_pearson"] is not None for s in summaries) else ()),
             *(SET_COLUMNS if sets else ()), *(ENTITY_COLUMNS if tags else ())]
    if sets:
        note += ("; a multi-label run's test accuracy is its exact-match rate (the predicted "
                 "set is the gold set)")
    if tags:
        note += ("; a tagging run's test accuracy is over words, where predicting `O` "
                 "everywhere already scores high: its entity F1 is the score that counts")
    return f"{head} {note}.\n\n{markdown_table(summaries, extra)}\n"
