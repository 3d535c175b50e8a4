"""What the task grids (scripts/regression.py, scripts/multilabel.py) share: running the
`spry run` commands a few at a time and keeping each finished run's small files, the
paired-by-seed table, and rewriting a doc's table between its markers."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable


def seeded(methods, seeds: tuple[int, ...]) -> dict[str, tuple[str, int]]:
    """name -> (method, seed), seed 0's runs first and named by their method, the others
    `<method>-seed<s>`."""
    return {(m if s == 0 else f"{m}-seed{s}"): (m, s) for s in seeds for m in methods}


def run_all(names: list[str], jobs: int, args_of: Callable[[str], list[str]], runs: Path,
            results: Path, on_done: Callable[[], None]) -> None:
    """`spry run --quiet <args_of(name)>` for each name, `jobs` at a time, one torch thread
    each; a run that exits 0 has its config.yaml and metrics.jsonl copied to
    results/<name>/ (what the grid commits) and `on_done` called (the doc rewritten)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    queue, running = list(names), {}
    while queue or running:
        while queue and len(running) < jobs:
            name = queue.pop(0)
            shutil.rmtree(runs / name, ignore_errors=True)
            args = args_of(name)
            print(f"start {name}: spry run {' '.join(args)}", flush=True)
            running[name] = subprocess.Popen(["spry", "run", "--quiet", *args], env=env,
                                             stdout=open(runs / f"{name}.log", "w"),
                                             stderr=subprocess.STDOUT)
        time.sleep(5)
        for name, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode == 0:
                (results / name).mkdir(parents=True, exist_ok=True)
                for f in ("config.yaml", "metrics.jsonl"):
                    shutil.copy(runs / name / f, results / name / f)
                on_done()
            print(f"{'done' if proc.returncode == 0 else 'FAILED'} {name}", flush=True)


def mean_sd(values: list[float], signed: bool = False) -> str:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return f"{mean:+.3f} ± {sd:.3f}" if signed else f"{mean:.3f} ± {sd:.3f}"


def seed_table(labels: dict[str, str], runs: dict[str, tuple[str, int]], seeds: tuple[int, ...],
               value: Callable[[str], float | None], reference: str = "spry") -> list[str]:
    """Each method's final `value` per run seed, their mean ± sd, and the `reference`
    method's difference from it, paired by seed."""
    names = {m: [n for n, (m2, _) in runs.items() if m2 == m] for m in labels}
    lines = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd | "
             "Spry − it, paired by seed |", "|---|" + "---|" * len(seeds) + "---|---|"]
    ours = [value(n) for n in names[reference]]
    for method, label in labels.items():
        values = [value(n) for n in names[method]]
        cells = ["not run" if v is None else f"{v:.3f}" for v in values]
        done = [v for v in values if v is not None]
        paired = [a - b for a, b in zip(ours, values) if a is not None and b is not None]
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + (mean_sd(done) if len(done) > 1 else "") + " | "
                     + ("" if method == reference or len(paired) < 2
                        else mean_sd(paired, signed=True)) + " |")
    return lines


def write_between(doc: Path, tables: dict[str, list[str]]) -> None:
    """Each table's lines between `<!-- name:begin -->` and `<!-- name:end -->` of `doc`
    (a marker the doc lacks is passed over); the rest of the doc kept."""
    text = doc.read_text()
    for marker, lines in tables.items():
        begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
        if begin not in text:
            continue
        head, rest = text.split(begin)
        text = head + begin + "\n" + "\n".join(lines) + "\n" + end + rest.split(end)[1]
    doc.write_text(text)


def main(argv: list[str] | None, description: str, names: list[str], runs: Path,
         results: Path, overrides: Callable[[str, Path, Path], list[str]],
         write_data: Callable[[], tuple[Path, Path]], write_doc: Callable[[], None],
         shown: tuple[str, str]) -> int:
    """A grid script's command line: --dry-run prints the runs not yet kept, --doc-only
    rewrites the doc, else the data is written and those runs run (--only picks some by
    name; `shown` stands in for the data files in a dry run's commands)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", help="run only these runs, comma-separated (a method, or "
                        "<method>-seed<s>)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--doc-only", action="store_true")
    args = parser.parse_args(argv)
    if args.doc_only:
        write_doc()
        return 0
    only = None if args.only is None else args.only.split(",")
    todo = [n for n in names if (only is None or n in only)
            and not (results / n / "metrics.jsonl").is_file()]
    if args.dry_run:
        for name in todo:
            print(f"{name}: spry run {' '.join(overrides(name, *map(Path, shown)))}")
        return 0
    train, test = write_data()
    run_all(todo, args.jobs, lambda name: overrides(name, train, test), runs, results,
            write_doc)
    return 0
