"""What a new user meets first: the settings they can find, their own files read as they
meant them (or refused with the line to fix), and output that says what a run did."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spry import settings
from spry.cli import _parse, _summary, main
from spry.config import Config, ConfigError
from spry.data import load_task
from spry.data.sources import stratified_split, Examples
from spry.experiment import run

ROOT = Path(__file__).resolve().parent.parent


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _nli_rows(n: int = 40) -> list[dict]:
    labels = ("entailment", "neutral", "contradiction")
    return [{"premise": f"a person is walking {i}", "hypothesis": f"someone moves {i % 5}",
             "label": labels[i % 3]} for i in range(n)]


# ------------------------------------------------------------------------- settings ---
def test_run_help_lists_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for s in settings.settings():
        assert f"    {s.name}={s.default}\n" in text, s.name
    assert "pair_column=none" in text and "test_file=none" in text and "threads=none" in text
    assert "server_lr=1.0 (fedavg, fedavgm), 0.01 (fedadam, fedyogi)" in text


def test_every_setting_has_a_docstring_and_a_section():
    fields = {f.name for f in dataclasses.fields(Config)}
    described = {s.name: s for s in settings.settings()}
    assert set(described) == fields
    for s in described.values():
        assert s.doc and s.line.endswith((".", ")")), s.name
        assert s.section != "general" or s.name == "recipe", s.name
    from spry.data.recipes import RECIPES

    for recipe in ("sentiment", *RECIPES):  # the dataset setting names every recipe
        assert recipe in described["dataset"].doc, recipe
    assert described["tangent_sharing"].line.endswith("jvp; `batch`: one tangent for the whole "
                                                      "batch (the paper).")  # not cut at "al."


def test_readme_and_settings_doc_are_written_from_the_schema():
    readme = (ROOT / "README.md").read_text()
    assert settings.with_readme_block(readme) == readme, \
        "README.md's settings table is stale: run python scripts/settings_table.py"
    assert (ROOT / "docs" / "settings.md").read_text() == settings.settings_doc(), \
        "docs/settings.md is stale: run python scripts/settings_table.py"
    for key in ("pair_column", "test_file", "test_fraction", "threads"):
        assert f"| `{key}` |" in readme


def test_defaults_follow_the_choices_they_depend_on():
    assert Config(server_optimizer="fedavg").server_lr == 1.0
    assert Config(server_optimizer="fedyogi").server_lr == 1e-2
    assert Config(server_optimizer="fedadam", server_lr=0.5).server_lr == 0.5  # explicit wins
    assert Config(method="backprop", peft="lora").client_lr == 1e-3
    assert Config(method="spry", peft="lora").client_lr == 1e-4
    assert Config(method="backprop", recipe="paper").client_lr == 1e-4
    # recipe=spry trains TinyLoRA at 1e-2 with Adam(W), and a class-mean head at 1e-4
    assert (Config().peft, Config().client_lr, Config().head_lr) == ("tinylora", 1e-2, 1e-4)
    assert Config(client_optimizer="sgd").client_lr == 1e-4
    assert Config(recipe="paper").peft == "lora" and Config(recipe="paper").head_lr is None
    assert Config(head_init="random").head_lr is None  # None: the head takes client_lr
    # personalized accuracy reuses the round's training under recipe=spry, except where
    # clients keep no model of their own (per_iteration); the paper retrains F epochs
    assert Config().personalization == "round" and Config(recipe="paper").personalization == \
        "global"
    assert Config(communication="per_iteration",
                  server_optimizer="fedavg").personalization == "global"
    cfg = Config(peft="lora")
    moved = cfg.replace(server_optimizer="fedavg", method="backprop")
    assert (moved.server_lr, moved.client_lr) == (1.0, 1e-3)  # defaulted: follows the choice
    kept = Config(server_lr=0.2).replace(server_optimizer="fedavg")
    assert kept.server_lr == 0.2  # set by the user: kept
    assert cfg.defaulted["server_lr"] == "server_optimizer=fedyogi"
    assert "client_lr" not in Config(client_lr=1e-3).defaulted


def test_config_yaml_says_which_defaults_followed_a_choice_and_reads_back():
    cfg = Config(server_optimizer="fedavg", label_names=["a: b", "null"])
    text = settings.to_yaml(cfg)
    assert "server_lr: 1.0  # default for server_optimizer=fedavg\n" in text
    assert ("client_lr: 0.01  # default for recipe=spry, peft=tinylora, "
            "client_optimizer=adamw\n") in text
    assert "peft: tinylora  # default for recipe=spry\n" in text
    assert "server_optimizer: fedavg\n" in text
    assert Config.from_flat(yaml.safe_load(text)) == cfg


def test_overrides_are_taken_on_either_side_of_an_option(capsys):
    assert _parse(["run", "rounds=2", "--quiet", "seed=3"]).overrides == ["rounds=2", "seed=3"]
    with pytest.raises(SystemExit):
        _parse(["run", "rounds=2", "--quiet", "--nope"])
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["run", "seed=1", "--quiet", "rounds"])  # not key=value
    assert "unrecognized arguments: rounds" in capsys.readouterr().err


def test_threads_sets_torch_threads_for_the_run(tiny_config):
    before = torch.get_num_threads()
    try:
        run(tiny_config(rounds=1, threads=1, personalization_epochs=0), progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads: must be > 0"):
        Config(threads=0)


# ---------------------------------------------------------------------- data layout ---
def test_sentence_pairs_are_detected_from_the_usual_layouts(tmp_path):
    task = load_task(Config(dataset=_jsonl(tmp_path / "nli.jsonl", _nli_rows())))
    assert task.train.pairs is not None and task.train.pairs[0] == "someone moves 0"
    assert task.columns == {"text_column": "premise", "pair_column": "hypothesis",
                            "label_column": "label"}
    rows = [{"question": f"what {i}?", "passage": f"this {i}", "label": i % 2} for i in range(6)]
    qa = load_task(Config(dataset=_jsonl(tmp_path / "qa.jsonl", rows)))
    assert qa.columns["text_column"] == "question" and qa.columns["pair_column"] == "passage"
    single = load_task(Config(dataset=_jsonl(tmp_path / "s.jsonl",
                                             [{"text": "x", "label": 0}, {"text": "y", "label": 1}])))
    assert single.train.pairs is None and single.columns["pair_column"] is None
    named = load_task(Config(dataset=str(tmp_path / "nli.jsonl"), text_column="hypothesis",
                             pair_column="premise"))
    assert named.train.texts[0] == "someone moves 0"  # explicit columns win


def test_test_fraction_splits_one_file_seeded_and_stratified(tmp_path):
    path = _jsonl(tmp_path / "nli.jsonl", _nli_rows(60))
    task = load_task(Config(dataset=path, test_fraction=0.25))
    assert (len(task.train), len(task.test)) == (45, 15)
    assert sorted(task.test.labels) == [0] * 5 + [1] * 5 + [2] * 5  # stratified
    again = load_task(Config(dataset=path, test_fraction=0.25))
    assert again.test.texts == task.test.texts
    other = load_task(Config(dataset=path, test_fraction=0.25, seed=1))
    assert other.test.texts != task.test.texts
    assert not set(task.test.texts) & set(task.train.texts)  # each premise is unique
    with pytest.raises(ConfigError, match="test_fraction: .* already has a held-out test split"):
        load_task(Config(dataset=path, test_file=path, test_fraction=0.2))
    with pytest.raises(ConfigError, match="test_fraction: must be in"):
        stratified_split(Examples(["a", "b"], [0, 1]), 1.5, 0)


def test_config_yaml_records_the_columns_and_labels_the_run_used(tiny_bert, tmp_path):
    path = _jsonl(tmp_path / "nli.jsonl", _nli_rows())
    cfg = Config(model=tiny_bert, dataset=path, test_fraction=0.25, num_clients=2,
                 clients_per_round=2, rounds=1, max_steps=1, max_length=16,
                 personalization_epochs=0, output_dir=str(tmp_path / "runs"), run_name="nli")
    out = run(cfg, progress=False)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["text_column"] == "premise" and saved["pair_column"] == "hypothesis"
    assert saved["label_column"] == "label"
    assert saved["label_names"] == ["contradiction", "entailment", "neutral"]
    assert Config.from_flat(saved).label_names == saved["label_names"]  # it reads back


# ------------------------------------------------------------------------- rounds ---
def test_the_final_round_is_evaluated_whatever_eval_every(tiny_config):
    out = run(tiny_config(rounds=3, eval_every=2, personalization_epochs=0), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows if "generalized_accuracy" in r] == [2, 3]


def test_a_wall_cap_ends_with_an_evaluated_round(tiny_config, caplog):
    with caplog.at_level(logging.INFO, logger="spry.experiment"):
        out = run(tiny_config(rounds=5, eval_every=4, max_wall_seconds=0.01,
                              personalization_epochs=0), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1]  # the first round always runs
    assert rows[-1]["generalized_accuracy"] is not None and "test_accuracy" in rows[-1]
    assert "another round would end past max_wall_seconds" in caplog.text


# ------------------------------------------------------------------------- output ---
def test_quiet_cli_run_says_what_it_does_without_library_noise(tiny_bert, tmp_path):
    """A subprocess, as a user runs it: the libraries' bars, LOAD REPORT and warnings stay
    out (pooling=model gives the architecture's head, whose weights load as missing)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    done = subprocess.run(
        [sys.executable, "-m", "spry.cli", "run", "--quiet", f"model={tiny_bert}",
         "recipe=paper", "dataset=sentiment", "num_clients=4", "clients_per_round=2",
         "rounds=1", "max_steps=1", "max_length=16", "personalization_epochs=0",
         f"output_dir={tmp_path}", "run_name=quiet"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    for noise in ("Loading weights", "LOAD REPORT", "FutureWarning", "it/s]"):
        assert noise not in text, noise
    for said in ("reading the data: sentiment", "majority", "dealing 2000 examples to 4 clients",
                 "round 1/1: loss=", "test accuracy"):
        assert said in text, said


def test_a_run_says_when_max_length_cuts_most_texts(tiny_bert, tmp_path, caplog):
    from spry.experiment import build

    long = [{"text": " ".join(f"word{j}" for j in range(40)) + f" {i}", "label": i % 2}
            for i in range(24)]
    path = _jsonl(tmp_path / "long.jsonl", long)
    for max_length, said in ((16, True), (128, False)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="spry.experiment"):
            build(Config(model=tiny_bert, dataset=path, num_clients=2, clients_per_round=2,
                         max_length=max_length, output_dir=str(tmp_path)))
        assert ("100% of the training texts reach max_length=16 tokens" in caplog.text) is said



def test_a_file_dealt_too_thin_to_score_is_refused_and_small_clients_are_named(
        tiny_bert, tmp_path, caplog):
    from spry.experiment import build

    rows = [{"text": f"{'good' if i % 2 else 'bad'} film {i}", "label": i % 2} for i in range(40)]
    path = _jsonl(tmp_path / "small.jsonl", rows)
    # 2 examples a client, no held-out split: client_test_fraction of 2 rounds to none
    with pytest.raises(ConfigError, match=r"test_fraction: nothing would score the model: small "
                                          r"has no held-out split.*40 dealt to 20 clients: 2–2 "
                                          r"each.*test_fraction=0.2"):
        build(Config(model=tiny_bert, dataset=path, num_clients=20, clients_per_round=2,
                     output_dir=str(tmp_path)))
    for clients, said in ((4, True), (2, False)):  # 8 and 16 examples a client, batch 8
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="spry.experiment"):
            build(Config(model=tiny_bert, dataset=path, num_clients=clients,
                         clients_per_round=2, test_fraction=0.2, dirichlet_alpha=100.0,
                         output_dir=str(tmp_path)))
        assert ("(the median of 4 clients), fewer than batch_size=8" in caplog.text) is said

def test_progress_within_a_round_names_the_clients_done(tiny_config, caplog, monkeypatch):
    monkeypatch.setattr("spry.progress.CLIENT_LOG_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="spry.experiment"):
        run(tiny_config(rounds=1, personalization_epochs=0), progress=False)
    assert "round 1: 1/4 clients trained" in caplog.text
    assert "round 1: 4/4 clients trained" in caplog.text


def test_one_class_predictions_are_flagged(tiny_config, tmp_path, capsys):
    out = run(tiny_config(rounds=1, personalization_epochs=0, client_lr=1e-9), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert isinstance(rows[-1]["test_predicted_classes"], int)
    fake = tmp_path / "fake"
    fake.mkdir()
    row = {**rows[-1], "test_accuracy": 0.505, "test_predicted_classes": 1}
    (fake / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    _summary(fake)
    printed = capsys.readouterr().out
    assert printed.index("test accuracy 0.5050") < printed.index("generalized accuracy")
    assert "predicts one class for every held-out test example" in printed
    row["test_predicted_classes"] = 2
    (fake / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    _summary(fake)
    assert "predicts one class" not in capsys.readouterr().out


# ---------------------------------------------------------------------- data errors ---
@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', "line 2 has no value in "
     "column 'label'"),
    ('{"text": "a", "label": "x"}\n\n{"text": "b"}\n', "line 3 has no value in column 'label'"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": ""}\n', "line 2 has an empty label"),
    ('{"text": "a", "label": "x"}\n{"text": "  ", "label": "y"}\n', "text_column: .* line 2 has "
     "an empty text in column 'text'"),
    ('{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n', "line 2 has no value in "
     "column 'text'"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"\n', "line 2 is not valid JSON"),
    ('{"text": "a", "label": "x"}\n[1, 2]\n', "line 2 is a JSON list, not an object"),
    ("", "is empty"),
    ("\n  \n", "is empty"),
])
def test_jsonl_errors_name_the_line_and_the_problem(tmp_path, content, message):
    _refused(tmp_path / "data.jsonl", content, message)


def _refused(path: Path, content: str, message: str, **settings) -> None:
    """`content` written to `path`, loading the task fails with `message`."""
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_task(Config(**{"dataset": str(path), **settings}))


def test_csv_errors_count_lines_as_an_editor_does(tmp_path):
    path = tmp_path / "data.csv"
    _refused(path, "text,label\ngood,pos\n,neg\n", "line 3 has an empty text")
    path.write_text("text,label\ngood,pos\nbad,neg\n")
    test = tmp_path / "test.csv"
    _refused(test, "text,label\nok,pos\nhm,meh\n", r"test.csv line 3 has label 'meh', outside",
             dataset=str(path), test_file=str(test))
    _refused(test, "text,label\nok,pos\nhm,\n", r"test.csv line 3 has an empty label",
             dataset=str(path), test_file=str(test))


def test_a_json_array_file_names_rows_and_its_parse_error_line(tmp_path):
    path = tmp_path / "data.json"
    _refused(path, '[\n{"text": "a", "label": 0},\n{"text": "b", "label": 1},\n]\n',
             "line 4 is not valid JSON")
    _refused(path, '[{"text": "a", "label": 0}, {"text": "", "label": 1}]',
             "row 2 has an empty text")


def test_the_live_bar_shows_clients_done_within_a_round():
    from spry.progress import Progress

    view = Progress(total=3, bar=True)
    view.begin_round(2)
    view.client_done(3, 10)
    assert "round 2: 3/10 clients trained" in str(view.bar.postfix)
    view.close()


def test_plots_lead_with_held_out_test_accuracy_and_say_what_each_line_is(tmp_path):
    from spry.plots import plot

    d = tmp_path / "run"
    d.mkdir()
    rows = [{"round": r, "elapsed_seconds": 10.0 * r, "bytes_up_total": 100 * r,
             "generalized_accuracy": 0.5 + r / 10, "test_accuracy": 0.4 + r / 10}
            for r in (1, 2)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    svg = plot([d], tmp_path / "fig", formats=("svg",))[0].read_text()
    assert "held-out test" in svg and "generalized (sampled clients' test splits)" in svg
    only_test = tmp_path / "t"
    only_test.mkdir()
    (only_test / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "generalized_accuracy"}) + "\n"
        for r in rows))
    svg = plot([only_test], tmp_path / "fig2", formats=("svg",))[0].read_text()
    assert "held-out test accuracy" in svg  # one accuracy: the y axis names it


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_device_this_machine_lacks_is_refused_before_a_run_directory_is_made(tmp_path,
                                                                              capsys):
    for device, said in (("cuda", "sees no CUDA GPU"), ("tpu", "not a torch device")):
        assert main(["run", f"device={device}", f"output_dir={tmp_path / 'runs'}"]) == 2
        err = capsys.readouterr().err
        assert f"device: '{device}'" in err and said in err, err
    assert not (tmp_path / "runs").exists()
