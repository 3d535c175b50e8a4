"""Reliability: exact resume, client failures, hostile updates, non-finite steps, determinism.

Failures are injected through the one call a client's work goes through:
`spry.engines.node.train_client` (per_epoch, engine=local) and
`spry.per_iteration.engine.scalar_step` (per_iteration). A run is "killed" by raising a
BaseException there, which no engine catches (it stands for SIGKILL / Ctrl-C).

"Identical metrics.jsonl" means every field except the timings, whose names end in
`_seconds` (wall-clock time legitimately differs between two runs).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import spry.engines.local
import spry.per_iteration.engine
import spry.engines.node
from spry import checkpoint
from spry.cli import main
from spry.config import Config, ConfigError
from spry.experiment import RunStopped, build, run
from spry.metrics import read_metrics
from spry.per_iteration import LocalStepEngine, PerIterationServer
from spry.resume import resume_config
from spry.server import Server
from spry.seeds import derive_seed
from spry.validation import check_update


class Killed(BaseException):
    """Stands for the process dying: no engine catches it."""


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]


def assert_same_run(a, b) -> None:
    assert without_timings(read_metrics(a)) == without_timings(read_metrics(b))
    wa, wb = load_file(str(a / "trainable.safetensors")), load_file(str(b / "trainable.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def fail_client(monkeypatch, when, error=RuntimeError("client crashed")):
    """Make `train_client` raise `error` for the instructions where `when(ins)` holds."""
    real = spry.engines.node.train_client

    def train_client(model, initial, state, ins, *args, **kwargs):
        if when(ins):
            raise error
        return real(model, initial, state, ins, *args, **kwargs)

    monkeypatch.setattr(spry.engines.node, "train_client", train_client)


def fail_step(monkeypatch, when, error=RuntimeError("client crashed")):
    """Make per-iteration `scalar_step` raise where `when(client_id, step, round_seed)`."""
    real = spry.per_iteration.engine.scalar_step

    def scalar_step(model, batch, unit_params, cfg, round_seed, client_id, step):
        if when(client_id, step, round_seed):
            raise error
        return real(model, batch, unit_params, cfg, round_seed, client_id, step)

    monkeypatch.setattr(spry.per_iteration.engine, "scalar_step", scalar_step)


# --- 1. checkpoints and exact resume ------------------------------------------------------
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / checkpoint.CHECKPOINT
    checkpoint.save(path, {"format": checkpoint.FORMAT_VERSION, "round": 1})
    real_save = torch.save

    def crash_mid_write(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError):
        checkpoint.save(path, {"format": checkpoint.FORMAT_VERSION, "round": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert checkpoint.load(path)["round"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.CHECKPOINT]


RESUME_CASES = {
    # FedYogi moments, kept client AdamW state and stale local context all carry over.
    "per_epoch": dict(keep_client_optimizer=True, context="local", head="shared"),
    "fwdllm": dict(method="fwdllm", fwdllm_max_perturbations=2, fwdllm_candidates=2),
    "per_iteration": dict(communication="per_iteration", server_optimizer="fedavg",
                          client_lr=1e-2, max_replay_lag=3),
}


@pytest.mark.parametrize("case,killed_in", [("per_epoch", 3), ("per_epoch", 4),
                                            ("fwdllm", 3), ("per_iteration", 3)])
def test_killed_run_resumes_to_the_same_weights_and_metrics(tiny_config, monkeypatch, case,
                                                            killed_in):
    """Killed in round 3 (right after the round-2 checkpoint) or in round 4 (round 3's row
    is already written and must be dropped and redone), then resumed."""
    settings = dict(rounds=4, checkpoint_every=2, personalization_epochs=0, num_clients=6,
                    clients_per_round=3, eval_every=2, **RESUME_CASES[case])
    full = run(tiny_config(run_name="full", **settings), progress=False)

    cfg = tiny_config(run_name="killed", **settings)
    with monkeypatch.context() as m:
        if case == "per_iteration":
            kill_seed = derive_seed(cfg.seed, "round", killed_in)
            fail_step(m, lambda cid, step, round_seed: round_seed == kill_seed, Killed())
        else:
            fail_client(m, lambda ins: ins.server_round == killed_in, Killed())
        with pytest.raises(Killed):
            run(cfg, progress=False)
    killed = full.parent / "killed"
    assert len(read_metrics(killed)) == killed_in - 1
    assert checkpoint.load(killed / checkpoint.CHECKPOINT)["round"] == 2

    resumed = run(resume_config(killed), progress=False, resume_dir=killed)
    assert resumed == killed
    assert_same_run(full, resumed)


def test_cli_resume_takes_only_rounds_and_extends_a_finished_run(tiny_config, capsys):
    settings = dict(checkpoint_every=1, personalization_epochs=0)
    out = run(tiny_config(rounds=2, **settings), progress=False)
    assert main(["run", "--quiet", "--resume", str(out), "seed=3"]) == 2
    assert "only rounds= may change" in capsys.readouterr().err
    assert main(["run", "--quiet", "--resume", str(out)]) == 2
    assert "resume with rounds=<more than 2>" in capsys.readouterr().err
    assert main(["run", "--quiet", "--resume", str(out), "rounds=3"]) == 0
    assert [r["round"] for r in read_metrics(out)] == [1, 2, 3]
    assert Config.from_yaml(out / "config.yaml").rounds == 3
    # Going on for one more round is the same as having asked for three from the start.
    straight = run(tiny_config(rounds=3, run_name="straight", **settings), progress=False)
    assert_same_run(straight, out)


def test_resume_needs_a_checkpoint(tiny_config):
    out = run(tiny_config(rounds=1, personalization_epochs=0), progress=False)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        run(resume_config(out, ["rounds=2"]), progress=False, resume_dir=out)


def test_resume_rejects_a_changed_config(tiny_config):
    out = run(tiny_config(rounds=1, checkpoint_every=1, personalization_epochs=0),
              progress=False)
    changed = resume_config(out, ["rounds=2"]).replace(client_lr=0.5)
    with pytest.raises(ConfigError, match=r"\['client_lr'\] differ"):
        run(changed, progress=False, resume_dir=out)


# --- 6. determinism ---------------------------------------------------------------------
def test_same_config_and_seed_give_identical_metrics(tiny_config):
    a = run(tiny_config(run_name="a", rounds=2), progress=False)
    b = run(tiny_config(run_name="b", rounds=2), progress=False)
    assert_same_run(a, b)
    c = run(tiny_config(run_name="c", rounds=2, seed=1, personalization_epochs=0), progress=False)
    assert without_timings(read_metrics(a)) != without_timings(read_metrics(c))


# --- 2. client failures -----------------------------------------------------------------
def test_a_failing_client_does_not_end_the_round(tiny_config, monkeypatch):
    cfg = tiny_config(personalization_epochs=0)
    exp = build(cfg)
    instructions = exp.server.configure_train(1)
    victim = instructions[0]
    fail_client(monkeypatch, lambda ins: ins.client_id == victim.client_id)
    updates = exp.engine.train(instructions)
    assert victim.client_id not in {u.client_id for u in updates}
    assert exp.engine.failures == {victim.client_id: "RuntimeError: client crashed"}
    before = {n: t.clone() for n, t in exp.server.weights.items()}
    trained = exp.server.aggregate_train(updates, instructions)
    for name in victim.unit_params:  # its units keep their values
        assert name not in trained
        assert torch.equal(exp.server.weights[name], before[name])
    assert trained  # the others were averaged in

    out = run(cfg, progress=False)
    rows = read_metrics(out)
    assert len(rows) == cfg.rounds
    first = rows[0]
    assert first["failed_clients"] == [victim.client_id]
    assert first["failure_reasons"] == [{"client": victim.client_id,
                                         "reason": "RuntimeError: client crashed"}]
    assert victim.client_id not in first["clients"] and not first["all_clients_failed"]


class FakeClock:
    """Stands in for the `time` module of spry.engines.local: a victim takes 10 s."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_a_client_over_the_timeout_counts_as_failed(tiny_config, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(spry.engines.local, "time", clock)
    real = spry.engines.node.train_client
    victim = []

    def slow(model, initial, state, ins, *args):
        update = real(model, initial, state, ins, *args)
        if not victim:
            victim.append(ins.client_id)
            clock.now += 10.0
        return update

    monkeypatch.setattr(spry.engines.node, "train_client", slow)
    row = read_metrics(run(tiny_config(rounds=1, personalization_epochs=0,
                                       client_timeout_seconds=5.0), progress=False))[0]
    assert row["failed_clients"] == victim
    assert row["failure_reasons"][0]["reason"] == "timed out (client_timeout_seconds=5)"
    # Without the option the same slow client is waited for.
    victim.clear()
    row = read_metrics(run(tiny_config(rounds=1, personalization_epochs=0, run_name="wait"),
                           progress=False))[0]
    assert row["failed_clients"] == [] and victim[0] in row["clients"]


