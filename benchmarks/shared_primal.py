"""K per-example tangents: K separate passes against one primal pass shared by the K.

    python benchmarks/shared_primal.py                      # MiniLM, batch 8, length 128, K=4,10
    python benchmarks/shared_primal.py --ks 10 model=random:opt-350m

One process, one thread, the same batch and tangents; inference, the K passes one after
another (`sequential_example_forward_gradient`, what K>1 cost before) and the K passes
batched over one primal pass (`batched_example_forward_gradient`, what the client runs
now), timed in turn (A B C A B C ...) as CPU seconds a step, so a noisy machine slows
all three alike. Prints each as a ratio to inference and the largest difference between
the two estimates; --out writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from spry.bench.child import build_model, random_batch
from spry.config import Config
from spry.estimators.example_tangents import (batched_example_forward_gradient,
                                              sequential_example_forward_gradient)
from spry.models import list_units
from spry.tasks.classifier import classification_loss


def measure(overrides: list[str], ks: list[int], repeats: int) -> dict:
    torch.set_num_threads(1)
    cfg = Config.from_yaml(None, ["batch_size=8", "max_length=128", *overrides])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    named = dict(model.named_parameters())
    with torch.no_grad():  # B = 0 would leave every A factor without a gradient
        for n, p in named.items():
            if "lora_B" in n:
                p.normal_(std=0.01)
    params = {p: named[p].detach() for u in list_units(model) if u.name != "head"
              for p in u.params}
    batch = random_batch(cfg, model.config.vocab_size)
    loss_fn = classification_loss(model, batch, per_example=True)
    out = {"overrides": overrides, "batch_size": cfg.batch_size, "max_length": cfg.max_length,
           "trained_params": sum(p.numel() for p in params.values()), "ks": {}}

    def timed(fn) -> float:
        start = time.process_time()
        fn()
        return time.process_time() - start

    def inference():
        with torch.no_grad():
            loss_fn(params)

    inference()  # warm up
    for k in ks:
        seeds = list(range(k))
        seq = lambda: sequential_example_forward_gradient(loss_fn, params, seeds)  # noqa: E731
        bat = lambda: batched_example_forward_gradient(loss_fn, params, seeds,  # noqa: E731
                                                       cfg.batch_size)
        model.eval()  # dropout off: both see one loss, so their estimates must agree
        a, b = seq(), bat()
        model.train()  # timed as a client runs: dropout on
        diff = max(float((a.grads[n] - b.grads[n]).abs().max() / a.grads[n].abs().max())
                   for n in params)
        times: dict[str, list[float]] = {"inference": [], "sequential": [], "batched": []}
        for _ in range(repeats):
            times["inference"].append(timed(inference))
            times["sequential"].append(timed(seq))
            times["batched"].append(timed(bat))
        med = {name: statistics.median(t) for name, t in times.items()}
        out["ks"][k] = {"seconds": med, "sequential_x": med["sequential"] / med["inference"],
                        "batched_x": med["batched"] / med["inference"],
                        "speedup": med["sequential"] / med["batched"],
                        "max_relative_difference": diff}
        print(f"K={k}: inference {med['inference']:.3f} s, K passes "
              f"{out['ks'][k]['sequential_x']:.1f}x, one shared primal "
              f"{out['ks'][k]['batched_x']:.1f}x inference ({out['ks'][k]['speedup']:.2f}x "
              f"faster); estimates differ by {diff:.1e} (relative)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="4,10", help="comma-separated K values")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here")
    p.add_argument("overrides", nargs="*", help="spry settings, e.g. model=random:opt-350m")
    a = p.parse_args(argv)
    result = measure(a.overrides, [int(k) for k in a.ks.split(",")], a.repeats)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
