"""`spry bench` itself: every mode in a fresh process, collected into one report."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from spry.bench.modes import (DEFAULT_MODES, MODES, ModeResult, mode_available, mode_config,
                              parse_mode)
from spry.config import ConfigError
from spry.bench.report import ratios, table, targets


def jemalloc_path() -> str | None:
    """libjemalloc's path for LD_PRELOAD (Debian: apt-get install libjemalloc2), or None."""
    for path in ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                 "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib/libjemalloc.so.2"):
        if Path(path).exists():
            return path
    return ctypes.util.find_library("jemalloc")


def spawn(mode: str, overrides: list[str], steps: int, warmup: int, threads: int | None,
          allocator: str, timeout: float | None = None, config: str | None = None
          ) -> ModeResult:
    """Run one mode in a fresh interpreter and read its JSON line back."""
    name, k = parse_mode(mode)
    method = MODES[name][0]
    if not mode_available(mode):
        return ModeResult(mode=mode, method=method, tangents=k, allocator=allocator,
                          available=False, error=f"estimator for method={method} not registered")
    env = dict(os.environ)
    if allocator == "jemalloc":
        env["LD_PRELOAD"] = jemalloc_path() or ""
    spec = dict(mode=mode, overrides=overrides, steps=steps, warmup=warmup, threads=threads,
                allocator=allocator, config=config)
    try:
        proc = subprocess.run([sys.executable, "-m", "spry.bench", "--child", json.dumps(spec)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ModeResult(mode=mode, method=method, tangents=k, allocator=allocator,
                          error=f"timed out after {timeout} s")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return ModeResult(mode=mode, method=method, tangents=k, allocator=allocator,
                          error=f"exit {proc.returncode}: {tail}")
    return ModeResult(**json.loads(lines[-1]))


def bench(overrides: list[str], modes=DEFAULT_MODES, steps: int = 5, warmup: int = 1,
          threads: int | None = None, allocators=("glibc",), repeat: int = 1,
          timeout: float | None = None, progress=None, config: str | None = None) -> dict:
    """Every mode x allocator in its own process; `repeat` > 1 runs the whole list again
    (interleaved, so a busy spell on a shared machine hits all modes alike) and keeps, per
    mode, the repeat with the lowest median step time."""
    for mode in modes:
        try:
            mode_config(mode, overrides, config)  # every mode's settings, before any child
        except ConfigError as exc:
            raise ConfigError(f"bench mode {mode!r}: {exc}") from None
    if steps < 1 or warmup < 0 or repeat < 1:
        raise ValueError("steps and repeat must be >= 1, warmup >= 0")
    best: dict[tuple[str, str], ModeResult] = {}
    for _ in range(repeat):
        for allocator in allocators:
            if allocator == "jemalloc" and jemalloc_path() is None:
                continue
            for mode in modes:
                r = spawn(mode, overrides, steps, warmup, threads, allocator, timeout, config)
                if progress:
                    progress(r)
                old = best.get((mode, allocator))
                if old is None or (r.error is None and (old.error is not None or
                                   r.median_step_seconds < old.median_step_seconds)):
                    best[(mode, allocator)] = r
    results = list(best.values())
    return {"settings": {"config": config, "overrides": overrides, "modes": list(modes),
                         "steps": steps, "warmup": warmup, "threads": threads, "repeat": repeat,
                         "allocators": list(allocators)},
            "results": [asdict(r) for r in results],
            "ratios": ratios(results),
            "targets": targets(results)}


def cli_bench(args) -> None:
    """`spry bench`: run, print the table and the targets, write the JSON if asked."""
    import platform

    import torch

    modes = tuple(args.modes.split(",")) if args.modes else DEFAULT_MODES
    allocators = tuple(args.allocators.split(","))
    for allocator in allocators:
        if allocator not in ("glibc", "jemalloc"):
            raise ValueError(f"--allocators: {allocator!r} is not glibc or jemalloc")
    if "jemalloc" in allocators and jemalloc_path() is None:
        print("jemalloc not found (apt-get install libjemalloc2): glibc only", file=sys.stderr)

    def progress(r: ModeResult) -> None:
        state = ("not available" if not r.available else r.error or
                 f"peak {r.peak_mib:.0f} MiB, step {r.median_step_seconds:.3f} s")
        print(f"  {r.mode} [{r.allocator}]: {state}", file=sys.stderr, flush=True)

    report = bench(args.overrides, modes, args.steps, args.warmup, args.threads, allocators,
                   args.repeat, progress=progress, config=args.config)
    report["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__,
                         "python": platform.python_version(),
                         "cuda": torch.cuda.get_device_name() if torch.cuda.is_available()
                         else None}
    print(table(report))
    for t in report["targets"]:
        bound = "< 1" if t["bound"] == "<1" else f"<= {t['bound']}"
        print(f"target {t['mode']} {t['ratio']} [{t['allocator']}]: {t['value']} {bound}: "
              f"{'met' if t['met'] else 'MISSED'}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"report: {args.out}")