def test_every_client_failing_continues_or_stops_as_configured(tiny_config, monkeypatch, capsys):
    fail_client(monkeypatch, lambda ins: True)
    out = run(tiny_config(personalization_epochs=0), progress=False)
    rows = read_metrics(out)
    assert [r["all_clients_failed"] for r in rows] == [True, True]
    assert all(r["train_loss"] is None and len(r["failed_clients"]) == 4 for r in rows)
    initial = build(tiny_config()).server.weights
    final = load_file(str(out / "trainable.safetensors"))
    assert all(torch.equal(final[n], t) for n, t in initial.items())

    stop = tiny_config(personalization_epochs=0, on_all_clients_failed="stop", run_name="stop")
    with pytest.raises(RunStopped, match="on_all_clients_failed=stop"):
        run(stop, progress=False)
    assert len(read_metrics(out.parent / "stop")) == 1
    assert main(["run", "--quiet", f"model={stop.model}", "num_clients=8", "clients_per_round=2", "max_steps=1",
                 "max_length=16", "personalization_epochs=0", "on_all_clients_failed=stop",
                 f"output_dir={stop.output_dir}", "run_name=cli"]) == 1
    assert "on_all_clients_failed=stop" in capsys.readouterr().err


def test_per_iteration_client_failure_is_recorded_and_the_round_goes_on(tiny_config,
                                                                         monkeypatch):
    cfg = tiny_config(communication="per_iteration", server_optimizer="fedavg", rounds=1,
                      personalization_epochs=0, max_steps=3)
    exp = build(cfg)
    victim = exp.server.configure_train(1)[0].client_id
    fail_step(monkeypatch, lambda cid, step, _: cid == victim and step == 1)
    row = exp.driver.run_round(1, exp.engine)
    assert row["failed_clients"] == [victim]
    assert row["failure_reasons"] == [{"client": victim, "reason": "RuntimeError: client crashed"}]
    assert row["uploads"] == 3 * 4 - 2  # the victim sat out steps 1 and 2
    assert not row["all_clients_failed"]
    assert all(torch.isfinite(t).all() for t in exp.server.weights.values())


