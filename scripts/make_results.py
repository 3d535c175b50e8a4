"""Run the declared experiments into a results folder, then write docs/RESULTS.md from them.

    python scripts/make_results.py --dry-run             # print every command, run nothing
    python scripts/make_results.py --only 'sst2-a0.1-*'  # run the matching experiments
    python scripts/make_results.py                       # run all that have not finished
    python scripts/make_results.py --doc-only            # rewrite RESULTS.md from what ran

Each experiment is one `spry run` command: a config from configs/ plus key=value
overrides, with the same budget for all (`--rounds` and the CPU sizing in CPU_BUDGET;
`--max-wall-seconds` is a guard). Resumable: an experiment whose run directory
holds trainable.safetensors (its run loop ended) is skipped; an unfinished one is started
again from scratch. RESULTS.md is drawn only from the runs' metrics.jsonl (through
spry.compare), and every row carries the command that reproduces it; an experiment that
has not run is listed as such; each table with a run also gets its accuracy curves
(`spry plot`, PNG beside the doc in img/results/). The whole grid is 93 runs: at the
default budget under two hours on a 2-core CPU with --jobs 2. The data sets come from
$SPRY_DATA_DIR (../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spry.compare import auto_target, load_run, markdown_table, read_bench, summarize

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Budget:
    """What every run gets: at most `rounds` rounds and `seconds` of wall time; `extra`
    overrides go on every command (`--set`, e.g. max_train_examples=2000 for a quick grid)."""
    rounds: int
    seconds: float
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    name: str
    """The run directory's name (run_name)."""
    config: str | None
    overrides: tuple[str, ...] = ()

    def args(self, results: Path, budget: Budget) -> list[str]:
        """`spry` arguments; later overrides win: the budget's extras are defaults for every
        run, the experiment's own settings (its method, rate, ablated value) override them,
        and the round budget and the run's place come last."""
        config = ["--config", self.config] if self.config else []
        return ["run", "--quiet", *config, *budget.extra, *self.overrides,
                f"rounds={budget.rounds}", f"max_wall_seconds={budget.seconds:g}",
                f"output_dir={results}", f"run_name={self.name}"]


@dataclass(frozen=True)
class Table:
    title: str
    note: str
    names: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    """run name -> what this table calls it (the ablation's setting)."""


DATASETS = {"sst2": "SST-2", "ag_news": "AG News", "snli": "SNLI", "mnli": "MNLI",
            "yahoo": "Yahoo Answers (2-topic subset)"}
ALPHAS = (0.1, 1.0)
# The paper's baselines (Panchal et al. 2024, Table 1), as settings of `spry run`. Each
# method's client learning rate comes from the sweep in docs/baselines.md (SST-2 and AG
# News, three rates each): the rate best on both, or the sweep's middle one where they
# disagree.
# BAFFLE at K=5 and FwdLLM at 2 perturbations a step, as there (the reasons are in
# scripts/baselines.py: at K=1 BAFFLE is FedMeZO's estimate; FwdLLM's 10 cost ~30 min a run).
METHODS = {
    "spry": ("client_lr=0.003",),
    "fedfgd": ("method=fedfgd", "client_lr=0.01"),
    "fedavg": ("method=backprop", "server_optimizer=fedavg", "client_lr=0.003"),
    "fedyogi": ("method=backprop", "server_optimizer=fedyogi", "client_lr=0.001"),
    "fedsgd": ("method=fedsgd", "client_optimizer=sgd", "server_optimizer=fedavg",
               "client_lr=0.3"),
    "fedmezo": ("method=fedmezo", "client_lr=0.01"),
    "baffle": ("method=baffle", "tangents=5", "client_lr=0.003"),
    "fwdllm": ("method=fwdllm", "fwdllm_max_perturbations=2", "client_lr=0.01"),
}
# Ablations on SST-2 with α=0.1 (the paper's Sec. 5.3 and App. E that fit on a CPU):
# setting -> (run name suffix, overrides on top of configs/sst2.yaml); the first setting
# of each is the main run.
ABLATION_BASE = "sst2-a0.1-spry"
ABLATIONS = {
    "K (perturbations per step)": {"K=1": ("", ()), "K=3": ("k3", ("tangents=3",)),
                                   "K=10": ("k10", ("tangents=10",))},
    # every M named: the budget may set clients_per_round for the main run
    "clients per round M": {"M=5": ("m5", ("clients_per_round=5",)),
                            "M=10": ("m10", ("clients_per_round=10",)),
                            "M=20": ("m20", ("clients_per_round=20",))},
    "PEFT method": {"LoRA": ("", ()), "IA3": ("ia3", ("peft=ia3",)),
                    "BitFit": ("bitfit", ("peft=bitfit",))},
    "communication": {"per-epoch, FedYogi": ("", ()),
                      "per-epoch, FedAvg": ("fedavg", ("server_optimizer=fedavg",)),
                      # per_iteration clients hold no model of their own to score
                      "per-iteration": ("per-iteration", ("communication=per_iteration",
                                                          "server_optimizer=fedavg",
                                                          "personalization=global"))},
    "LoRA r and alpha": {"r=1, α=1": ("", ()), "r=4, α=1": ("r4", ("lora_r=4",)),
                         "r=16, α=1": ("r16", ("lora_r=16",)),
                         "r=1, α=8": ("alpha8", ("lora_alpha=8",)),
                         "r=16, α=16": ("r16-alpha16", ("lora_r=16", "lora_alpha=16"))},
}


