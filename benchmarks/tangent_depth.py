"""Where the tangent starts decides the cost: a Spry client step against the depth of the
client's lowest unit (issue 20).

Below a client's lowest perturbed layer every tangent is zero, and the lean forward-AD
rules (spry.estimators.lean_jvp) skip it, so the step costs one forward plus a tangent
pass over the layers from the lowest unit up. This script times, in one process and
interleaved (a noisy machine hits every depth alike), one K=1 forward-gradient step
(recipe=spry: per-example tangents on the LoRA units, the head's exact gradient) whose
units are the LoRA units of layers >= L, for every L, against inference on the same batch.

    python benchmarks/tangent_depth.py [--model all-minilm-l6-v2] [--repeat 7] [--out FILE]

Prints a Markdown table of CPU-time ratios to inference; `--out` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import torch

from spry.client import exact_head, step_estimate
from spry.config import Config
from spry.methods import make_estimator
from spry.models import list_units, load_tokenizer
from spry.seeds import seeded_global_rng
from spry.tasks.heads import load_model


def layer_of(unit: str) -> int | None:
    """The transformer layer a unit sits in (`...layer.3...` / `...layers.3...`)."""
    found = re.search(r"\.layers?\.(\d+)\.", unit + ".")
    return int(found.group(1)) if found else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = Config(model=args.model, lora_dropout=0.0)
    tok = load_tokenizer(cfg)
    with seeded_global_rng(0):
        model = load_model(cfg, 2, tok.pad_token_id)
    model.eval()
    batch = dict(tok(["word " * args.max_length] * args.batch_size, padding="max_length",
                     truncation=True, max_length=args.max_length, return_tensors="pt"))
    batch["labels"] = torch.arange(args.batch_size) % 2
    named = dict(model.named_parameters())
    units = list_units(model)
    depths = sorted({d for u in units if (d := layer_of(u.name)) is not None})
    head = [u for u in units if layer_of(u.name) is None]

    def step_for(lowest: int):
        names = [n for u in units if (d := layer_of(u.name)) is not None and d >= lowest
                 for n in u.params] + [n for u in head for n in u.params]
        params = {n: named[n] for n in names}
        exact = exact_head(model, cfg, names)
        estimator = make_estimator(cfg)
        return lambda: step_estimate(model, batch, params, exact, cfg, estimator, [0])

    def inference():
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k != "labels"})

    runs = {"inference": inference, **{f"lowest unit in layer {d}": step_for(d) for d in depths}}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, fn in runs.items():
        fn()  # warm-up
    for _ in range(args.repeat):
        for name, fn in runs.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    base = statistics.median(times["inference"])
    rows = [{"run": name, "cpu_seconds": statistics.median(t),
             "x_inference": statistics.median(t) / base} for name, t in times.items()]
    print(f"{args.model}, batch {args.batch_size}, length {args.max_length}, one thread, "
          f"median of {args.repeat} CPU times (interleaved)\n")
    print("| client's units | CPU s | x inference |\n|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['cpu_seconds']:.3f} | {r['x_inference']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