# --- 3. hostile updates -----------------------------------------------------------------
def _hostile(kind: str, update, instructions, server):
    """A copy of `update` (from the first sampled client) turned hostile in one way."""
    other = next(p for i in instructions[1:] for p in i.unit_params
                 if p not in instructions[0].unit_params)
    w = {n: t.clone() for n, t in update.weights.items()}
    name = next(iter(w))
    if kind == "nan":
        w[name].view(-1)[0] = float("nan")
    elif kind == "inf":
        w[name].view(-1)[-1] = float("inf")
    elif kind == "shape":
        w[name] = torch.cat([w[name], w[name]])
    elif kind == "dtype":
        w[name] = w[name].double()
    elif kind == "not a tensor":
        w[name] = w[name].tolist()
    elif kind == "unassigned unit":
        w[other] = server.weights[other] + 0.1
    elif kind == "unknown tensor":
        w["base_model.model.bert.embeddings.word_embeddings.weight"] = torch.zeros(3)
    elif kind == "norm":
        w[name] = w[name] + 10.0
    elif kind == "negative examples":
        return dataclasses.replace(update, weights=w, num_examples=-5)
    elif kind == "not sampled":
        sampled = {i.client_id for i in instructions}
        outsider = next(c for c in range(100) if c not in sampled)
        return dataclasses.replace(update, client_id=outsider)
    return dataclasses.replace(update, weights=w)


HOSTILE = {"nan": "non-finite", "inf": "non-finite", "shape": "has shape",
           "dtype": "has dtype", "not a tensor": "not a tensor",
           "unassigned unit": "not assigned to it", "unknown tensor": "not a trainable tensor",
           "norm": "above max_update_norm", "negative examples": "example count",
           "not sampled": "was not sampled", "duplicate": "second update"}


