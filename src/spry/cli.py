"""`spry run | units | bench` — parse arguments and call one function."""

from __future__ import annotations

import argparse
import logging
import sys

from spry.config import Config, ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spry", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="federated finetuning; writes a run directory")
    run.add_argument("--config", help="YAML file of settings (see configs/)")
    run.add_argument("--quiet", action="store_true", help="plain log lines, no progress bar")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="settings on top of --config, e.g. rounds=5 dirichlet_alpha=1.0")
    units = sub.add_parser("units", help="list the trainable units of a model and PEFT setting")
    units.add_argument("--config")
    units.add_argument("overrides", nargs="*", metavar="key=value")
    bench = sub.add_parser("bench", help="peak memory and step time per method, one process "
                           "per mode (docs/memory.md)")
    bench.add_argument("--config")
    bench.add_argument("--modes", help="comma-separated, name[:K], e.g. inference,spry,spry:10 "
                       "(default: all)")
    bench.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--repeat", type=int, default=1,
                       help="run all modes this often, keep each mode's fastest")
    bench.add_argument("--threads", type=int, help="torch threads per process")
    bench.add_argument("--allocators", default="glibc", help="glibc,jemalloc (LD_PRELOAD)")
    bench.add_argument("--out", help="write the JSON report to this file")
    bench.add_argument("overrides", nargs="*", metavar="key=value",
                       help="e.g. model=random:opt-350m batch_size=8 max_length=128")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("transformers", "datasets", "httpx", "huggingface_hub", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        cfg = Config.from_yaml(args.config, args.overrides)
        if args.command == "run":
            from spry.experiment import run

            out = run(cfg, progress=not args.quiet)
            _summary(out)
        elif args.command == "units":
            _units(cfg)
        elif args.command == "bench":
            from spry.bench import cli_bench

            cli_bench(args)
    except ConfigError as exc:
        print(f"spry: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _summary(out) -> None:
    from spry.metrics import read_metrics

    rows = read_metrics(out)
    last = rows[-1]
    evaluated = [r for r in rows if r.get("generalized_accuracy") is not None]
    print(f"run directory: {out}")
    if evaluated:
        e = evaluated[-1]
        parts = [f"generalized accuracy {e['generalized_accuracy']:.4f}"]
        if e.get("test_accuracy") is not None:
            parts.append(f"test accuracy {e['test_accuracy']:.4f}")
        if e.get("personalized_accuracy") is not None:
            parts.append(f"personalized accuracy {e['personalized_accuracy']:.4f}")
        print(f"round {e['round']}: " + ", ".join(parts))
    print(f"bytes up {last['bytes_up_total']:,}, bytes down {last['bytes_down_total']:,}, "
          f"elapsed {last['elapsed_seconds']:.1f} s")


def _units(cfg: Config) -> None:
    from spry.models import list_units, load_model, load_tokenizer

    tok = load_tokenizer(cfg)
    model = load_model(cfg, num_labels=len(cfg.label_names or [0, 1]),
                       pad_token_id=tok.pad_token_id)
    for unit in list_units(model):
        size = sum(dict(model.named_parameters())[p].numel() for p in unit.params)
        print(f"{unit.name}\t{size}")


if __name__ == "__main__":
    sys.exit(main())
