"""`spry bench`: peak memory and step time of one client step, per method.

Each mode runs in a FRESH subprocess (`python -m spry.bench --child SPEC`), so one mode's
allocator state and peak never leak into another's. The parent collects one JSON object
per mode and draws a table with ratios to no-grad inference.

Memory. CPU: peak resident set size (VmHWM) above the RSS right after the model, batch and
optimizer are built; the high-water mark is reset after loading (`/proc/self/clear_refs`)
so loading's own transient peak is not counted (falls back to `ru_maxrss` where the reset
is not possible; `peak_method` says which). glibc's allocator keeps freed pages resident
and inflates RSS, so the parent can also run every mode under jemalloc (LD_PRELOAD).
GPU: `torch.cuda.max_memory_allocated` above the memory allocated after loading.

Time. The median over `steps` timed steps after `warmup` untimed ones; a step is what a
client does per minibatch: the estimator plus the optimizer step (inference: one no-grad
forward with the loss). Process CPU time is reported too: on a shared machine it is less
disturbed by other processes than wall time.

Modes: inference, backprop (all trainable weights), spry (forward gradient, all units),
spry_share (one client's share of the units: client 0 of `clients_per_round`), and the
zeroth-order baselines fedmezo, baffle, fwdllm when their estimators are registered.
`name:K` sets K (tangents / perturbations), e.g. `spry:10`.
"""

from __future__ import annotations

import argparse
import ctypes.util
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# mode -> (method= it measures, which units it trains); "inference" trains nothing.
MODES = {
    "inference": (None, "none"),
    "backprop": ("backprop", "all"),
    "spry": ("spry", "all"),
    "spry_share": ("spry", "share"),
    "fedmezo": ("fedmezo", "all"),
    "baffle": ("baffle", "all"),
    "fwdllm": ("fwdllm", "all"),
}
DEFAULT_MODES = ("inference", "backprop", "spry", "spry_share", "spry:10", "fedmezo", "baffle",
                 "fwdllm")

# Randomly initialised configs of public architectures, by size (no download: the shapes
# are copied from the hub config.json of the named model).
RANDOM_CONFIGS = {
    "opt-350m": ("opt", dict(vocab_size=50272, hidden_size=1024, num_hidden_layers=24,
                             ffn_dim=4096, num_attention_heads=16, max_position_embeddings=2048,
                             word_embed_proj_dim=512, do_layer_norm_before=False,
                             pad_token_id=1)),
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                                   intermediate_size=1536, num_attention_heads=9,
                                   num_key_value_heads=3, max_position_embeddings=8192,
                                   tie_word_embeddings=True, pad_token_id=0)),
    "llama-1b": ("llama", dict(vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                               intermediate_size=8192, num_attention_heads=32,
                               num_key_value_heads=8, max_position_embeddings=8192,
                               tie_word_embeddings=True, pad_token_id=0)),
    "tiny-bert": ("bert", dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=128)),
}
RANDOM_PREFIX = "random:"
MIB = 2 ** 20


@dataclass
class ModeResult:
    mode: str
    method: str | None
    tangents: int
    allocator: str
    available: bool = True
    error: str | None = None
    trained_params: int = 0
    units: int = 0
    model_params: int = 0
    device: str = "cpu"
    threads: int = 0
    loaded_mib: float = 0.0
    """Resident (CPU) or allocated (GPU) memory after loading, before the first step."""
    peak_mib: float = 0.0
    """Peak memory of the steps above `loaded_mib`."""
    peak_method: str = ""
    step_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    median_step_seconds: float = 0.0
    median_cpu_seconds: float = 0.0


# ----------------------------------------------------------------------------- child ---
def parse_mode(text: str) -> tuple[str, int]:
    """`spry:10` -> ("spry", 10); `spry` -> ("spry", 1)."""
    name, _, k = text.partition(":")
    if name not in MODES:
        raise ValueError(f"bench mode {name!r} is not one of {', '.join(MODES)}")
    if k and (not k.isdigit() or int(k) < 1):
        raise ValueError(f"bench mode {text!r}: K after ':' must be a positive integer")
    return name, int(k) if k else 1


def mode_available(mode: str) -> bool:
    """False when the method's estimator is not registered (yet) in ESTIMATORS."""
    from spry.estimators import ESTIMATORS
    from spry.methods import METHODS

    method = MODES[parse_mode(mode)[0]][0]
    return method is None or (method in METHODS and METHODS[method].estimator in ESTIMATORS)


