"""A client step with an exact jvp against one whose tangent matmuls run in bfloat16.

    python benchmarks/tangent_dtype.py                           # MiniLM, batch 8, length 128, K=1,10
    python benchmarks/tangent_dtype.py --ks 1 model=random:opt-350m --out x.json

One process, one thread, the same model, batch and seeds: inference, the client's step
(`spry.bench.child`'s: the estimator, the exact head, the optimizer) with
`tangent_dtype` unset (the exact jvp) and with `tangent_dtype=bfloat16`, timed in turn
(A B C A B C ...) as CPU seconds a step, so a noisy machine slows all three alike.
Prints each as a ratio to inference, and how far the bf16 directional derivatives are
from the exact ones (the same seeds, the first step's batch); --out writes the JSON.
Key=value arguments go to the config (default: recipe=spry, so TinyLoRA, no dropout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from spry.bench.child import _client_step, _trained_params, build_model, random_batch
from spry.bench.modes import ModeResult
from spry.config import Config

STEPS = {"inference": None, "exact": None, "bf16": "bfloat16"}
"""What is timed: name -> tangent_dtype (inference runs no tangents)."""


def measure(overrides: list[str], k: int, repeats: int, which: str) -> dict:
    torch.set_num_threads(1)
    base = ["batch_size=8", "max_length=128", *overrides, "method=spry", f"tangents={k}"]
    cfgs = {name: Config.from_yaml(None, [*base, *([f"tangent_dtype={td}"] if td else [])])
            for name, td in STEPS.items()}
    torch.manual_seed(cfgs["exact"].seed)
    model = build_model(cfgs["exact"])
    steps = {}
    for name, cfg in cfgs.items():
        result = ModeResult(mode=name, method="spry", tangents=k, allocator="glibc",
                            device=cfg.device, threads=1)
        params = _trained_params(model, cfg, "none" if name == "inference" else which, result)
        steps[name] = _client_step(model, cfg, params, name == "inference", k)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats + 1):  # the first round warms up
        for name, step in steps.items():
            start = time.process_time()
            step(i)
            if i:
                seconds[name].append(time.process_time() - start)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    return {"tangents": k, "units": which, "cpu_seconds": median,
            "x_inference": {n: median[n] / median["inference"] for n in ("exact", "bf16")},
            "bf16_x_exact": median["bf16"] / median["exact"]}


def derivative_error(overrides: list[str], draws: int) -> dict:
    """|d_bf16 − d_exact| over the mean |d_exact|, for `draws` seeds on one random batch."""
    from spry.client import classification_loss
    from spry.estimators import forward_gradient

    cfg = Config.from_yaml(None, ["batch_size=8", "max_length=128", *overrides, "method=spry"])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    model.eval()
    result = ModeResult(mode="spry", method="spry", tangents=1, allocator="glibc",
                        device=cfg.device, threads=1)
    params = {n: p for n, p in _trained_params(model, cfg, "all", result).items()
              if "classifier" not in n}
    loss_fn = classification_loss(model, random_batch(cfg, model.config.vocab_size))
    d = {td: torch.tensor([forward_gradient(loss_fn, params, [s], tangent_dtype=td).scalars[0]
                           for s in range(draws)]) for td in (None, "bfloat16")}
    err = (d["bfloat16"] - d[None]).abs() / d[None].abs().mean()
    return {"draws": draws, "median": float(err.median()), "max": float(err.max()),
            "correlation": float(torch.corrcoef(torch.stack([d[None], d["bfloat16"]]))[0, 1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="1,10", help="K values, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--units", default="all", choices=("all", "share"),
                   help="every unit (and the head), or client 0's share of a round of 10")
    p.add_argument("--draws", type=int, default=20, help="seeds for the derivative error")
    p.add_argument("--out", default=None)
    a, overrides = p.parse_known_args(argv)
    out = {"overrides": overrides, "threads": 1, "rows": []}
    for k in (int(x) for x in a.ks.split(",")):
        row = measure(overrides, k, a.repeats, a.units)
        out["rows"].append(row)
        x = row["x_inference"]
        print(f"K={k:<3} inference {row['cpu_seconds']['inference']:.3f} s | exact jvp "
              f"{x['exact']:.2f}x | bf16 tangents {x['bf16']:.2f}x inference "
              f"({row['bf16_x_exact']:.2f}x exact)", flush=True)
    out["derivative_error"] = derivative_error(overrides, a.draws)
    e = out["derivative_error"]
    print(f"bf16 directional derivatives over {e['draws']} seeds: |error| / mean |d| median "
          f"{e['median']:.4f}, max {e['max']:.4f}; correlation {e['correlation']:.6f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
