"""What the bench's rows say: ratios to inference and backprop, the targets, a table."""

from __future__ import annotations

from spry.bench.modes import ModeResult


def _ok(r: ModeResult | None) -> bool:
    return r is not None and r.available and r.error is None


def ratios(results: list[ModeResult]) -> list[dict]:
    """Per mode and allocator: memory and time over inference's (and backprop's)."""
    by = {(r.mode, r.allocator): r for r in results}
    rows = []
    for r in results:
        inf, bp = by.get(("inference", r.allocator)), by.get(("backprop", r.allocator))
        row = {"mode": r.mode, "allocator": r.allocator}
        for base_name, base in (("inference", inf), ("backprop", bp)):
            usable = _ok(r) and _ok(base)
            row[f"peak_vs_{base_name}"] = (r.peak_mib / base.peak_mib
                                           if usable and base.peak_mib > 0 else None)
            row[f"total_peak_vs_{base_name}"] = (
                (r.loaded_mib + r.peak_mib) / (base.loaded_mib + base.peak_mib)
                if usable else None)
            row[f"time_vs_{base_name}"] = (r.median_step_seconds / base.median_step_seconds
                                           if usable else None)
            row[f"cpu_time_vs_{base_name}"] = (r.median_cpu_seconds / base.median_cpu_seconds
                                               if usable else None)
        rows.append(row)
    return rows


# The targets: (mode, ratio key, bound); "<" means strictly below.
TARGETS = [("spry", "peak_vs_inference", 1.3), ("spry", "peak_vs_backprop", 0.4),
           ("spry_share", "peak_vs_inference", 1.3), ("spry_share", "peak_vs_backprop", 0.4),
           ("spry", "time_vs_inference", 2.0), ("spry", "time_vs_backprop", "<1"),
           ("spry:10", "time_vs_inference", 12.0)]


def targets(results: list[ModeResult]) -> list[dict]:
    rows = []
    for ratio in ratios(results):
        for mode, key, bound in TARGETS:
            if ratio["mode"] != mode or ratio[key] is None:
                continue
            met = ratio[key] < 1 if bound == "<1" else ratio[key] <= bound
            rows.append({"mode": mode, "allocator": ratio["allocator"], "ratio": key,
                         "value": round(ratio[key], 3), "bound": bound, "met": met})
    return rows


def table(report: dict) -> str:
    """A Markdown table of the report: one row per mode and allocator."""
    ratio = {(r["mode"], r["allocator"]): r for r in report["ratios"]}
    head = ("| mode | alloc | K | trained params | peak MiB | x inf | x backprop | total x inf "
            "| step s | x inf | x backprop | cpu s | cpu x inf |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    fmt = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in report["results"]:
        if not r["available"] or r["error"]:
            why = "not available" if not r["available"] else f"failed: {r['error'][:80]}"
            lines.append(f"| {r['mode']} | {r['allocator']} | {r['tangents']} | {why} |"
                         + " |" * 9)
            continue
        q = ratio[(r["mode"], r["allocator"])]
        lines.append(
            f"| {r['mode']} | {r['allocator']} | {r['tangents']} | {r['trained_params']:,} "
            f"| {r['peak_mib']:.0f} | {fmt(q['peak_vs_inference'])} "
            f"| {fmt(q['peak_vs_backprop'])} | {fmt(q['total_peak_vs_inference'])} "
            f"| {r['median_step_seconds']:.3f} | {fmt(q['time_vs_inference'])} "
            f"| {fmt(q['time_vs_backprop'])} | {r['median_cpu_seconds']:.3f} "
            f"| {fmt(q['cpu_time_vs_inference'])} |")
    return "\n".join(lines)
