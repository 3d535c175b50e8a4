"""Memory and speed of one client step, per method: the table in docs/memory.md.

Run from the repository root (CPU; each mode in a fresh process, see `spry.bench`):

    python benchmarks/memory_speed.py minilm          # pretrained all-MiniLM-L6-v2
    python benchmarks/memory_speed.py opt-350m        # random-init OPT-350m shapes
    python benchmarks/memory_speed.py smollm2-135m    # random-init SmolLM2-135M shapes
    python benchmarks/memory_speed.py llama-1b --device cuda --dtype bfloat16   # a GPU

Each writes benchmarks/results/<name>.json and prints a Markdown table with ratios to
no-grad inference. Batch 8, length 128, LoRA r=1 on query/value (the paper's setting),
fp32 on CPU. Extra arguments after `--` go to `spry bench` unchanged, e.g.
`-- --modes inference,spry --steps 3`. The same thing by hand:

    spry bench --threads 1 --allocators glibc,jemalloc --out minilm.json \
        model=all-minilm-l6-v2 batch_size=8 max_length=128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spry.cli import main

MODELS = {"minilm": "all-minilm-l6-v2", "opt-350m": "random:opt-350m",
          "smollm2-135m": "random:smollm2-135m", "llama-1b": "random:llama-1b"}
RESULTS = Path(__file__).parent / "results"

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1: steadier on a shared machine)")
    p.add_argument("--allocators", default="glibc,jemalloc")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, rest = p.parse_args(argv[:cut]), argv[cut + 1:]  # after `--`: `spry bench` options
    sys.exit(main(["bench", "--threads", str(args.threads), "--allocators", args.allocators,
                   "--out", str(RESULTS / f"{args.model}.json"), *rest,
                   f"model={MODELS[args.model]}", f"device={args.device}", f"dtype={args.dtype}",
                   "batch_size=8", "max_length=128"]))
