"""End to end: the CLI and `experiment.run` on tiny models and the generated task."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from spry.cli import main
from spry.experiment import run
from spry.metrics import read_metrics


def test_two_rounds_end_to_end(tiny_config):
    out = run(tiny_config(rounds=2), progress=False)
    rows = read_metrics(out)
    assert [r["round"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["generalized_accuracy"] <= 1.0
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert 0.0 <= row["personalized_accuracy"] <= 1.0
        assert row["bytes_up"] > 0 and row["bytes_down"] > row["bytes_up"]
        assert row["steps"] > 0 and row["wall_seconds"] > 0
    weights = load_file(str(out / "trainable.safetensors"))
    units = json.loads((out / "units.json").read_text())
    assert set(weights) == {p for u in units for p in u["params"]}
    assert (out / "config.yaml").exists()


def test_cli_run_and_overrides(tiny_bert, tmp_path, capsys):
    code = main(["run", "--quiet", f"model={tiny_bert}", "num_clients=4", "clients_per_round=2",
                 "rounds=1", "max_steps=1", "personalization_epochs=0", "max_length=16",
                 f"output_dir={tmp_path}", "run_name=cli"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "generalized accuracy" in printed
    # the next step a user takes with a classifier: its command, with this run's directory
    hint = f"labels for new texts: spry predict {tmp_path / 'cli'} <file>"
    assert printed.splitlines()[-1] == hint
    # Round 0 (the class-mean head, forward only), then the one training round.
    assert [r["round"] for r in read_metrics(tmp_path / "cli")] == [0, 1]


def test_cli_rejects_unknown_key_before_work(capsys):
    assert main(["run", "no_such_key=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(tiny_config):
    cfg = tiny_config(rounds=1, personalization_epochs=0)
    run(cfg, progress=False)
    with pytest.raises(Exception, match="already holds a run"):
        run(cfg, progress=False)


def test_engine_flower_starts_through_the_runner_only(tiny_config, tmp_path):
    # The round loop runs Flower's engine when Flower's ServerApp hands it one; started
    # directly it says where to start instead, and a Flower run cannot be resumed yet.
    import pytest

    from spry.config import ConfigError
    from spry.experiment import run as loop
    from spry.runner import run

    cfg = tiny_config(engine="flower")
    with pytest.raises(ConfigError, match="spry.runner.run"):
        loop(cfg, progress=False)
    with pytest.raises(ConfigError, match="--resume: engine=flower"):
        run(cfg, progress=False, resume_dir=tmp_path)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_replicated_units_train_on_more_clients_and_average(tiny_config):
    # Each unit to two of the round's four clients: twice the units per client, and the
    # uplink doubles with them (the head, split here, is a unit too).
    one = read_metrics(run(tiny_config(rounds=1, personalization_epochs=0, run_name="r1"),
                           progress=False))[-1]
    two = read_metrics(run(tiny_config(rounds=1, personalization_epochs=0, run_name="r2",
                                       unit_replicas=2), progress=False))[-1]
    assert two["units_per_client"] == 2 * one["units_per_client"]
    assert two["bytes_up"] == 2 * one["bytes_up"]
    assert 0.0 <= two["test_accuracy"] <= 1.0


def test_round_zero_says_how_far_it_is(tiny_config, monkeypatch, caplog):
    """Round 0 visits every client before the first round's bar: it logs its progress."""
    import logging

    from spry.engines import local

    monkeypatch.setattr(local, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="spry"):
        run(tiny_config(rounds=1, head_init="class_means", head="shared",
                        personalization_epochs=0), progress=False)
    text = caplog.text
    assert "round 0: class means of the pooled features of 8 clients" in text
    assert "round 0: 1/8 clients" in text and "round 0: 7/8 clients" in text
    assert "round 0: 8/8 clients" not in text  # the head's own line follows instead