# The default budget, sized so that the whole grid fits in under two hours of a 2-core
# CPU with --jobs 2: 8 rounds of 5 clients x 6 local steps (personalization too, 1 epoch),
# 20,000 training examples dealt over the clients (so each client's test split, which
# every evaluation runs, stays small), accuracy every 4 rounds and on 200 held-out
# examples. The rounds bind; the wall-time cap is a guard against a runaway run. Every
# client trains the head (head=shared): MiniLM's classifier starts random (docs/core.md).
CPU_BUDGET = Budget(rounds=8, seconds=1800, extra=(
    "clients_per_round=5", "max_steps=6", "eval_every=4", "max_train_examples=20000",
    "max_test_examples=200", "head=shared"))


def declared() -> tuple[list[Experiment], list[Table]]:
    """Every experiment (unique by name) and the tables of RESULTS.md that show them."""
    experiments: dict[str, Experiment] = {}
    tables = []
    for ds, title in DATASETS.items():
        for alpha in ALPHAS:
            names = []
            for method, overrides in METHODS.items():
                name = f"{ds}-a{alpha}-{method}"
                experiments[name] = Experiment(name, f"configs/{ds}.yaml",
                                               (f"dirichlet_alpha={alpha}", *overrides))
                names.append(name)
            tables.append(Table(f"{title}, α={alpha}", "Spry against every baseline.",
                                tuple(names), dict(zip(names, METHODS))))
    for topic, settings in ABLATIONS.items():
        labels = {}
        for setting, (suffix, overrides) in settings.items():
            name = f"{ABLATION_BASE}-{suffix}" if suffix else ABLATION_BASE
            experiments.setdefault(name, Experiment(
                name, "configs/sst2.yaml", ("dirichlet_alpha=0.1", *METHODS["spry"], *overrides)))
            labels[name] = setting
        tables.append(Table(f"Ablation: {topic}", "Spry on SST-2, α=0.1.", tuple(labels),
                            labels))
    return list(experiments.values()), tables


def selected(experiments: list[Experiment], pattern: str | None) -> list[Experiment]:
    """`pattern`: a glob on the name (`sst2-a0.1-*`), or a plain substring (`fedmezo`)."""
    if pattern is None:
        return experiments
    return [e for e in experiments if fnmatch.fnmatchcase(e.name, pattern) or pattern in e.name]


def finished(run_dir: Path) -> bool:
    return (run_dir / "trainable.safetensors").is_file()


def command(e: Experiment, results: Path, budget: Budget) -> str:
    return "spry " + shlex.join(e.args(results, budget))


