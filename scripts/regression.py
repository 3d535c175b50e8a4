"""Does Spry learn a score? task_head=regression at equal client steps, through the CLI.

    python scripts/regression.py --dry-run        # print the commands, run nothing
    python scripts/regression.py --jobs 2         # run what has not finished
    python scripts/regression.py --only spry,spry-seed1  # runs by their names
    python scripts/regression.py --doc-only       # rewrite the table in docs/regression.md

No real-valued task is in $SPRY_DATA_DIR, so the score is built from a real one: SNLI's
premise/hypothesis pairs scored by how far the hypothesis follows (entailment 1.0, neutral
0.5, contradiction 0.0; an ordinal "entailment score"). dev.jsonl (9,842 pairs) trains,
test.tsv (9,824) is the held-out split (a seeded 2,000 of it). The two csv files are
written to runs/regression/data (never into the repository), and each run reads them as a
user's local files: `spry run dataset=<csv> test_file=<csv> task_head=regression ...`.

Budget for every method: N=100 clients, M=10 a round, 20 rounds × 10 × 8 local steps =
1,600 client steps, Dirichlet α=1.0 over the score's quantile bins, FedAvg server, the
least-squares head of round 0 and its exact gradient for all (the main table's head
treatment of docs/learning.md). Each finished run's metrics.jsonl and config.yaml are
copied to benchmarks/results/regression/<name>/ (committed): a run already there is not
run again.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "regression"
RIDGE_05 = RESULTS / "ridge0.5"
"""The runs made before round 0's ridge was chosen by generalized cross-validation (λ = 0.5
then), kept for their tables."""
RUNS = ROOT / "runs" / "regression"
DATA = RUNS / "data"
DOC = ROOT / "docs" / "regression.md"
SCORE = {"entailment": 1.0, "neutral": 0.5, "contradiction": 0.0}
SNLI_TSV = {"0": "entailment", "1": "neutral", "2": "contradiction"}

BUDGET = ("num_clients=100", "clients_per_round=10", "rounds=20", "max_steps=8",
          "eval_every=5", "personalization_epochs=0", "batch_size=8", "max_length=64",
          "dirichlet_alpha=1.0", "max_test_examples=2000", "server_optimizer=fedavg",
          "server_lr=1.0")
STEPS = "20 × 10 × 8 = 1,600"

# name -> (label, overrides): TinyLoRA at AdamW 1e-2 for every method with adapters, the
# head at 1e-4 (recipe=spry's defaults), estimators without dropout (recipe=spry's).
METHODS = {
    "head": ("head only (least-squares round 0, exact head gradient)",
             ("method=spry", "peft=head")),
    "spry": ("Spry (recipe=spry defaults)", ("method=spry",)),
    "fedfgd": ("FedFGD, TinyLoRA", ("method=fedfgd",)),
    "fedavg": ("FedAvg (backprop), TinyLoRA", ("method=backprop", "client_lr=1e-2")),
}


SEEDS = (0, 1, 2)
"""Run seeds (the partition, the sampling, the tangents): seed 0 is the table's run, named
by its method; seeds 1 and 2 run as `<method>-seed<s>` for the table of seeds."""


def runs() -> dict[str, tuple[str, int]]:
    """name -> (method, seed), seed 0's runs first."""
    return grid.seeded(METHODS, SEEDS)


def write_data() -> tuple[Path, Path]:
    """SNLI as scores: dev.jsonl -> train.csv, test.tsv -> test.csv (rows without a gold
    label, `-` in SNLI, are left out)."""
    root = Path(os.environ.get("SPRY_DATA_DIR", ROOT.parent / "shared" / "data")) / "snli"
    if not root.is_dir():
        sys.exit(f"regression.py: {root} is missing; set SPRY_DATA_DIR to the shared data")
    DATA.mkdir(parents=True, exist_ok=True)
    train, test = DATA / "snli_score_train.csv", DATA / "snli_score_test.csv"
    dev = [json.loads(line) for line in open(root / "dev.jsonl", encoding="utf-8")]
    with open(root / "test.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    held = [dict(r, label=SNLI_TSV.get(r["label"], r["label"])) for r in rows]
    for path, source in ((train, dev), (test, held)):
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["premise", "hypothesis", "score"])
            for r in source:
                if r["label"] in SCORE:
                    w.writerow([r["premise"], r["hypothesis"], SCORE[r["label"]]])
    return train, test


def overrides(name: str, train: Path, test: Path) -> list[str]:
    method, seed = runs()[name]
    return [f"dataset={train}", f"test_file={test}", "task_head=regression", *BUDGET,
            *METHODS[method][1], *([f"seed={seed}"] if seed else []), f"output_dir={RUNS}",
            f"run_name={name}"]


def final(name: str, root: Path | None = None) -> dict | None:
    """The last evaluated row of a kept run (under RESULTS, or `root`)."""
    path = (root or RESULTS) / name / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r.get("test_pearson") is not None][-1]


def seed_table(root: Path | None = None) -> list[str]:
    """Final held-out Pearson per run seed, and Spry's paired difference from each method."""
    def pearson(name):
        row = final(name, root)
        return None if row is None else row["test_pearson"]

    return grid.seed_table({m: label for m, (label, _) in METHODS.items()}, runs(), SEEDS,
                           pearson)


def table(root: Path | None = None) -> list[str]:
    lines = ["| method | round 0: Pearson / RMSE | final: Pearson / Spearman / RMSE | best "
             "Pearson | rounds × clients × steps | client s | curve (round: Pearson) |",
             "|---|---|---|---|---|---|---|"]
    for name, (label, _) in METHODS.items():
        path = (root or RESULTS) / name / "metrics.jsonl"
        if not path.is_file():
            lines.append(f"| {label} | not run | | | | | |")
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        tested = [r for r in rows if r.get("test_pearson") is not None]
        first, last = tested[0], tested[-1]
        curve = ", ".join(f"{r['round']}: {r['test_pearson']:.3f}" for r in tested)
        seconds = sum(r.get("client_seconds", 0) for r in rows if r["round"] > 0)
        lines.append(
            f"| {label} | {first['test_pearson']:.3f} / {first['test_rmse']:.4f} | "
            f"{last['test_pearson']:.3f} / {last['test_spearman']:.3f} / "
            f"{last['test_rmse']:.4f} | {max(r['test_pearson'] for r in tested):.3f} | "
            f"{STEPS} | {seconds:.0f} | {curve} |")
    return lines


def write_doc() -> None:
    """The tables between the markers of docs/regression.md."""
    grid.write_between(DOC, {"table": table(), "seeds": seed_table(),
                             "ridge0.5-table": table(RIDGE_05),
                             "ridge0.5-seeds": seed_table(RIDGE_05)})


def main(argv: list[str] | None = None) -> int:
    return grid.main(argv, __doc__.splitlines()[0], list(runs()), RUNS, RESULTS, overrides,
                     write_data, write_doc, ('<train.csv>', '<test.csv>'))


if __name__ == "__main__":
    sys.exit(main())
