"""Results people look at: `spry plot`, `spry compare`, the live progress view, TensorBoard
files and scripts/make_results.py. Synthetic run directories unless a run is the point."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
import yaml

from spry.cli import main
from spry.compare import auto_target, compare, load_run, peak_mib, summarize
from spry.config import Config, ConfigError
from spry.experiment import run
from spry.plots import plot
from spry.progress import Progress, scalar_tag

ROOT = Path(__file__).resolve().parent.parent


def _rows(accs, pers=None, eval_every=1, seconds_per_round=10.0, up=1000, down=5000):
    """One metrics row per round; accuracies on every `eval_every`-th round."""
    rows = []
    for i in range(1, len(accs) * eval_every + 1):
        row = {"round": i, "train_loss": 1.0 / i, "steps": 4, "failed_clients": [],
               "wall_seconds": seconds_per_round, "elapsed_seconds": seconds_per_round * i,
               "bytes_up": up, "bytes_down": down, "bytes_up_total": up * i,
               "bytes_down_total": down * i, "client_seconds": seconds_per_round / 2}
        if i % eval_every == 0:
            k = i // eval_every - 1
            row["generalized_accuracy"] = accs[k]
            row["test_accuracy"] = accs[k] - 0.01
            if pers is not None:
                row["personalized_accuracy"] = pers[k]
        rows.append(row)
    return rows


def _run_dir(root: Path, name: str, rows, finished=True, **config) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"method": "spry", "dataset": "sst2", "dirichlet_alpha": 0.1, "tangents": 1,
           "model": "all-minilm-l6-v2", **config}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if finished:
        (d / "trainable.safetensors").write_bytes(b"")
    return d


BENCH = {"settings": {"overrides": ["model=all-minilm-l6-v2", "batch_size=8"]},
         "results": [
             {"mode": "inference", "allocator": "glibc", "error": None, "available": True,
              "peak_mib": 150.0, "median_step_seconds": 0.3},
             {"mode": "spry_share", "allocator": "jemalloc", "error": None, "available": True,
              "peak_mib": 100.0, "median_step_seconds": 0.7},
             {"mode": "spry_share", "allocator": "glibc", "error": None, "available": True,
              "peak_mib": 200.0, "median_step_seconds": 1.3},
             {"mode": "spry:10", "allocator": "glibc", "error": None, "available": True,
              "peak_mib": 600.0, "median_step_seconds": 10.0},
             {"mode": "backprop", "allocator": "glibc", "error": None, "available": True,
              "peak_mib": 500.0, "median_step_seconds": 0.6},
             {"mode": "fwdllm", "allocator": "glibc", "error": "killed", "available": True,
              "peak_mib": 0.0, "median_step_seconds": 0.0}]}


# ------------------------------------------------------------------------------ compare ---
def test_summary_final_best_target_and_bytes(tmp_path):
    d = _run_dir(tmp_path, "a", _rows([0.5, 0.7, 0.6], pers=[0.55, 0.8, 0.75], eval_every=2))
    s = summarize(load_run(d), target=0.65)
    assert (s["final_gen"], s["best_gen"]) == (0.6, 0.7)
    assert (s["final_pers"], s["best_pers"]) == (0.75, 0.8)
    assert s["final_test"] == pytest.approx(0.59)
    assert (s["target_round"], s["target_seconds"]) == (4, 40.0)  # first evaluated ≥ 0.65
    assert (s["rounds"], s["seconds"]) == (6, 60.0)
    assert (s["bytes_up"], s["bytes_down"]) == (6000, 30000)
    assert summarize(load_run(d), target=0.9)["target_round"] is None


def test_a_line_being_written_is_left_out(tmp_path):
    d = _run_dir(tmp_path, "live", _rows([0.5, 0.6]), finished=False)
    with (d / "metrics.jsonl").open("a") as f:
        f.write('{"round": 3, "train_lo')
    assert [r["round"] for r in load_run(d).rows] == [1, 2]


def test_auto_target_is_the_lowest_best(tmp_path):
    runs = [load_run(_run_dir(tmp_path, "a", _rows([0.5, 0.9]))),
            load_run(_run_dir(tmp_path, "b", _rows([0.6, 0.7]))),
            load_run(_run_dir(tmp_path, "c", _rows([])))]  # not evaluated yet
    assert auto_target(runs) == 0.7


def test_peak_memory_comes_from_the_bench_mode_of_the_method(tmp_path):
    spry = load_run(_run_dir(tmp_path, "s", _rows([0.5])))
    k10 = load_run(_run_dir(tmp_path, "k", _rows([0.5]), tangents=10))
    fedavg = load_run(_run_dir(tmp_path, "f", _rows([0.5]), method="backprop"))
    fwdllm = load_run(_run_dir(tmp_path, "w", _rows([0.5]), method="fwdllm"))
    other = load_run(_run_dir(tmp_path, "o", _rows([0.5]), model="roberta-large"))
    assert peak_mib(spry, BENCH) == 200.0  # a Spry client trains its share; glibc wins
    assert peak_mib(k10, BENCH) == 600.0
    assert peak_mib(fedavg, BENCH) == 500.0
    assert peak_mib(fwdllm, BENCH) is None  # the bench mode failed
    assert peak_mib(other, BENCH) is None  # measured on another model
    for name, adapter in (("ia3", {"peft": "ia3"}), ("r16", {"lora_r": 16})):
        run = load_run(_run_dir(tmp_path, name, _rows([0.5]), **adapter))
        assert peak_mib(run, BENCH) is None  # ... or another adapter
    assert peak_mib(load_run(_run_dir(tmp_path, "a8", _rows([0.5]), lora_alpha=8.0)),
                    BENCH) == 200.0  # alpha scales the adapter, not its memory
    assert peak_mib(spry, None) is None


def test_compare_table_marks_unfinished_runs(tmp_path):
    rows = _rows([0.5, 0.8])
    rows[-1]["test_macro_f1"] = 0.7  # runs before 2026-12-07 wrote none: "–"
    a = _run_dir(tmp_path, "spry-run", rows)
    b = _run_dir(tmp_path, "mezo-run", _rows([0.5, 0.6]), finished=False, method="fedmezo")
    text = compare([a, b])
    # Both runs have a held-out test split: it leads, and the target is on it.
    assert "Target: held-out test accuracy ≥ 0.590" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| run | method | final test acc | best test acc | "
                               "final test macro-F1 | final gen. acc")
    assert "| spry-run | spry | 0.790 | 0.790 | 0.700 | 0.800 | 0.800 |" in lines[1]
    assert lines[2].startswith("| mezo-run (running or stopped) | fedmezo | 0.590 | 0.590 | – | "
                               "0.600 |")
    assert "| 2.0 kB | 10.0 kB |" in lines[1]  # 2 rounds of 1000 up, 5000 down


def test_compare_targets_generalized_accuracy_without_a_test_split_and_flags_one_class(tmp_path):
    untested = _rows([0.5, 0.8])
    for row in untested:
        row.pop("test_accuracy", None)
    a = _run_dir(tmp_path, "a", untested)
    one_class = _rows([0.5, 0.52])
    one_class[-1]["test_predicted_classes"] = 1
    b = _run_dir(tmp_path, "b", one_class)
    text = compare([a, b])
    # the run without the held-out split is named: b has one
    assert ("Target: generalized accuracy (the sampled clients' local test splits; a has no "
            "held-out test split) ≥ 0.520") in text
    assert "local test splits; no run has a held-out test split)" in compare([a])
    assert "| b | spry | 0.510 (one class) |" in text
    assert "predicts one class for every test example" in text
    assert "Target: held-out test accuracy ≥ 0.510" in compare([b])


def test_cli_compare_writes_markdown(tmp_path, capsys):
    a = _run_dir(tmp_path, "a", _rows([0.5, 0.8]))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    out = tmp_path / "table.md"
    assert main(["compare", str(a), "--target", "0.75", "--bench", str(bench),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert "≥ 0.750." in printed and "| 200 |" in printed  # client peak MiB


def test_cli_compare_and_plot_refuse_what_is_not_a_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main(["plot"]) == 2
    assert "give run directories" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["plot", "--bench", str(tmp_path / "bad.json")]) == 2
    assert "no `results` list" in capsys.readouterr().err


# --------------------------------------------------------------------------------- plot ---
def test_plot_writes_png_and_svg_for_runs_and_bench(tmp_path):
    a = _run_dir(tmp_path / "x", "same", _rows([0.5, 0.7], pers=[0.6, 0.8], eval_every=5))
    b = _run_dir(tmp_path / "y", "same", _rows([0.4, 0.6, 0.65]), finished=False)
    bench = tmp_path / "minilm.json"
    bench.write_text(json.dumps(BENCH))
    written = plot([a, b], tmp_path / "out" / "fig", [bench])
    names = sorted(p.name for p in written)
    assert names == ["fig.png", "fig.svg", "fig_memory.png", "fig_memory.svg"]
    for p in written:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in data
    svg = (tmp_path / "out" / "fig.svg").read_text()
    assert "x/same" in svg and "y/same" in svg  # same names: the parent tells them apart
    assert "personalized" in svg
    once, again = (plot([a, b], tmp_path / name, formats=("svg",))[0] for name in "12")
    assert once.read_text() == again.read_text()  # no date, fixed ids: same data, same file


def test_cli_plot_prints_the_files(tmp_path, capsys):
    a = _run_dir(tmp_path, "a", _rows([0.5, 0.7]))
    assert main(["plot", str(a), "--out", str(tmp_path / "p"), "--formats", "png"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "p.png")]


# ----------------------------------------------------------------------------- progress ---
def test_progress_keeps_the_latest_accuracy_and_gives_an_eta(caplog):
    view = Progress(total=10, bar=False, max_seconds=None)
    view.started -= 20.0  # two rounds took 20 s
    rows = _rows([0.6], eval_every=2)
    assert view.text(rows[0]) == "loss=1.0000"
    assert view.text(rows[1]) == "loss=0.5000, test=0.5900, acc=0.6000"  # held-out leads
    later = {"round": 3, "train_loss": 0.25}
    assert view.text(later) == "loss=0.2500, test=0.5900, acc=0.6000 (round 2)"
    later["round"] = 2  # two rounds run: 10 s each, eight to go
    assert view.eta(later) == pytest.approx(80.0, rel=0.05)
    capped = Progress(total=10, bar=False, max_seconds=30.0)
    capped.started -= 20.0
    # 10 s to the cap: no round starts that would end past it
    assert capped.eta({"round": 2, "elapsed_seconds": 20.0}) == pytest.approx(10.0, rel=0.05)
    with caplog.at_level(logging.INFO, logger="spry.experiment"):
        capped.show({"round": 2, "train_loss": 0.5, "elapsed_seconds": 20.0})
    assert "round 2/10: loss=0.5000; eta 0:00:1" in caplog.text


def test_progress_bar_shows_loss_accuracy_and_wall_cap(capsys):
    view = Progress(total=3, bar=True, max_seconds=600.0)
    view.show({"round": 1, "train_loss": 0.69, "generalized_accuracy": 0.5,
               "elapsed_seconds": 60.0})
    assert view.bar.n == 1
    assert "loss=0.6900, acc=0.5000, wall cap in 0:09:00" == view.bar.postfix
    view.close()


def test_quiet_run_logs_one_line_a_round_with_eta(tiny_config, caplog):
    with caplog.at_level(logging.INFO, logger="spry.experiment"):
        run(tiny_config(rounds=2, personalization_epochs=0), progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round ")]
    assert len(lines) == 2
    assert lines[0].startswith("round 1/2: loss=") and "acc=" in lines[0]
    assert lines[1].endswith("eta 0:00:00")


def test_tensorboard_event_files_hold_the_metrics(tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run(tiny_config(rounds=2, personalization_epochs=0, tensorboard=True), progress=False)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss/train_loss", "accuracy/generalized_accuracy", "bytes/bytes_up_total",
            "seconds/elapsed_seconds"} <= set(tags)
    acc = events.Scalars("accuracy/generalized_accuracy")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in acc] == [1, 2]
    assert [e.value for e in acc] == pytest.approx([r["generalized_accuracy"] for r in rows])


def test_tensorboard_without_the_package_is_a_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        Config(tensorboard=True)
    Config(tensorboard=False)


def test_scalar_tags_group_the_metrics():
    assert scalar_tag("train_loss") == "loss/train_loss"
    assert scalar_tag("personalized_accuracy") == "accuracy/personalized_accuracy"
    assert scalar_tag("bytes_down") == "bytes/bytes_down"
    assert scalar_tag("wall_seconds") == "seconds/wall_seconds"
    assert scalar_tag("steps") == "round/steps"


# ------------------------------------------------------------------- make_results.py ---
@pytest.fixture
def make_results():
    spec = importlib.util.spec_from_file_location("make_results",
                                                  ROOT / "scripts" / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_results"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["make_results"]


def test_declared_grid_covers_every_dataset_method_and_ablation(make_results):
    experiments, tables = make_results.declared()
    names = [e.name for e in experiments]
    assert len(names) == len(set(names))
    for ds in ("sst2", "ag_news", "snli", "mnli", "yahoo"):
        for alpha in (0.1, 1.0):
            for method in ("spry", "fedfgd", "fedavg", "fedyogi", "fedsgd", "fedmezo",
                           "baffle", "fwdllm"):
                assert f"{ds}-a{alpha}-{method}" in names
    titles = " ".join(t.title for t in tables)
    for topic in ("K", "clients per round", "PEFT", "communication", "LoRA r and alpha"):
        assert topic in titles
    by_name = {e.name: e for e in experiments}
    budget = make_results.CPU_BUDGET
    for table in tables:  # every row is a declared experiment with a valid config
        for name in table.names:
            args = by_name[name].args(Path("runs"), budget)
            cfg = Config.from_yaml(ROOT / args[3], [a for a in args[4:] if "=" in a])
            assert cfg.rounds == budget.rounds
    # an experiment's own settings win over the budget's defaults: the M ablation's runs
    # differ although the budget sets clients_per_round for every run
    for m in (5, 10, 20):
        args = by_name[f"sst2-a0.1-spry-m{m}"].args(Path("runs"), budget)
        assert Config.from_yaml(ROOT / args[3], args[4:]).clients_per_round == m
    # every method runs at a rate of its own (docs/baselines.md's sweep)
    assert all(any(o.startswith("client_lr=") for o in ov)
               for ov in make_results.METHODS.values())


def test_dry_run_prints_the_selected_commands(make_results, tmp_path, capsys):
    assert make_results.main(["--dry-run", "--only", "sst2-a0.1-spry-k*", "--results",
                              str(tmp_path), "--rounds", "5", "--max-wall-seconds", "60",
                              "--no-cpu-budget", "--set", "max_steps=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"spry run --quiet --config configs/sst2.yaml max_steps=2 dirichlet_alpha=0.1 "
        f"client_lr=0.003 tangents={k} rounds=5 max_wall_seconds=60 output_dir={tmp_path} "
        f"run_name=sst2-a0.1-spry-k{k}" for k in (3, 10)]
    assert make_results.main(["--dry-run", "--only", "sst2-a0.1-spry-k3", "--results",
                              str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(
        "spry run --quiet --config configs/sst2.yaml "
        + " ".join(make_results.CPU_BUDGET.extra) + " dirichlet_alpha=0.1")
    assert make_results.main(["--dry-run", "--only", "fedmezo", "--results",
                              str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10  # 5 data sets x 2 alphas


def test_one_tiny_experiment_runs_resumes_and_writes_the_doc(make_results, tiny_bert,
                                                             tmp_path, monkeypatch, capsys):
    tiny = make_results.Experiment("tiny-spry", None, (
        f"model={tiny_bert}", "dataset=sentiment", "num_clients=4", "clients_per_round=2",
        "max_steps=1", "max_length=16", "personalization_epochs=1"))
    table = make_results.Table("Tiny", "One run.", ("tiny-spry", "tiny-missing"),
                               {"tiny-spry": "spry"})
    missing = make_results.Experiment("tiny-missing", None, ("method=fedmezo",))
    monkeypatch.setattr(make_results, "declared", lambda: ([tiny, missing], [table]))
    doc = tmp_path / "RESULTS.md"
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(BENCH))
    assert make_results.main(["--only", "tiny-spry", "--results", str(tmp_path / "res"),
                              "--doc", str(doc), "--rounds", "2", "--max-wall-seconds", "120",
                              "--no-cpu-budget", "--bench", str(bench)]) == 0
    run_dir = tmp_path / "res" / "tiny-spry"
    assert (run_dir / "trainable.safetensors").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3  # rounds 0, 1, 2
    text = doc.read_text()
    command = make_results.command(tiny, tmp_path / "res", make_results.Budget(2, 120.0))
    assert f"`{command}`" in text
    assert "| spry | spry |" in text and "tiny-missing (not run)" in text
    assert "1 of 2 experiments have run" in text
    assert "![Tiny](img/results/tiny.png)" in text
    assert (tmp_path / "img" / "results" / "tiny.png").read_bytes().startswith(b"\x89PNG")
    # a rewrite keeps what people wrote above the generated part
    assert text.startswith("# Results\n\n" + make_results.GENERATED)
    doc.write_text(text.replace("# Results\n", "# Results\n\nOur reading.\n", 1))
    assert make_results.main(["--doc-only", "--results", str(tmp_path / "res"),
                              "--doc", str(doc), "--no-plots"]) == 0
    again = doc.read_text()
    assert again.startswith("# Results\n\nOur reading.\n\n" + make_results.GENERATED)
    assert again.count(make_results.GENERATED) == 1 and "| spry | spry |" in again
    capsys.readouterr()
    # resumable: a finished run is skipped; an unfinished one is started again
    assert make_results.main(["--dry-run", "--results", str(tmp_path / "res")]) == 0
    assert "tiny-spry" not in capsys.readouterr().out
    (run_dir / "trainable.safetensors").unlink()
    assert make_results.main(["--dry-run", "--results", str(tmp_path / "res")]) == 0
    assert "run_name=tiny-spry" in capsys.readouterr().out


def test_curves_draw_the_held_out_loss_beneath_where_a_run_recorded_it(tmp_path):
    from spry.plots import curves_figure

    rows = _rows([0.5, 0.7])
    plain = _run_dir(tmp_path / "a", "plain", rows)
    assert len(curves_figure([load_run(plain)]).axes) == 3  # no loss recorded: no loss row
    lossy = _run_dir(tmp_path / "b", "lossy", [{**r, "test_loss": 0.7 - 0.1 * i}
                                               for i, r in enumerate(rows)])
    axes = curves_figure([load_run(plain), load_run(lossy)]).axes
    assert len(axes) == 6 and axes[3].get_ylabel() == "held-out test loss"
    drawn = axes[3].get_lines()
    assert len(drawn) == 1  # the run without a loss draws no line there
    assert list(drawn[0].get_ydata()) == [r["test_loss"] for r in load_run(lossy).evaluated(
        "test_loss")]