def test_server_rejects_each_kind_of_hostile_update(tiny_config):
    exp = build(tiny_config(personalization_epochs=0, max_update_norm=1.0))
    instructions = exp.server.configure_train(1)
    honest = exp.engine.train(instructions)
    victim = instructions[0].client_id
    assert honest[0].client_id == victim

    def aggregate(updates):
        server = copy.deepcopy(exp.server)
        server.aggregate_train(updates, instructions)
        return server

    everyone = aggregate(honest)
    assert everyone.rejected == []  # honest updates pass, the norm bound included
    without_victim = aggregate(honest[1:]).weights
    for kind, reason in HOSTILE.items():
        if kind == "duplicate":
            updates, expected = [*honest, honest[0]], everyone.weights
        else:
            updates, expected = [_hostile(kind, honest[0], instructions, exp.server),
                                 *honest[1:]], without_victim
        server = aggregate(updates)
        assert len(server.rejected) == 1, kind
        assert server.rejected[0].client_id in (victim, updates[0].client_id)
        assert reason in server.rejected[0].reason, (kind, server.rejected[0].reason)
        for name, value in expected.items():  # never averaged in
            assert torch.equal(server.weights[name], value), (kind, name)


def test_rejected_update_is_logged_in_metrics(tiny_config, monkeypatch):
    real = spry.engines.node.train_client

    def poisoned(model, initial, state, ins, *args):
        update = real(model, initial, state, ins, *args)
        if ins.client_id == victim:
            update.weights = {n: t * float("nan") for n, t in update.weights.items()}
        return update

    cfg = tiny_config(rounds=1, personalization_epochs=0)
    victim = build(cfg).server.configure_train(1)[0].client_id
    monkeypatch.setattr(spry.engines.node, "train_client", poisoned)
    row = read_metrics(run(cfg, progress=False))[0]
    assert [r["client"] for r in row["rejected_updates"]] == [victim]
    assert "non-finite" in row["rejected_updates"][0]["reason"]
    assert victim not in row["clients"] and row["failed_clients"] == []


def test_check_update_skips_the_assignment_check_without_instructions():
    current = {"a": torch.zeros(2), "b": torch.zeros(3)}
    assert check_update(0, {"b": torch.ones(3)}, 4, current, assigned=None) is None
    assert "not assigned" in check_update(0, {"b": torch.ones(3)}, 4, current, assigned={"a"})
    assert "4.472" in check_update(0, {"a": torch.full((2,), 2.0), "b": torch.full((3,), 2.0)},
                                   4, current, None, max_norm=3.0)


HOSTILE_UPLOADS = {"not sampled": "was not sampled", "wrong step": "issued seeds for step",
                   "extra scalar": "issued 1 tangent seed", "nan": "non-finite",
                   "norm": "above max_update_norm", "no examples": "example count"}


def _hostile_upload(kind, up, outsider):
    if kind == "not sampled":
        return dataclasses.replace(up, client_id=outsider)
    if kind == "wrong step":
        return dataclasses.replace(up, step=up.step + 7)
    if kind == "extra scalar":
        return dataclasses.replace(up, scalars=(*up.scalars, 1.0))
    if kind == "nan":
        return dataclasses.replace(up, scalars=(math.nan,))
    if kind == "norm":
        return dataclasses.replace(up, scalars=(1e6,))
    return dataclasses.replace(up, num_examples=0)


def test_per_iteration_server_rejects_scalars_it_did_not_issue_seeds_for(tiny_config,
                                                                          monkeypatch):
    cfg = tiny_config(communication="per_iteration", server_optimizer="fedavg", rounds=1,
                      personalization_epochs=0, max_steps=2, max_update_norm=1e4,
                      client_lr=1e-2)
    real = spry.per_iteration.engine.scalar_step
    exp = build(cfg)
    initial = {n: t.clone() for n, t in exp.server.weights.items()}
    sampled = [i.client_id for i in exp.server.configure_train(1)]
    victim, outsider = sampled[0], next(c for c in range(cfg.num_clients) if c not in sampled)

    def one_round(kind):
        def scalar_step(model, batch, unit_params, c, round_seed, client_id, step):
            up = real(model, batch, unit_params, c, round_seed, client_id, step)
            if client_id != victim or step != 0:
                return up
            return None if kind is None else _hostile_upload(kind, up, outsider)

        monkeypatch.setattr(spry.per_iteration.engine, "scalar_step", scalar_step)
        # A fresh server and clients around the same model and data.
        driver = PerIterationServer(Server(cfg, exp.server.units, dict(initial)))
        engine = LocalStepEngine(cfg, exp.model, exp.tokenizer, exp.data, driver.params_of)
        return driver.run_round(1, engine), driver.server.weights

    row, skipped = one_round(None)  # the victim's first step never arrives
    assert row["rejected_updates"] == []
    for kind, reason in HOSTILE_UPLOADS.items():
        row, weights = one_round(kind)
        assert len(row["rejected_updates"]) == 1, kind
        assert reason in row["rejected_updates"][0]["reason"], (kind, row["rejected_updates"])
        for name, value in skipped.items():
            assert torch.equal(weights[name], value), (kind, name)