def build_model(cfg):
    """The client's model: `load_model`, or a random-init config for `random:<name>`."""
    from spry.models import apply_peft, load_model

    if not cfg.model.startswith(RANDOM_PREFIX):
        return load_model(cfg, num_labels=2, pad_token_id=None)
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name = cfg.model.removeprefix(RANDOM_PREFIX)
    if name not in RANDOM_CONFIGS:
        raise ValueError(f"model: no random config {name!r}; one of {', '.join(RANDOM_CONFIGS)}")
    model_type, shape = RANDOM_CONFIGS[name]
    config = AutoConfig.for_model(model_type, num_labels=2, **shape)
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager", dtype=getattr(torch, cfg.dtype))
    return apply_peft(model, cfg).to(cfg.device)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset: bool) -> float:
    if reset:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_mode(mode: str, overrides: list[str], steps: int, warmup: int,
             threads: int | None = None, allocator: str = "glibc",
             config: str | None = None) -> ModeResult:
    """Build the model and one batch, then time `warmup + steps` client steps of `mode`."""
    import torch

    from spry.config import Config
    from spry.federation.assign import assign_units
    from spry.methods import make_estimator
    from spry.models import list_units
    from spry.client import classification_loss, exact_head, make_client_optimizer, step_estimate

    if threads:
        torch.set_num_threads(threads)
    name, k = parse_mode(mode)
    method, which = MODES[name]
    cfg = Config.from_yaml(config, [*overrides, *([f"method={method}"] if method else []),
                                  f"tangents={k}"])
    result = ModeResult(mode=mode, method=method, tangents=k, allocator=allocator,
                        device=cfg.device, threads=torch.get_num_threads())
    torch.manual_seed(cfg.seed)  # the bench owns its process: LoRA init and dropout
    model = build_model(cfg)
    named = dict(model.named_parameters())
    units = list_units(model)
    if which == "share":
        dealt = assign_units([u.name for u in units], list(range(cfg.clients_per_round)), 0)
        units = [u for u in units if u.name in dealt[0]]
    params = {} if which == "none" else {p: named[p] for u in units for p in u.params}
    result.units = 0 if which == "none" else len(units)
    result.trained_params = sum(p.numel() for p in params.values())
    result.model_params = sum(p.numel() for p in model.parameters())

    g = torch.Generator().manual_seed(cfg.seed)
    vocab = model.config.vocab_size
    batch = {"input_ids": torch.randint(5, vocab, (cfg.batch_size, cfg.max_length), generator=g),
             "attention_mask": torch.ones(cfg.batch_size, cfg.max_length, dtype=torch.long),
             "labels": torch.randint(0, 2, (cfg.batch_size,), generator=g)}
    batch = {key: v.to(cfg.device) for key, v in batch.items()}
    loss_fn = classification_loss(model, batch)

    if method is None:
        model.eval()

        def step(i: int) -> None:
            with torch.no_grad():
                loss_fn({})
    else:
        model.train()
        estimator = make_estimator(cfg)
        # The client's own step (spry.client.step_estimate): the recipe's head treatment,
        # tangent sharing and zero-factor rule are measured as a run uses them.
        head = exact_head(model, cfg, list(params))
        optimizer = make_client_optimizer(
            cfg, [p for n, p in params.items() if n not in (head or ())],
            [p for n, p in params.items() if n in (head or ())])

        def step(i: int) -> None:
            est = step_estimate(model, batch, params, head, cfg, estimator,
                                [1000 * i + j for j in range(k)])
            for pname, p in params.items():
                p.grad = est.grads[pname].to(p.dtype) if pname in est.grads else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    cuda = cfg.device.startswith("cuda")
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        result.loaded_mib = torch.cuda.memory_allocated() / MIB
        torch.cuda.reset_peak_memory_stats()
        result.peak_method = "cuda max_memory_allocated"
    else:
        result.loaded_mib = _rss_mib()
        reset = _reset_peak_rss()
        result.peak_method = "VmHWM after reset" if reset else "ru_maxrss (includes loading)"
    for i in range(warmup + steps):
        wall, cpu = time.perf_counter(), time.process_time()
        step(i)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            result.step_seconds.append(time.perf_counter() - wall)
            result.cpu_seconds.append(time.process_time() - cpu)
    peak = (torch.cuda.max_memory_allocated() / MIB if cuda else _peak_rss_mib(reset))
    result.peak_mib = max(0.0, peak - result.loaded_mib)
    result.median_step_seconds = statistics.median(result.step_seconds)
    result.median_cpu_seconds = statistics.median(result.cpu_seconds)
    return result


# ---------------------------------------------------------------------------- parent ---
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
        parse_mode(mode)
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
           ("spry:10", "time_vs_inference", 5.0)]


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


def _child(spec: str) -> int:
    s = json.loads(spec)
    r = run_mode(s["mode"], s["overrides"], s["steps"], s["warmup"], s.get("threads"),
                 s.get("allocator", "glibc"), s.get("config"))
    print(json.dumps(asdict(r)), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one bench mode in this process (internal)")
    parser.add_argument("--child", required=True, help="JSON spec from the parent")
    sys.exit(_child(parser.parse_args().child))
