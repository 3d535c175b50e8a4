"""Accuracy by round and time per round, as a Markdown table, from run directories.

    python benchmarks/curve_table.py runs/sst2-spry-alpha0.1 runs/sst2-spry-alpha1.0

Reads only metrics.jsonl (metrics are data). One column group per run; rows are the
evaluated rounds: generalized accuracy (sampled clients' test splits), global test
accuracy, personalized accuracy and the bytes uploaded so far (all clients). The footer
gives rounds run, median wall seconds per round and the final cumulative bytes.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from spry.metrics import read_metrics


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}"


def table(run_dirs: list[str]) -> str:
    runs = {Path(d).name: read_metrics(d) for d in run_dirs}
    rounds = sorted({r["round"] for rows in runs.values() for r in rows
                     if r.get("generalized_accuracy") is not None})
    cols = ("gen. acc", "test acc", "pers. acc", "MB up")
    head = ["round"] + [f"{name} {col}" for name in runs for col in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rnd in rounds:
        cells = [str(rnd)]
        for rows in runs.values():
            row = next((r for r in rows if r["round"] == rnd), {})
            up = row.get("bytes_up_total")
            cells += [_fmt(row.get("generalized_accuracy")), _fmt(row.get("test_accuracy")),
                      _fmt(row.get("personalized_accuracy")),
                      "" if up is None else f"{up / 1e6:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| run | rounds | median s/round (all) | median s/round (no eval) | elapsed s | "
                 "bytes up | bytes down |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        plain = [r["wall_seconds"] for r in rows if r.get("generalized_accuracy") is None]
        lines.append(
            f"| {name} | {len(rows)} | {statistics.median(r['wall_seconds'] for r in rows):.1f} | "
            f"{statistics.median(plain) if plain else float('nan'):.1f} | "
            f"{rows[-1]['elapsed_seconds']:.0f} | {rows[-1]['bytes_up_total']:,} | "
            f"{rows[-1]['bytes_down_total']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(table(sys.argv[1:]))
