"""scripts/baselines.py and scripts/decoders.py: the grids they declare, the bar the
baselines doc checks, and running experiments side by side."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from spry.compare import Run
from spry.config import Config

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def baselines():
    yield _load("baselines")
    del sys.modules["baselines"]


@pytest.fixture
def decoders():
    yield _load("decoders")
    del sys.modules["decoders"]


def test_baselines_grid_sweeps_three_rates_for_every_method(baselines):
    experiments = baselines.declared()
    names = [e.name for e in experiments]
    assert len(names) == len(set(names)) == 2 * 11 * 3
    for ds in ("sst2", "ag_news"):
        for method in ("spry", "fedfgd", "fedavg", "fedyogi", "fedadam", "fedsgd",
                       "split-fedavg", "split-fedyogi", "fedmezo", "baffle", "fwdllm"):
            assert sum(n.startswith(f"{ds}-a0.1-{method}-lr") for n in names) == 3
    for e in experiments:  # each command's settings are valid, budget included
        cfg = Config.from_yaml(ROOT / e.config, [*baselines.BUDGET.extra, *e.overrides])
        assert cfg.dirichlet_alpha == 0.1 and cfg.clients_per_round == 5
    # the middle rates run first, so a partial grid still has every method
    assert {e.name.rsplit("-lr", 1)[0] for e in experiments[:22]} == \
        {e.name.rsplit("-lr", 1)[0] for e in experiments}


def _run(method: str, lr: float, curve: list[tuple[int, float, float]]) -> Run:
    """(round, test accuracy, elapsed seconds) at each evaluated round."""
    rows = [{"round": r, "test_accuracy": acc, "generalized_accuracy": acc,
             "elapsed_seconds": s, "bytes_up_total": 0} for r, acc, s in curve]
    return Run(Path(method), rows, {"method": method, "client_lr": lr}, True)


def test_bar_is_checked_from_the_numbers(baselines):
    chosen = {"spry": _run("spry", 1e-2, [(4, 0.62, 40.0), (8, 0.70, 80.0), (12, 0.71, 120.0)]),
              "fedavg": _run("backprop", 1e-3, [(4, 0.65, 50.0), (12, 0.715, 150.0)]),
              "fedmezo": _run("fedmezo", 1e-2, [(4, 0.50, 30.0), (12, 0.61, 130.0)]),
              "baffle": _run("baffle", 1e-2, [(4, 0.52, 30.0), (12, 0.55, 140.0)])}
    text = "\n".join(baselines.bar_lines("sst2", chosen))
    assert "0.710 vs 0.715 → met" in text  # within 1 point
    assert "(fedmezo, 0.610): met" in text  # 10 points above the best zeroth-order
    assert "3.2x → met" in text  # fedmezo reached 0.60 at 130 s, Spry at 40 s
    chosen["fedavg"] = _run("backprop", 1e-3, [(12, 0.80, 150.0)])
    chosen["spry"] = _run("spry", 1e-2, [(12, 0.65, 120.0)])
    text = "\n".join(baselines.bar_lines("sst2", chosen))
    assert "0.650 vs 0.800 → not met" in text
    assert "(fedmezo, 0.610): not met" in text
    assert "1.1x → not met" in text


def test_bar_when_nobody_reaches_the_target(baselines):
    flat = [(4, 0.51, 40.0), (12, 0.51, 120.0)]
    chosen = {m: _run(m, 1e-2, flat) for m in ("spry", "fedavg", "fedmezo")}
    text = "\n".join(baselines.bar_lines("sst2", chosen))
    assert "spry never reached 0.6, fedmezo never reached 0.6) → not met" in text
    assert "no method reached 0.6 in this budget" in text


def test_decoders_grid_is_three_methods_on_four_settings(decoders):
    experiments = decoders.declared()
    assert len(experiments) == 12
    for e in experiments:
        cfg = Config.from_yaml(ROOT / e.config, list(e.overrides))
        assert cfg.dataset in ("multirc", "squad_v2")
        assert cfg.method in ("spry", "backprop", "fedmezo")
    heads = {Config.from_yaml(ROOT / e.config).task_head for e in experiments}
    assert heads == {"classifier", "verbalizer", "span", "generate"}


def test_run_all_runs_side_by_side(tiny_bert, tmp_path):
    make_results = _load("make_results")
    try:
        runs = [make_results.Experiment(f"tiny-{m}", None, (
            f"model={tiny_bert}", "dataset=sentiment", "num_clients=4", "clients_per_round=2",
            "max_steps=1", "max_length=16", "personalization_epochs=0", f"method={m}"))
            for m in ("spry", "fedmezo")]
        failed = make_results.run_all(runs, tmp_path, make_results.Budget(1, 120.0), jobs=2)
        assert failed == []
        for m in ("spry", "fedmezo"):
            assert make_results.finished(tmp_path / f"tiny-{m}")
            assert f"run_name=tiny-{m}" in (tmp_path / f"tiny-{m}.command").read_text()
    finally:
        del sys.modules["make_results"]


def test_a_rewrite_keeps_the_discussion_above_the_generated_part(decoders, tmp_path):
    doc = tmp_path / "decoders.md"
    decoders.write_doc(doc, tmp_path / "none")  # a new doc: title, then the tables
    first = doc.read_text()
    assert first.startswith("# Decoders and question answering\n") and "not run" in first
    discussion = "# Decoders\n\nWhat we saw, by hand.\n"
    doc.write_text(discussion + "\n" + first.split("\n", 1)[1].replace("not run", "stale"))
    decoders.write_doc(doc, tmp_path / "none")
    text = doc.read_text()
    assert text.startswith(discussion) and "stale" not in text and "not run" in text
    assert text.count(decoders.GENERATED) == 1
    hand_written = tmp_path / "by_hand.md"  # no GENERATED line: nothing of it is lost
    hand_written.write_text("# Notes\n\nKeep me.\n")
    decoders.write_doc(hand_written, tmp_path / "none")
    assert hand_written.read_text().startswith("# Notes\n\nKeep me.\n\n" + decoders.GENERATED)


@pytest.fixture
def learning():
    yield _load("learning")
    del sys.modules["learning"]


def test_learning_grid_gives_every_method_the_same_budget_and_valid_settings(learning):
    experiments = learning.experiments()
    grid = [n for n in experiments if not n.startswith(("long-", "knob-", "file-", "seed"))]
    # SST2_ONLY's variants run in SST-2 α=1.0 alone, or in the SST-2 cells ONLY_IN names.
    cells = {m: len(learning.ONLY_IN.get(m, ((),))) for m in learning.SST2_ONLY}
    assert len(grid) == 2 * 2 * len(learning.RUN_ORDER) - sum(4 - c for c in cells.values())
    assert not any(n.startswith("ag_news") for n in grid if n.endswith(learning.SST2_ONLY))
    assert not any(n.startswith("sst2-a0.1") for n in grid
                   if n.endswith(learning.SST2_ONLY) and cells[n.split("-", 2)[2]] == 1)
    assert "sst2-a0.1-split-tiny-lda" in grid
    files = len(learning.FILE_TASKS) * len(learning.FILE_ALPHAS) * len(learning.FILE_METHODS)
    seeded = len(learning.SEEDS) * sum(map(len, learning.SEED_CELLS.values()))
    long = sum(map(len, learning.LONG_CELLS.values()))
    assert len(experiments) == len(grid) + long + len(learning.KNOBS) + files + seeded
    for name in experiments:
        if name.startswith("seed"):  # the grid's row again under another run seed
            seed = int(name[4:].split("-")[0])
            assert Config.from_yaml(None, experiments[name]).seed == seed != 0, name
            grid_row = experiments[name.split("-", 1)[1]]
            assert [o for o in experiments[name] if not o.startswith(("seed=", "run_name="))] \
                == [o for o in grid_row if not o.startswith("run_name=")], name
    for name in experiments:
        if name.startswith("file-"):  # a local file, named through $SPRY_DATA_DIR
            assert any(o.startswith("dataset=$SPRY_DATA_DIR/") for o in experiments[name]), name
    for name, overrides in experiments.items():
        cfg = Config.from_yaml(None, overrides)  # every setting valid before any run
        rounds = (learning.LONG_ROUNDS if name.startswith("long-") else
                  learning.KNOB_ROUNDS if name.startswith("knob-") else 40)
        assert (cfg.rounds, cfg.clients_per_round, cfg.max_steps, cfg.num_clients) == (
            rounds, 10, 8, 100), name
        if not name.endswith("-paper"):  # the main table: one head treatment for all
            head_init = "lda" if "-lda" in name else "class_means"  # its own rows
            assert (cfg.head_init, cfg.pooling, cfg.head, cfg.head_lr) == (
                head_init, "auto", "shared", 1e-4), name


def test_learning_doc_is_written_from_the_kept_metrics(learning, tmp_path, monkeypatch):
    monkeypatch.setattr(learning, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(learning, "DOC", tmp_path / "learning.md")
    (tmp_path / "learning.md").write_text("# Hand-written\n\nkept\n")
    run = tmp_path / "results" / "sst2-a1.0-spry"
    run.mkdir(parents=True)
    rows = [{"round": 0, "test_accuracy": 0.7}, {"round": 10, "steps": 800, "client_seconds": 5,
                                                 "test_accuracy": 0.75}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert learning.main(["--doc-only"]) == 0
    text = (tmp_path / "learning.md").read_text()
    assert text.startswith("# Hand-written\n\nkept")
    assert "| Spry | 0.700 | 0.750 | 0.750 | 10 × 10 × 8 = 800 |" in text
    assert "| FedAvg (backprop) | not run |" in text
    learning.main(["--doc-only"])
    assert (tmp_path / "learning.md").read_text() == text  # rewriting is idempotent


def test_learning_seed_table_pairs_spry_with_each_method_by_seed(learning, tmp_path, monkeypatch):
    monkeypatch.setattr(learning, "RESULTS", tmp_path / "results")
    finals = {"spry-tiny-lda": (0.80, 0.82, 0.84), "head-lda": (0.79, 0.80, 0.81)}
    for method, accuracies in finals.items():
        for name, acc in zip(learning.seed_runs(method), accuracies):
            run = tmp_path / "results" / name
            run.mkdir(parents=True)
            rows = [{"round": 0, "test_accuracy": 0.7},
                    {"round": 10, "steps": 800, "test_accuracy": acc - 0.01},
                    {"round": 40, "steps": 2400, "test_accuracy": acc,
                     "test_loss": 0.4 if method == "spry-tiny-lda" else 0.5}]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = "\n".join(learning.seed_table())
    # final 0.80, 0.82, 0.84: mean 0.82, sample sd 0.02; rounds 10-40 averaged per run
    assert "| 0.800 (0.795) | 0.820 (0.815) | 0.840 (0.835) | 0.820 ± 0.020 | 0.815 ± 0.020 |" \
        in lines
    # paired by seed: +0.01, +0.02, +0.03
    assert "| Spry − head only, LDA head (seeds 0, 1, 2) | +0.010 | +0.020 | +0.030 | " \
        "+0.020 ± 0.010 | +0.020 ± 0.010 | -0.1000, -0.1000, -0.1000 |" in lines
    assert "FedFGD, TinyLoRA, no dropout, LDA head | not run | not run | not run |" in lines


@pytest.fixture
def regression():
    yield _load("regression")
    del sys.modules["regression"]


def test_regression_grid_gives_every_method_the_same_budget(regression, tmp_path, monkeypatch):
    # SNLI as scores, written from a tiny stand-in of the shared folder
    snli = tmp_path / "data" / "snli"
    snli.mkdir(parents=True)
    rows = [{"premise": "a", "hypothesis": "b", "label": lab}
            for lab in ("entailment", "neutral", "contradiction", "-")]
    (snli / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (snli / "test.tsv").write_text("premise\thypothesis\tlabel\nc\td\t2\ne\tf\t0\n")
    monkeypatch.setenv("SPRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(regression, "DATA", tmp_path / "out")
    train, test = regression.write_data()
    assert train.read_text().splitlines() == ["premise,hypothesis,score", "a,b,1.0", "a,b,0.5",
                                              "a,b,0.0"]
    assert test.read_text().splitlines()[1:] == ["c,d,0.0", "e,f,1.0"]
    assert len(regression.runs()) == len(regression.METHODS) * len(regression.SEEDS)
    for name, (method, seed) in regression.runs().items():
        cfg = Config.from_yaml(None, regression.overrides(name, train, test))
        assert cfg.seed == seed and cfg.method == ("backprop" if method == "fedavg" else
                                                   "spry" if method == "head" else method)
        assert cfg.task_head == "regression" and cfg.head_init == "lda", name
        assert (cfg.rounds, cfg.clients_per_round, cfg.max_steps, cfg.num_clients) == (
            20, 10, 8, 100), name
        assert (cfg.head, cfg.head_lr, cfg.server_optimizer) == ("shared", 1e-4, "fedavg"), name
    # the table: a kept run's numbers, "not run" for the rest, rewritten in place
    monkeypatch.setattr(regression, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(regression, "DOC", tmp_path / "regression.md")
    (tmp_path / "regression.md").write_text("# kept\n<!-- table:begin -->\n<!-- table:end -->\n"
                                            "<!-- seeds:begin -->\n<!-- seeds:end -->\n")
    kept = tmp_path / "results" / "spry"
    kept.mkdir(parents=True)
    rows = [{"round": 0, "test_pearson": 0.3, "test_spearman": 0.3, "test_rmse": 0.4},
            {"round": 20, "client_seconds": 7, "test_pearson": 0.35, "test_spearman": 0.34,
             "test_rmse": 0.39}]
    (kept / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert regression.main(["--doc-only"]) == 0
    text = (tmp_path / "regression.md").read_text()
    assert text.startswith("# kept\n") and "| head only" in text and "not run" in text
    assert "| Spry (recipe=spry defaults) | 0.300 / 0.4000 | 0.350 / 0.340 / 0.3900 |" in text
    assert "| Spry (recipe=spry defaults) | 0.350 | not run | not run |  |  |" in text
    assert regression.main(["--doc-only"]) == 0
    assert (tmp_path / "regression.md").read_text() == text  # rewriting is idempotent


@pytest.fixture
def multilabel():
    yield _load("multilabel")
    del sys.modules["multilabel"]


def test_multilabel_grid_builds_digests_and_gives_every_method_the_same_budget(
        multilabel, tmp_path, monkeypatch):
    # AG News, written as a tiny stand-in of the shared folder
    news = tmp_path / "data" / "ag_news"
    news.mkdir(parents=True)
    topics = ("World", "Sports", "Business", "Sci/Tech")
    (news / "train_subset_10k_description_only.tsv").write_text(
        "".join(f"train text {i}\t{topics[i % 4]}\n" for i in range(40)))
    (news / "test.csv").write_text(
        "".join(f'"{i % 4 + 1}","title {i}","test\\text {i}"\n' for i in range(40)))
    monkeypatch.setenv("SPRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(multilabel, "DATA", tmp_path / "out")
    monkeypatch.setattr(multilabel, "SIZES", {"train": 20, "test": 10})
    train, test = multilabel.write_data()
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert len(rows) == 20 and all(1 <= len(r["labels"]) <= 2 for r in rows)
    for r in rows:  # a digest's labels are the topics of the descriptions it joins
        parts = r["text"].split("train text ")[1:]
        assert set(r["labels"]) == {topics[int(p) % 4] for p in parts}
    held = [json.loads(line) for line in test.read_text().splitlines()]
    assert all(r["text"].startswith("test text") for r in held)  # AG News' `\` read as a space
    assert train.read_text() == multilabel.write_data()[0].read_text()  # seeded
    for name, (method, seed) in multilabel.runs().items():
        cfg = Config.from_yaml(None, multilabel.overrides(name, train, test))
        assert cfg.seed == seed and cfg.task_head == "multilabel" and cfg.head_init == "lda"
        assert (cfg.rounds, cfg.clients_per_round, cfg.max_steps, cfg.num_clients) == (
            20, 10, 8, 100), name
        assert (cfg.head, cfg.head_lr, cfg.server_optimizer) == ("shared", 1e-4, "fedavg"), name
    # the tables: a kept run's numbers, "not run" for the rest
    monkeypatch.setattr(multilabel, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(multilabel, "DOC", tmp_path / "multilabel.md")
    (tmp_path / "multilabel.md").write_text("<!-- table:begin -->\n<!-- table:end -->\n"
                                            "<!-- seeds:begin -->\n<!-- seeds:end -->\n")
    kept = tmp_path / "results" / "spry"
    kept.mkdir(parents=True)
    metrics = [{"round": 0, "test_accuracy": 0.6, "test_micro_f1": 0.8, "test_macro_f1": 0.8,
                "test_loss": 0.3},
               {"round": 20, "client_seconds": 7, "test_accuracy": 0.7, "test_micro_f1": 0.85,
                "test_macro_f1": 0.84, "test_loss": 0.25}]
    (kept / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    assert multilabel.main(["--doc-only"]) == 0
    text = (tmp_path / "multilabel.md").read_text()
    assert "| Spry (recipe=spry defaults) | 0.600 / 0.800 / 0.3000 | 0.700 / 0.850 / 0.840 / " \
           "0.2500 | 0.700 |" in text
    assert "| Spry (recipe=spry defaults) | 0.700 | not run | not run |  |  |" in text


@pytest.fixture
def tokens():
    yield _load("tokens")
    del sys.modules["tokens"]


def test_token_grid_reads_wnut_as_conll_files_with_one_budget(tokens, tmp_path, monkeypatch):
    # WNUT-17's two files, laid out as the public collection keeps them
    for split, name in tokens.SOURCES.items():
        (tmp_path / "ner" / split).mkdir(parents=True)
        (tmp_path / "ner" / split / name).write_text(f"{split}\tO\nParis\tB-location\n\n")
    monkeypatch.setenv("SPRY_NER_DIR", str(tmp_path / "ner"))
    monkeypatch.setattr(tokens, "DATA", tmp_path / "out")
    train, test = tokens.write_data()
    assert (train.name, test.name) == ("wnut17_train.conll", "wnut17_test.conll")
    assert test.read_text().startswith("test\tO")
    for name, (method, seed) in tokens.runs().items():
        cfg = Config.from_yaml(None, tokens.overrides(name, train, test))
        assert cfg.seed == seed and cfg.task_head == "token" and cfg.head_init == "lda"
        assert (cfg.rounds, cfg.clients_per_round, cfg.max_steps, cfg.num_clients) == (
            20, 10, 8, 30), name
        head_lr = 1e-3 if name in tokens.KNOBS else 1e-4  # the one knob changed
        assert (cfg.head, cfg.head_lr, cfg.server_optimizer) == ("shared", head_lr, "fedavg"), name
    monkeypatch.setattr(tokens, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(tokens, "DOC", tmp_path / "tokens.md")
    (tmp_path / "tokens.md").write_text("<!-- table:begin -->\n<!-- table:end -->\n"
                                        "<!-- seeds:begin -->\n<!-- seeds:end -->\n")
    kept = tmp_path / "results" / "spry"
    kept.mkdir(parents=True)
    metrics = [{"round": 0, "test_accuracy": 0.9, "test_entity_f1": 0.2, "test_loss": 0.5,
                "test_entity_precision": 0.2, "test_entity_recall": 0.2},
               {"round": 20, "client_seconds": 7, "test_accuracy": 0.95, "test_entity_f1": 0.3,
                "test_entity_precision": 0.4, "test_entity_recall": 0.24, "test_loss": 0.25}]
    (kept / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    assert tokens.main(["--doc-only"]) == 0
    text = (tmp_path / "tokens.md").read_text()
    assert ("| Spry (recipe=spry, head_lr=1e-4) | 0.200 / 0.900 / 0.5000 | "
            "0.300 (0.400 / 0.240) / 0.950 / 0.2500 | 0.300 |") in text
    assert "| Spry (recipe=spry, head_lr=1e-4) | 0.300 | not run | not run |  |  |" in text
    monkeypatch.delenv("SPRY_NER_DIR")
    with pytest.raises(SystemExit, match="set SPRY_NER_DIR"):
        tokens.write_data()
