"""The GPU run, ready for the first machine with one (issue 20): one command, one JSON and
one Markdown table.

    bash benchmarks/gpu.sh                 # on a CUDA machine: under 8 minutes on an H100/H200
    python benchmarks/gpu.py --smoke       # tiny shapes on CPU (the test suite runs this)

It measures, each mode in its own process (spry bench):
  (a) SmolLM2-135M: the converted checkpoint where `spry models fetch smollm2-135m` has run,
      else its shapes randomly initialised;
  (b) a Llama-shaped ~1B model (random init), bf16, batch 8, length 512, LoRA r=1 q/v;
  each for inference, backprop, Spry K=1 and K=10 and FedMeZO: peak memory
  (torch.cuda.max_memory_allocated above the loaded model) and step time, with ratios;
  (c) a federated MiniLM run on SST-2 ($SPRY_DATA_DIR) or, without it, the generated task,
  for as many rounds as fit in --seconds: test accuracy by round.
Writes OUT/gpu.json and OUT/gpu.md (OUT: --out, default benchmarks/results/gpu).

The H200 image has torch, transformers, peft and safetensors, which (a) and (b) need, but
not the packaged MiniLM (91 MB, over the 64 MiB a device call carries): for (c) save it in
fp16 to a git-ignored folder and carry that (docs/memory.md, "GPU"), or (c) is recorded as
not run and (a), (b) are written all the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("inference", "backprop", "spry", "spry:10", "fedmezo")


def step_shapes(smoke: bool, device: str) -> dict[str, list[str]]:
    """name -> spry bench overrides, one entry per model measured."""
    if smoke:  # seconds on CPU: the same code path, tiny shapes
        common = ["device=cpu", "dtype=bfloat16", "batch_size=2", "max_length=16"]
        return {"tiny-bert": ["model=random:tiny-bert", *common]}
    from spry.model_cache import cached_model_path

    try:
        smollm = f"model={cached_model_path('smollm2-135m')}"
    except Exception:  # not converted on this machine: the same shapes, random weights
        smollm = "model=random:smollm2-135m"
    common = [f"device={device}", "dtype=bfloat16", "batch_size=8", "max_length=512",
              "peft=lora", "lora_r=1", "pooling=model", "head_init=random",
              "head_gradient=estimator", "tangent_sharing=batch"]
    return {"smollm2-135m": [smollm, *common], "llama-1b": ["model=random:llama-1b", *common]}


def measure_steps(smoke: bool, device: str) -> dict:
    from spry.bench import bench, table

    reports = {}
    for name, overrides in step_shapes(smoke, device).items():
        print(f"[gpu] step bench: {name}", flush=True)
        report = bench(overrides, modes=MODES, steps=1 if smoke else 5,
                       warmup=0 if smoke else 1, timeout=None if smoke else 240)
        report["table"] = table(report)
        reports[name] = report
    return reports


def federated_run(smoke: bool, device: str, seconds: float, model: str | None) -> dict:
    """(c): rounds of a federated Spry run within `seconds`; test accuracy by round."""
    from spry.config import Config
    from spry.metrics import read_metrics
    from spry.runner import run

    data = os.environ.get("SPRY_DATA_DIR")
    sst2 = data is not None and (Path(data) / "sst2" / "train.tsv").is_file()
    settings = dict(model=model or "all-minilm-l6-v2", dataset="sst2" if sst2 else "sentiment",
                    method="spry", device=device, num_clients=100 if not smoke else 4,
                    clients_per_round=10 if not smoke else 2, rounds=1 if smoke else 1000,
                    max_steps=8 if not smoke else 1, max_length=64 if not smoke else 16,
                    eval_every=1, personalization_epochs=0, server_optimizer="fedavg",
                    max_wall_seconds=seconds, max_test_examples=64 if smoke else None,
                    output_dir=tempfile.mkdtemp(prefix="spry-gpu-"), run_name="federated")
    print(f"[gpu] federated run: {settings['dataset']}, {seconds:g} s", flush=True)
    started = time.perf_counter()
    out = run(Config(**settings), progress=False)
    rows = read_metrics(out)
    return {"settings": {k: v for k, v in settings.items() if k != "output_dir"},
            "wall_seconds": time.perf_counter() - started,
            "rounds": [{"round": r["round"], "test_accuracy": r.get("test_accuracy"),
                        "elapsed_seconds": r.get("elapsed_seconds")} for r in rows]}


def markdown(result: dict) -> str:
    lines = [f"# GPU run ({result['device']}, torch {result['torch']})", ""]
    for name, report in result["steps"].items():
        lines += [f"## {name}: one client step", "",
                  "`spry bench " + " ".join(report["settings"]["overrides"]) + "`", "",
                  report["table"], ""]
    fed = result["federated"]
    if "error" in fed:
        return "\n".join(lines + ["## Federated Spry run", "", f"not run: {fed['error']}"]) + "\n"
    lines += ["## Federated Spry run, test accuracy by round", "",
              f"{fed['settings']['dataset']}, N={fed['settings']['num_clients']}, "
              f"M={fed['settings']['clients_per_round']}, "
              f"{fed['settings']['max_steps']} steps a round, {fed['wall_seconds']:.0f} s", "",
              "| round | test accuracy | elapsed s |", "|---|---|---|"]
    for r in fed["rounds"]:
        acc = "—" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        lines.append(f"| {r['round']} | {acc} | {(r['elapsed_seconds'] or 0):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, seconds")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu"))
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="the federated run's wall-clock budget")
    parser.add_argument("--run-model", default=None,
                        help="the federated run's model (default all-minilm-l6-v2)")
    args = parser.parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu.py: no CUDA device here; run it on a GPU machine, or --smoke on CPU",
              file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "torch": torch.__version__, "smoke": args.smoke,
              "steps": measure_steps(args.smoke, device)}
    try:  # (a) and (b) are written even where (c)'s model or data cannot be loaded
        result["federated"] = federated_run(args.smoke, device, args.seconds, args.run_model)
    except Exception as exc:
        if args.smoke:
            raise
        result["federated"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "gpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
