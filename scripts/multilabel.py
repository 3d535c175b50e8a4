"""Does Spry learn a set of labels? task_head=multilabel at equal client steps, through the CLI.

    python scripts/multilabel.py --dry-run        # print the commands, run nothing
    python scripts/multilabel.py --jobs 2         # run what has not finished
    python scripts/multilabel.py --only spry,spry-seed1   # runs by their names
    python scripts/multilabel.py --doc-only       # rewrite the table in docs/multilabel.md

No multi-label task is in $SPRY_DATA_DIR, so one is built from a real one: AG News
"digests", each one news description (half of them) or two joined (the other half), labelled
with the topics they cover (World, Sports, Business, Sci/Tech: one or two labels a text, two
descriptions of one topic giving that one). The 10,000-row training subset gives 6,000
digests to train on; the official test split gives 2,000 held out, so no description is in
both. The files are written as jsonl with a `labels` list to runs/multilabel/data (never into
the repository), and each run reads them as a user's local files:
`spry run dataset=<jsonl> test_file=<jsonl> task_head=multilabel ...`.

Budget for every method: N=100 clients, M=10 a round, 20 rounds × 10 × 8 local steps =
1,600 client steps, Dirichlet α=1.0 over each digest's rarest label, FedAvg server, round 0's
per-label discriminant head and its exact gradient for all (docs/learning.md's head
treatment). Each finished run's metrics.jsonl and config.yaml are copied to
benchmarks/results/multilabel/<name>/ (committed): a run already there is not run again.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "multilabel"
RUNS = ROOT / "runs" / "multilabel"
DATA = RUNS / "data"
DOC = ROOT / "docs" / "multilabel.md"
TOPICS = ("World", "Sports", "Business", "Sci/Tech")
SIZES = {"train": 6000, "test": 2000}

BUDGET = ("num_clients=100", "clients_per_round=10", "rounds=20", "max_steps=8",
          "eval_every=5", "personalization_epochs=0", "batch_size=8", "max_length=128",
          "dirichlet_alpha=1.0", "server_optimizer=fedavg", "server_lr=1.0")
STEPS = "20 × 10 × 8 = 1,600"

# name -> (label, overrides): TinyLoRA at AdamW 1e-2 for every method with adapters, the
# head at 1e-4 (recipe=spry's defaults), estimators without dropout (recipe=spry's).
METHODS = {
    "head": ("head only (round 0's discriminant, exact head gradient)",
             ("method=spry", "peft=head")),
    "spry": ("Spry (recipe=spry defaults)", ("method=spry",)),
    "fedfgd": ("FedFGD, TinyLoRA", ("method=fedfgd",)),
    "fedavg": ("FedAvg (backprop), TinyLoRA", ("method=backprop", "client_lr=1e-2")),
}


SEEDS = (0, 1, 2)
"""Run seeds (the partition, the sampling, the tangents; the digests stay the same): seed
0's runs are named by their method, seeds 1 and 2 run as `<method>-seed<s>`."""


def runs() -> dict[str, tuple[str, int]]:
    """name -> (method, seed), seed 0's runs first."""
    return grid.seeded(METHODS, SEEDS)


def descriptions() -> dict[str, list[tuple[str, str]]]:
    """(text, topic) of AG News: the training subset's and the official test split's."""
    root = Path(os.environ.get("SPRY_DATA_DIR", ROOT.parent / "shared" / "data")) / "ag_news"
    if not root.is_dir():
        sys.exit(f"multilabel.py: {root} is missing; set SPRY_DATA_DIR to the shared data")
    with open(root / "train_subset_10k_description_only.tsv", encoding="utf-8") as f:
        train = [tuple(line.rstrip("\n").rsplit("\t", 1)) for line in f if "\t" in line]
    with open(root / "test.csv", encoding="utf-8", newline="") as f:
        test = [(r[2].replace("\\", " "), TOPICS[int(r[0]) - 1]) for r in csv.reader(f)]
    return {"train": [(t, c) for t, c in train if c in TOPICS], "test": test}


def write_data() -> tuple[Path, Path]:
    """The digests as jsonl files, {"text", "labels"} a line, seeded."""
    DATA.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, pool in descriptions().items():
        rng = random.Random(f"digests-{split}")
        rng.shuffle(pool)
        paths[split] = DATA / f"ag_digests_{split}.jsonl"
        with open(paths[split], "w", encoding="utf-8") as f:
            for _ in range(SIZES[split]):
                parts = [pool.pop() for _ in range(rng.choice((1, 2)))]
                labels = sorted({c for _, c in parts}, key=TOPICS.index)
                f.write(json.dumps({"text": " ".join(t for t, _ in parts),
                                    "labels": labels}) + "\n")
    return paths["train"], paths["test"]


def overrides(name: str, train: Path, test: Path) -> list[str]:
    method, seed = runs()[name]
    return [f"dataset={train}", f"test_file={test}", "task_head=multilabel", *BUDGET,
            *METHODS[method][1], *([f"seed={seed}"] if seed else []), f"output_dir={RUNS}",
            f"run_name={name}"]


def table() -> list[str]:
    lines = ["| method | round 0: exact match / micro-F1 / loss | final: exact match / "
             "micro-F1 / macro-F1 / loss | best exact match | rounds × clients × steps | "
             "client s | curve (round: exact match) |", "|---|---|---|---|---|---|---|"]
    for name, (label, _) in METHODS.items():
        path = RESULTS / name / "metrics.jsonl"
        if not path.is_file():
            lines.append(f"| {label} | not run | | | | | |")
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        tested = [r for r in rows if r.get("test_micro_f1") is not None]
        first, last = tested[0], tested[-1]
        curve = ", ".join(f"{r['round']}: {r['test_accuracy']:.3f}" for r in tested)
        seconds = sum(r.get("client_seconds", 0) for r in rows if r["round"] > 0)
        lines.append(
            f"| {label} | {first['test_accuracy']:.3f} / {first['test_micro_f1']:.3f} / "
            f"{first['test_loss']:.4f} | {last['test_accuracy']:.3f} / "
            f"{last['test_micro_f1']:.3f} / {last['test_macro_f1']:.3f} / "
            f"{last['test_loss']:.4f} | {max(r['test_accuracy'] for r in tested):.3f} | "
            f"{STEPS} | {seconds:.0f} | {curve} |")
    return lines


def final(name: str) -> dict | None:
    """The last evaluated row of a kept run."""
    path = RESULTS / name / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r.get("test_micro_f1") is not None][-1]


def seed_table(key: str = "test_accuracy") -> list[str]:
    """Final held-out `key` per run seed, and Spry's paired difference from each method."""
    def value(name):
        row = final(name)
        return None if row is None else row[key]

    return grid.seed_table({m: label for m, (label, _) in METHODS.items()}, runs(), SEEDS,
                           value)


def write_doc() -> None:
    """The tables between the markers of docs/multilabel.md."""
    grid.write_between(DOC, {"table": table(), "seeds": seed_table(),
                             "seeds-f1": seed_table("test_micro_f1")})


def main(argv: list[str] | None = None) -> int:
    return grid.main(argv, __doc__.splitlines()[0], list(runs()), RUNS, RESULTS, overrides,
                     write_data, write_doc, ('<train.jsonl>', '<test.jsonl>'))


if __name__ == "__main__":
    sys.exit(main())