def run_experiment(e: Experiment, results: Path, budget: Budget, threads: int | None = None
                   ) -> int:
    """One `spry run` in its own process, from the repository root (its log beside the run
    directory); `threads`: its OMP_NUM_THREADS (None: the process default)."""
    run_dir = ROOT / results / e.name
    if run_dir.exists():
        print(f"{e.name}: unfinished run directory, starting it again", flush=True)
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    # the command as run: the doc shows it even if later invocations change the budget
    (ROOT / results / f"{e.name}.command").write_text(command(e, results, budget) + "\n")
    started = time.perf_counter()
    with (ROOT / results / f"{e.name}.log").open("w") as log:
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        code = subprocess.call([sys.executable, "-m", "spry.cli",
                                *e.args(results, budget)],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"{e.name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
    return code


def run_all(todo: list[Experiment], results: Path, budget: Budget, jobs: int = 1) -> list[str]:
    """Run `todo` in order, `jobs` at a time, the CPU cores shared out evenly between them
    (runs side by side then compare at equal wall time only if they all get the same
    share). Returns the names of the runs that failed."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one(item: tuple[int, Experiment]) -> str | None:
        i, e = item
        print(f"[{i}/{len(todo)}] {command(e, results, budget)}", flush=True)
        return e.name if run_experiment(e, results, budget, threads) != 0 else None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [name for name in pool.map(one, enumerate(todo, 1)) if name is not None]


GENERATED = "<!-- written by the script from here on; edit above this line -->"


def kept_discussion(doc: Path, title: str) -> str:
    """What a doc holds above the GENERATED line (the people's discussion of the numbers):
    a rewrite replaces only the generated part. A doc without the line was never written
    by a script, so all of it is kept; a new doc gets just its title."""
    if not doc.is_file():
        return f"# {title}\n"
    return doc.read_text().split(GENERATED, 1)[0].rstrip() + "\n"


def generated_head(doc: Path, title: str, script: str, results: Path) -> list[str]:
    """The start of a doc a script writes: the kept discussion, the GENERATED line, and the
    first words of its note, to go on with "; ..." or ". ..."."""
    return [kept_discussion(doc, title), GENERATED, "",
            f"Written by `python scripts/{script}` from the run directories in "
            f"`{_shown(ROOT / results)}`; every row is read from its run's metrics.jsonl"]


def machine() -> str:
    """This machine as the docs name it: cores, architecture, torch."""
    import torch

    return f"{os.cpu_count()} CPU cores ({platform.machine()}, torch {torch.__version__})"


def cell(value, spec: str = ".3f") -> str:
    """A table cell: `value` formatted, or a dash where there is none."""
    return "–" if value is None else format(value, spec)


# ------------------------------------------------------------------------ RESULTS.md ---
def table_markdown(table: Table, experiments: dict[str, Experiment], results: Path,
                   budget: Budget, bench: dict | None, figure: Path | None = None) -> str:
    """The table's section; with `figure` (a PNG stem beside the doc), its curves too."""
    runs = {n: load_run(ROOT / results / n) for n in table.names
            if (ROOT / results / n / "metrics.jsonl").is_file()}
    target = auto_target(list(runs.values()))
    rows = []
    for name in table.names:
        label = table.labels.get(name, name)
        row = summarize(runs[name], target, bench) if name in runs else {}
        row["run"] = label if name in runs else f"{label} (not run)"
        ran = ROOT / results / f"{name}.command"
        row["command"] = (ran.read_text().strip() if name in runs and ran.is_file()
                          else command(experiments[name], results, budget))
        rows.append(row)
    head = f"### {table.title}\n\n{table.note}"
    if target is not None:
        head += f" Target: generalized accuracy ≥ {target:.3f} (the lowest best of these runs)."
    text = head + "\n\n" + markdown_table(rows, [("command", "command", lambda c: f"`{c}`")])
    if figure is not None and runs:
        from spry.plots import curves_figure, save

        save(curves_figure(list(runs.values())), figure, formats=("png",))
        text += f"\n\n![{table.title}](img/results/{figure.name}.png)"
    return text


def _shown(path: Path | None) -> str | None:
    """A path as the doc shows it: relative to the repository where it lies inside."""
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_doc(doc: Path, tables: list[Table], experiments: list[Experiment], results: Path,
              budget: Budget, bench_path: Path | None, plots: bool = True) -> None:
    bench = read_bench(bench_path) if bench_path else None
    by_name = {e.name: e for e in experiments}
    ran = sum((ROOT / results / e.name / "metrics.jsonl").is_file() for e in experiments)
    *head, written = generated_head(doc, "Results", "make_results.py", results)
    parts = [
        *head,
        f"{written} by `spry.compare` and carries the command that reproduces it ({ran} of "
        f"{len(experiments)} experiments have run); nothing here is typed by hand.",
        "",
        f"Budget per run (each row's command says its own): {budget.rounds} rounds, "
        f"with {' '.join(budget.extra) or 'each config’s own sizes'} as defaults that an "
        f"experiment's own settings override, and a wall-time guard of {budget.seconds:g} s "
        "(`max_wall_seconds`: no round starts after it). Every method gets the same rounds "
        f"on one machine: {machine()} (with `--jobs N`, N runs side by side share the "
        "cores evenly). Model: the packaged all-MiniLM-L6-v2 with each config's settings "
        "(configs/*.yaml: 100 "
        "clients, LoRA r=1 on query/value); each method at its client learning rate from "
        "the sweep in docs/baselines.md (the rows' commands).",
        "",
        "Columns: generalized accuracy is the global model on the sampled clients' test "
        "splits, personalized accuracy after local finetuning on each client (both at the "
        "evaluated rounds, every `eval_every`); rounds and seconds to target are the first "
        "evaluated round at which generalized accuracy reached the table's target; bytes are "
        "the totals over all clients; client peak MiB is one client step of the method as "
        f"`spry bench` measured it ({_shown(bench_path) or 'no report given: `--bench`'}), "
        "at the bench's batch and length (empty where the bench has no step of that "
        "method, K, PEFT method and LoRA rank).",
        "",
    ]
    for table in tables:
        slug = re.sub(r"[^a-z0-9]+", "-", table.title.lower().replace("α", "alpha")).strip("-")
        figure = doc.parent / "img" / "results" / slug if plots else None
        parts += [table_markdown(table, by_name, results, budget, bench, figure), ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(parts))
    print(f"wrote {doc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", metavar="PATTERN", help="run only experiments whose name "
                   "matches this glob or contains this text")
    p.add_argument("--dry-run", action="store_true", help="print the commands to run")
    p.add_argument("--doc-only", action="store_true", help="run nothing; rewrite the doc")
    p.add_argument("--results", type=Path, default=Path("runs/results"),
                   help="where the run directories go, relative to the repository root "
                   "(default: runs/results)")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "RESULTS.md")
    p.add_argument("--rounds", type=int, default=CPU_BUDGET.rounds)
    p.add_argument("--max-wall-seconds", type=float, default=CPU_BUDGET.seconds)
    p.add_argument("--jobs", type=int, default=1, help="runs side by side, the cores shared "
                   "out evenly (default 1)")
    p.add_argument("--no-plots", action="store_true", help="tables only, no curve PNGs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a default for every run (repeatable; after the CPU budget's, "
                   "before each experiment's own settings), e.g. max_train_examples=2000")
    p.add_argument("--no-cpu-budget", action="store_true", help="drop the CPU budget's "
                   f"defaults ({' '.join(CPU_BUDGET.extra)}): each config's own sizes")
    bench = ROOT / "benchmarks" / "results" / "minilm.json"
    p.add_argument("--bench", type=Path, default=bench if bench.is_file() else None,
                   help="a `spry bench --out` report for the peak memory column")
    args = p.parse_args(argv)
    results = args.results  # relative: to the repository root, as in the printed commands
    experiments, tables = declared()
    extra = () if args.no_cpu_budget else CPU_BUDGET.extra
    budget = Budget(args.rounds, args.max_wall_seconds, (*extra, *args.set))
    todo = [e for e in selected(experiments, args.only) if not finished(ROOT / results / e.name)]
    if args.dry_run:
        for e in todo:
            print(command(e, results, budget))
        print(f"# {len(todo)} to run, "
              f"{len(selected(experiments, args.only)) - len(todo)} finished", file=sys.stderr)
        return 0
    failed = [] if args.doc_only else run_all(todo, results, budget, args.jobs)
    write_doc(args.doc, tables, experiments, results, budget, args.bench, not args.no_plots)
    if failed:
        print(f"failed (see their .log in {results}): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
