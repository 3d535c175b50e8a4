"""Spry against FedAvg and FedMeZO on MultiRC and SQuAD v2, with MiniLM and SmolLM2-135M;
writes docs/decoders.md.

    spry models fetch smollm2-135m             # once: the decoder, into the model cache
    python scripts/decoders.py --dry-run       # print every command, run nothing
    python scripts/decoders.py --jobs 2        # run what has not finished
    python scripts/decoders.py --doc-only      # rewrite docs/decoders.md from what ran

Each task/model pair has its config (configs/multirc*.yaml, configs/squad_v2*.yaml: the
encoder with a classification or span head, the decoder as a verbalizer or generating the
answer); the three methods run it with the same clients, rounds and held-out set. Client
learning rates: AdamW 1e-2 on the forward-gradient and SPSA estimates (the configs'),
1e-3 for backprop (the usual LoRA rate; docs/baselines.md sweeps both on SST-2/AG News).
Run directories and logs go to runs/decoders (resumable, as scripts/make_results.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# GENERATED is not used here: the tests read it from this module.
from make_results import (GENERATED, ROOT, Budget, Experiment, cell, command,  # noqa: E402, F401
                          finished, generated_head, machine, run_all)

from spry.compare import load_run  # noqa: E402

# name -> (config, task, model)
SETTINGS = {
    "multirc-minilm": ("configs/multirc.yaml", "MultiRC", "all-MiniLM-L6-v2, classifier head"),
    "multirc-smollm2": ("configs/multirc_smollm2.yaml", "MultiRC", "SmolLM2-135M, verbalizer"),
    "squad_v2-minilm": ("configs/squad_v2.yaml", "SQuAD v2", "all-MiniLM-L6-v2, span head"),
    "squad_v2-smollm2": ("configs/squad_v2_smollm2.yaml", "SQuAD v2", "SmolLM2-135M, generation"),
}
METHODS = {
    "spry": (),
    "fedavg": ("method=backprop", "server_optimizer=fedavg", "client_lr=1e-3"),
    "fedmezo": ("method=fedmezo",),
}
# Rounds come from each config; the wall-time cap only guards against a run that stalls.
BUDGET_SECONDS = 1500.0


def declared() -> list[Experiment]:
    return [Experiment(f"{setting}-{method}", config, overrides)
            for setting, (config, _, _) in SETTINGS.items()
            for method, overrides in METHODS.items()]


def budget_for(e: Experiment) -> Budget:
    import yaml

    rounds = yaml.safe_load((ROOT / e.config).read_text())["rounds"]
    return Budget(rounds, BUDGET_SECONDS)


def write_doc(doc: Path, results: Path) -> None:
    """The doc: its kept discussion and note (make_results.generated_head), then the tables."""
    *head, written = generated_head(doc, "Decoders and question answering", "decoders.py",
                                    results)
    lines = [*head,
             f"{written}. Machine: {machine()}. Test metrics are on the held-out split after "
             "the last round: accuracy (MultiRC, over answer options) or exact match "
             "(SQuAD v2), and F1a (MultiRC) or F1 (SQuAD v2), official normalisation; gen. "
             "acc is the global model on the sampled clients' own test splits.", "",
             "| task | model | method | test acc / EM | F1a / F1 | gen. acc | train loss "
             "(first → last round) | rounds | steps | wall s | client s per step | bytes up | "
             "command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for setting, (config, task, model) in SETTINGS.items():
        for method in METHODS:
            name = f"{setting}-{method}"
            path = ROOT / results / name
            if not (path / "metrics.jsonl").is_file():
                lines.append(f"| {task} | {model} | {method} | not run | | | | | | | | | |")
                continue
            run = load_run(path)
            rows = run.rows
            tested = run.evaluated("test_accuracy")
            last = tested[-1] if tested else {}
            f1 = last.get("test_f1", last.get("test_f1a"))
            gen = run.evaluated("generalized_accuracy")
            steps = sum(r["steps"] for r in rows)
            client_s = sum(r["client_seconds"] for r in rows)
            cmd = ROOT / results / f"{name}.command"
            shown = method if run.finished else f"{method} (running or stopped)"
            lines.append(
                f"| {task} | {model} | {shown} | {cell(last.get('test_accuracy'))} | {cell(f1)}"
                f" | {cell(gen[-1]['generalized_accuracy'] if gen else None)}"
                f" | {cell(rows[0]['train_loss'])} → {cell(rows[-1]['train_loss'])}"
                f" | {rows[-1]['round']} | {steps} | {cell(rows[-1]['elapsed_seconds'], ',.0f')}"
                f" | {cell(client_s / steps if steps else None, '.2f')}"
                f" | {rows[-1]['bytes_up_total']:,}"
                f" | `{cmd.read_text().strip() if cmd.is_file() else ''}` |")
    doc.write_text("\n".join(lines) + "\n")
    print(f"wrote {doc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the commands to run")
    p.add_argument("--doc-only", action="store_true", help="run nothing; rewrite the doc")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    p.add_argument("--only", metavar="TEXT", help="run only experiments whose name has TEXT")
    p.add_argument("--results", type=Path, default=Path("runs/decoders"))
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "decoders.md")
    args = p.parse_args(argv)
    todo = [e for e in declared() if not finished(ROOT / args.results / e.name)
            and (args.only is None or args.only in e.name)]
    if args.dry_run:
        for e in todo:
            print(command(e, args.results, budget_for(e)))
        return 0
    failed = []
    if not args.doc_only:
        # one budget per config (its rounds): group the runs by it
        groups: dict[Budget, list[Experiment]] = {}
        for e in todo:
            groups.setdefault(budget_for(e), []).append(e)
        for budget, group in groups.items():
            failed += run_all(group, args.results, budget, args.jobs)
    write_doc(args.doc, args.results)
    if failed:
        print(f"failed (see their .log in {args.results}): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
