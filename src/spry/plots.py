"""Figures from run directories and `spry bench` reports, as PNG and SVG.

    spry plot runs/sst2-spry runs/sst2-fedmezo --out plots/sst2
    spry plot --bench benchmarks/results/minilm.json --out plots/minilm

Reads only metrics.jsonl (metrics are data), so it also draws a run that is still going.
Curves: accuracy against server round, wall time and uploaded bytes, one colour per run
(solid: held-out test accuracy, where the data has a test split; dotted: generalized, on
the sampled clients' local test splits; dashed: personalized, where the run measured it).
Memory: per bench mode, the peak memory of one client step above the loaded model, and
its median step time.
"""

from __future__ import annotations

from pathlib import Path

from spry.compare import Run, load_run, read_bench

FORMATS = ("png", "svg")

# The accuracies drawn, their line styles and legend names. The held-out test split leads
# (solid) where a run has one: at low α the clients' local test splits hold a few examples
# each, so the generalized accuracy mostly says which clients were sampled.
METRICS = (("test_accuracy", "-", "held-out test"),
           ("generalized_accuracy", ":", "generalized (sampled clients' test splits)"),
           ("personalized_accuracy", "--", "personalized"),
           ("test_pearson", "-.", "held-out Pearson"))  # task_head=regression: no accuracy
# What the x axis of each curve panel reads from a metrics row.
X_AXES = (("round", "server round", 1.0),
          ("elapsed_seconds", "wall time (min)", 1 / 60),
          ("bytes_up_total", "uploaded (MB, all clients)", 1e-6))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    return Figure(figsize=(width, height), layout="constrained")


def _labels(runs: list[Run]) -> list[str]:
    """Directory names; the parent too where two runs share a name."""
    names = [r.name for r in runs]
    return [f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name
            for r in runs]


def curves_figure(runs: list[Run]):
    """Accuracy against round, wall time and bytes; beneath it the held-out loss, where a
    run recorded it (it moves before accuracy does)."""
    losses = any(run.evaluated("test_loss") for run in runs)
    fig = _figure(4.2 * len(X_AXES), 6.4 if losses else 3.4)
    grid = fig.subplots(2 if losses else 1, len(X_AXES), sharey="row", squeeze=False)
    axes = grid[0]
    styles = {}
    for run, label, color in zip(runs, _labels(runs), _colors(len(runs))):
        tested = run.evaluated("test_loss")
        if tested:  # a run without the loss draws no line in the loss row
            for ax, (key, _, scale) in zip(grid[1], X_AXES):
                rows = [r for r in tested if r.get(key) is not None]
                ax.plot([r[key] * scale for r in rows], [r["test_loss"] for r in rows], "-",
                        color=color, marker="o", markersize=2.5, linewidth=1.4)
        for ax, (key, _, scale) in zip(axes, X_AXES):
            labelled = False
            for metric, style, name in METRICS:
                rows = [r for r in run.evaluated(metric) if r.get(key) is not None]
                if rows:
                    styles[name] = style
                    ax.plot([r[key] * scale for r in rows], [r[metric] for r in rows], style,
                            color=color, marker="o", markersize=2.5, linewidth=1.4,
                            label=None if labelled else label)
                    labelled = True
    for ax, (_, xlabel, _) in zip(grid[-1], X_AXES):
        ax.set_xlabel(xlabel)
    for ax in grid.flat:
        ax.grid(alpha=0.3)
    grid[-1][0].xaxis.get_major_locator().set_params(integer=True)
    if losses:
        grid[1][0].set_ylabel("held-out test loss")
    axes[0].set_ylabel("held-out Pearson r" if set(styles) == {"held-out Pearson"} else
                       f"{next(iter(styles))} accuracy" if len(styles) == 1 else "accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    if len(styles) > 1:  # say which line style is which accuracy
        from matplotlib.lines import Line2D

        for name, style in styles.items():
            handles.append(Line2D([], [], linestyle=style, color="0.3"))
            labels.append(name)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
                   fontsize="small", frameon=False)
    return fig


def memory_figure(reports: dict[str, dict]):
    """Bars per bench mode: peak MiB above the loaded model, and median step seconds.
    `reports`: label -> a `spry bench` JSON report; one bar series per (report, allocator)."""
    series: dict[str, dict[str, dict]] = {}
    modes: list[str] = []
    for label, report in reports.items():
        for r in report.get("results", []):
            if r.get("error") is not None or not r.get("available", True):
                continue
            name = r["allocator"] if len(reports) == 1 else f"{label} {r['allocator']}"
            series.setdefault(name, {})[r["mode"]] = r
            if r["mode"] not in modes:
                modes.append(r["mode"])
    fig = _figure(max(8.0, 1.3 * len(modes)), 3.4)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(len(series), 1)
    for i, ((name, by_mode), color) in enumerate(zip(series.items(), _colors(len(series)))):
        xs = [modes.index(m) + (i - (len(series) - 1) / 2) * width for m in by_mode]
        for ax, key in zip(axes, ("peak_mib", "median_step_seconds")):
            bars = ax.bar(xs, [r[key] for r in by_mode.values()], width, color=color, label=name)
            ax.bar_label(bars, fmt="%.0f" if key == "peak_mib" else "%.2f", fontsize=6)
    for ax, ylabel in zip(axes, ("peak MiB of a step, above the model", "median step s")):
        ax.set_xticks(range(len(modes)), modes, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        axes[0].legend(fontsize="small", frameon=False)
    return fig


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def save(fig, stem: str | Path, formats=FORMATS) -> list[Path]:
    """Write `stem`.png/.svg; no timestamps inside, so the same data gives the same files."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    from matplotlib import rc_context

    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        with rc_context({"svg.hashsalt": "spry"}):  # else SVG ids are random
            fig.savefig(path, dpi=110, metadata=metadata)
        paths.append(path)
    return paths


def plot(run_dirs: list[str | Path], out: str | Path, bench: list[str | Path] = (),
         formats=FORMATS) -> list[Path]:
    """Draw the curves of `run_dirs` to `out`.png/.svg and, with bench reports,
    their memory bars to `out`_memory.png/.svg; return the files written."""
    written = []
    if run_dirs:
        written += save(curves_figure([load_run(d) for d in run_dirs]), out, formats)
    if bench:
        reports = {Path(b).stem: read_bench(b) for b in bench}
        out = Path(out)
        written += save(memory_figure(reports), out.with_name(out.name + "_memory"), formats)
    return written