# --- 4. non-finite loss -----------------------------------------------------------------
@pytest.mark.parametrize("communication", ["per_epoch", "per_iteration"])
def test_non_finite_loss_skips_the_step_and_is_counted(tiny_config, monkeypatch, communication):
    import spry.client
    import spry.tasks.classifier

    calls = []

    def nan_every_other_call(model, batch, **options):
        real_fn = spry.client.classification_loss.__wrapped__(model, batch, **options)
        calls.append(1)
        poison = len(calls) % 2 == 0
        return (lambda params: real_fn(params) * float("nan")) if poison else real_fn

    real = spry.client.classification_loss
    nan_every_other_call.__wrapped__ = real
    monkeypatch.setattr(spry.client, "classification_loss", nan_every_other_call)
    monkeypatch.setattr(spry.tasks.classifier, "classification_loss", nan_every_other_call)
    extra = (dict(communication="per_iteration", server_optimizer="fedavg")
             if communication == "per_iteration" else {})
    out = run(tiny_config(rounds=1, personalization_epochs=0, **extra), progress=False)
    row = read_metrics(out)[0]
    assert row["skipped_steps"] > 0
    assert row["train_loss"] is not None and math.isfinite(row["train_loss"])
    assert all(torch.isfinite(t).all()
               for t in load_file(str(out / "trainable.safetensors")).values())


# --- the new settings are validated -------------------------------------------------------
@pytest.mark.parametrize("change,field", [
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(max_update_norm=-1.0), "max_update_norm"),
    (dict(client_timeout_seconds=0.0), "client_timeout_seconds"),
    (dict(on_all_clients_failed="retry"), "on_all_clients_failed"),
    (dict(engine="flower", client_timeout_seconds=5.0), "client_timeout_seconds"),
    (dict(engine="flower", checkpoint_every=1), "checkpoint_every"),
    (dict(client_lr=float("nan")), "client_lr"),
])
def test_reliability_settings_are_validated(change, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        Config(**change)


# --- 7. one writer per run directory, damaged files, unfinished ends ---------------------
def test_a_second_run_in_a_locked_directory_is_refused_before_any_work(tiny_config, capsys):
    from spry.rundir import RunLock

    cfg = tiny_config(rounds=1, personalization_epochs=0)
    out = Path(cfg.output_dir) / cfg.run_name
    with RunLock(out):  # another run holds it (flock: a second open file conflicts)
        with pytest.raises(ConfigError, match=r"run_name: .* is in use by another run \(pid "):
            run(cfg, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing was written
    assert not out.exists()  # the holder made the directory and wrote nothing: gone again
    run(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a run; .* spry run --resume"):
        run(cfg, progress=False)


def test_a_stale_lock_of_a_dead_process_is_named_and_taken_over(tiny_config, caplog):
    cfg = tiny_config(rounds=1, personalization_epochs=0)
    out = Path(cfg.output_dir) / cfg.run_name
    out.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (out / ".lock").write_text(json.dumps({"pid": int(dead), "host": "h", "since": "then"}))
    with caplog.at_level(logging.INFO):
        run(cfg, progress=False)
    assert f"taking over the stale lock of pid {dead}" in caplog.text
    assert not (out / ".lock").exists() and (out / "trainable.safetensors").exists()


def test_two_cli_runs_on_one_directory_never_mix_their_rows(tiny_bert, tmp_path):
    common = [sys.executable, "-m", "spry.cli", "run", "--quiet", f"model={tiny_bert}",
              "dataset=sentiment", "num_clients=4", "clients_per_round=2", "rounds=3",
              "max_length=16", "max_steps=2", "personalization_epochs=0",
              f"output_dir={tmp_path}", "run_name=dup"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(common, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    for _ in range(600):  # the first holds the lock once it has made the directory
        if (tmp_path / "dup" / ".lock").exists():
            break
        time.sleep(0.05)
    second = subprocess.run(common + ["seed=5"], env=env, capture_output=True, text=True)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert "is in use by another run" in second.stderr or "already holds a run" in second.stderr
    assert [r["round"] for r in read_metrics(tmp_path / "dup")] == [0, 1, 2, 3]  # one run's


def test_a_damaged_checkpoint_is_refused_and_the_previous_one_resumes(tiny_config, capsys):
    settings = dict(rounds=3, checkpoint_every=1, personalization_epochs=0)
    straight = run(tiny_config(run_name="straight", **settings), progress=False)
    out = run(tiny_config(run_name="hurt", **{**settings, "rounds": 2}), progress=False)
    path = out / checkpoint.CHECKPOINT
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))
    assert main(["run", "--quiet", "--resume", str(out), "rounds=3"]) == 2
    err = capsys.readouterr().err
    assert f"{path} is damaged" in err and "mv " in err and "(after round 1)" in err
    os.replace(out / checkpoint.PREVIOUS, path)  # as the message says
    assert main(["run", "--quiet", "--resume", str(out), "rounds=3"]) == 0
    assert_same_run(straight, out)


def test_checkpoints_keep_the_one_before(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT
    for r in (1, 2, 3):
        checkpoint.save(path, {"format": checkpoint.FORMAT_VERSION, "round": r})
    assert checkpoint.load(path)["round"] == 3
    assert checkpoint.load(tmp_path / checkpoint.PREVIOUS)["round"] == 2
    path.unlink()  # stopped between the two renames
    with pytest.raises(ConfigError, match=r"is missing .* previous checkpoint \(after round 2\)"):
        checkpoint.load(path)


def test_config_files_that_are_not_utf8_or_cut_short_are_named(tiny_config, tmp_path):
    bad = tmp_path / "j.yaml"
    bad.write_bytes(b'rounds: 2\nrun_name: "\xff\xfe"\n')
    assert main(["run", "--config", str(bad)]) == 2
    out = run(tiny_config(rounds=1, checkpoint_every=1, personalization_epochs=0),
              progress=False)
    config = out / "config.yaml"
    text = config.read_text()
    lines = text.splitlines(keepends=True)
    config.write_text("".join(lines[:len(lines) // 2]))  # cut at a line: valid YAML
    with pytest.raises(ConfigError, match=r"--resume: .*config.yaml is damaged \(\d+ settings "
                                          "missing"):
        resume_config(out, ["rounds=2"])
    config.write_text(text[:-3])  # the last value cut short
    with pytest.raises(ConfigError, match="config.yaml is damaged .*cut short"):
        resume_config(out, ["rounds=2"])
    config.write_bytes(text.encode()[:-1] + b"\xff\n")
    with pytest.raises(ConfigError, match="is damaged"):
        resume_config(out, ["rounds=2"])


def test_max_length_beyond_the_models_positions_is_refused_before_work(tiny_config):
    with pytest.raises(ConfigError, match=r"max_length: 100000000 is more than .* \(128 "
                                          r"tokens, its max_position_embeddings\)"):
        build(tiny_config(max_length=100_000_000))


def test_a_run_killed_after_its_last_checkpoint_is_finished_by_resume(tiny_config):
    settings = dict(rounds=2, checkpoint_every=1, personalization_epochs=0)
    straight = run(tiny_config(run_name="straight", **settings), progress=False)
    out = run(tiny_config(run_name="cut", **settings), progress=False)
    (out / "trainable.safetensors").unlink()  # killed between the checkpoint and this file
    resumed = run(resume_config(out), progress=False, resume_dir=out)
    assert (resumed / "trainable.safetensors").exists()
    assert_same_run(straight, resumed)
    with pytest.raises(ConfigError, match="rounds=<more than 2>"):
        run(resume_config(out), progress=False, resume_dir=out)  # finished: nothing to do


def test_a_run_killed_before_its_first_checkpoint_starts_over_on_resume(tiny_config,
                                                                        monkeypatch):
    settings = dict(rounds=2, checkpoint_every=2, personalization_epochs=0)
    straight = run(tiny_config(run_name="straight", **settings), progress=False)
    cfg = tiny_config(run_name="early", **settings)
    with monkeypatch.context() as m:
        fail_client(m, lambda ins: ins.server_round == 2, Killed())
        with pytest.raises(Killed):
            run(cfg, progress=False)
    early = straight.parent / "early"
    assert len(read_metrics(early)) == 1 and not (early / checkpoint.CHECKPOINT).exists()
    (early / "checkpoint.pt.tmp").write_bytes(b"half")  # killed inside the first write
    resumed = run(resume_config(early), progress=False, resume_dir=early)
    assert_same_run(straight, resumed)
