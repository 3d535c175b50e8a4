"""engine=flower: records, parity with the local engine, a failing node, a real deployment.

The simulations start Flower's Ray runtime (about 15 s each on 2 cores); the deployment
test starts a SuperLink and three SuperNodes on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("flwr")

from spry.client import ClientEval, ClientUpdate  # noqa: E402
from spry.config import ConfigError  # noqa: E402
from spry.flower import records, run_simulation  # noqa: E402
from spry.flower.client_app import handle_train, make_client_app, partition_id  # noqa: E402
from spry.experiment import build  # noqa: E402
from spry.runner import run  # noqa: E402
from spry.messages import EvalInstruction, TrainInstruction  # noqa: E402
from spry.metrics import read_metrics  # noqa: E402
from spry.server import sample_clients  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def small(tiny_config, **overrides):
    # context=local: nodes receive only their units; keep_client_optimizer: AdamW moments
    # persist in each node's context. Both must behave the same under both engines.
    base = dict(num_clients=4, clients_per_round=3, rounds=2, context="local",
                keep_client_optimizer=True)
    base.update(overrides)
    return tiny_config(**base)


def test_records_round_trip(tiny_config):
    # Prepare
    cfg = small(tiny_config)
    w = {"a.lora_A.weight": torch.randn(2, 3), "head.bias": torch.randn(2)}
    train = TrainInstruction(3, 1, 2**62 + 5, ["a"], ["a.lora_A.weight"], w,
                             {"a.lora_A.weight": torch.randn(2, 3)}, score_local=True)
    update = ClientUpdate(1, w, 17, 0.5, 4, 1, 0.25, [[0.1, 0.2], [0.3, 0.4]],
                          local_correct=3, local_eval_seconds=0.5)
    evaluation = EvalInstruction(3, 1, 7, ["a.lora_A.weight"], w, 2)
    result = ClientEval(1, 5, 9, 3.5, personalized_correct=6)
    # Execute
    back = records.read_train(records.train_content(train, cfg))
    # Assert
    assert records.read_config(records.train_content(train, cfg)) == cfg
    assert (back.server_round, back.client_id, back.round_seed, back.units, back.unit_params,
            back.score_local) == (3, 1, 2**62 + 5, ["a"], ["a.lora_A.weight"], True)
    assert all(torch.equal(back.weights[n], w[n]) for n in w)
    assert torch.equal(back.previous_update["a.lora_A.weight"],
                       train.previous_update["a.lora_A.weight"])
    up = records.read_update(records.update_content(update))
    assert all(torch.equal(up.weights[n], w[n]) for n in w)
    assert (up.client_id, up.num_examples, up.train_loss, up.steps, up.skipped_steps,
            up.seconds, up.scalars, up.local_correct, up.local_eval_seconds) == \
        (1, 17, 0.5, 4, 1, 0.25, [[0.1, 0.2], [0.3, 0.4]], 3, 0.5)
    unscored = records.read_update(records.update_content(ClientUpdate(1, w, 17, 0.5, 4)))
    assert unscored.local_correct is None
    assert records.read_eval(records.eval_content(result)) == result
    assert records.read_evaluate(records.evaluate_content(evaluation, cfg)).personalization_epochs == 2


@pytest.mark.parametrize("scatter", [None, torch.randn(10)])
def test_round_zero_statistics_round_trip(scatter):
    from spry.tasks.linear_head import ClassStatistics

    stats = ClassStatistics(7, torch.randn(3, 4), torch.tensor([2.0, 0.0, 5.0]), 6.5, 0.25,
                            scatter)
    back = records.read_class_statistics(records.class_statistics_reply(stats))
    assert (back.client_id, back.norm_sum, back.seconds) == (7, 6.5, 0.25)
    assert torch.equal(back.sums, stats.sums) and torch.equal(back.counts, stats.counts)
    assert (back.scatter is None if scatter is None else torch.equal(back.scatter, scatter))
    assert back.bytes() == stats.bytes()


@pytest.mark.parametrize("personalization", ["global", "round"])
def test_flower_simulation_matches_local_engine(tiny_config, tmp_path, personalization):
    # Prepare
    local_cfg = small(tiny_config, output_dir=str(tmp_path), run_name="local",
                      personalization=personalization)
    flower_cfg = local_cfg.replace(engine="flower", run_name="flower")
    # Execute
    local_out = run(local_cfg, progress=False)
    flower_out = run(flower_cfg, progress=False)
    # Assert: same final trainable weights, same curves, same bytes
    a = load_file(str(local_out / "trainable.safetensors"))
    b = load_file(str(flower_out / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
    local_rows, flower_rows = read_metrics(local_out), read_metrics(flower_out)
    for lr, fr in zip(local_rows, flower_rows, strict=True):
        for key in ("generalized_accuracy", "personalized_accuracy", "test_accuracy", "clients",
                    "failed_clients", "bytes_down", "bytes_up", "steps"):
            assert fr[key] == lr[key], key
        assert fr["train_loss"] == pytest.approx(lr["train_loss"], abs=1e-5)
        # context=local: a node gets its units only, exactly what it sends back
        assert fr["bytes_down"] == fr["bytes_up"]
        assert fr["failed_clients"] == []


def test_round_zero_lda_over_flower_matches_the_local_engine(tiny_config, tmp_path):
    # Prepare: one round after round 0's discriminant head, the head shared by all
    local_cfg = small(tiny_config, output_dir=str(tmp_path), run_name="local", rounds=1,
                      head_init="lda", head="shared", personalization_epochs=0)
    flower_cfg = local_cfg.replace(engine="flower", run_name="flower")
    # Execute
    local_out = run(local_cfg, progress=False)
    flower_out = run(flower_cfg, progress=False)
    # Assert: the scatter crossed the wire, and the same head and weights came out
    local_rows, flower_rows = read_metrics(local_out), read_metrics(flower_out)
    assert local_rows[0]["round"] == flower_rows[0]["round"] == 0
    assert flower_rows[0]["bytes_up"] == local_rows[0]["bytes_up"]
    assert flower_rows[0]["test_accuracy"] == local_rows[0]["test_accuracy"]
    a = load_file(str(local_out / "trainable.safetensors"))
    b = load_file(str(flower_out / "trainable.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)


def test_a_failing_node_does_not_stop_the_run(tiny_config, tmp_path):
    # Prepare: the node of client `victim` dies in round 2 (its ClientApp raises)
    cfg = small(tiny_config, engine="flower", output_dir=str(tmp_path), run_name="fail",
                personalization_epochs=0)
    victim = sample_clients(cfg.num_clients, cfg.clients_per_round, cfg.seed, 2)[0]

    def train(message, context):
        if partition_id(context) == victim and \
                message.content.config_records["instruction"]["server-round"] == 2:
            raise RuntimeError("node lost power")
        return handle_train(message, context)

    # Execute
    out = run_simulation(cfg, progress=False, client_app=make_client_app(train=train))
    # Assert: the run finished, the failure is in metrics.jsonl, the victim's units kept
    # their round-1 values
    rows = read_metrics(out)
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["failed_clients"] == [] and rows[1]["failed_clients"] == [victim]
    # ... with its reason, as engine=local reports one
    assert rows[0]["failure_reasons"] == []
    (reason,) = rows[1]["failure_reasons"]
    assert reason["client"] == victim and "node lost power" in reason["reason"]
    assert victim not in rows[1]["clients"] and rows[1]["generalized_accuracy"] is not None
    after_round_1 = load_file(str(run(cfg.replace(engine="local", rounds=1, run_name="r1"),
                                      progress=False) / "trainable.safetensors"))
    final = load_file(str(out / "trainable.safetensors"))
    server = build(cfg).server
    dealt = server.deal(2, sample_clients(cfg.num_clients, cfg.clients_per_round, cfg.seed, 2))
    victim_params = [p for u in dealt[victim] for p in server.unit_params[u]]
    assert victim_params
    for name in final:
        same = torch.allclose(final[name], after_round_1[name], atol=1e-6, rtol=0)
        assert same == (name in victim_params), name


@pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="flwr CLI not installed")
def test_deployment_on_loopback(tiny_bert, tmp_path):
    # Prepare: 1 SuperLink + 3 SuperNodes on loopback, private FLWR_HOME and ports
    out = tmp_path / "runs"
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr-home"), SPRY_PORT_BASE="19190")
    # Execute
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "deploy_local.sh"), "--nodes", "3", "--",
         f"model={tiny_bert}", "dataset=sentiment", "num_clients=3", "clients_per_round=3",
         "rounds=2", "eval_every=2", "max_length=16", "max_steps=2",
         "personalization_epochs=1", f"output_dir={out}", "run_name=deployed"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    # Assert
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_metrics(out / "deployed")
    # Round 0: the class-mean head from every node's feature sums (a Flower QUERY).
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert sorted(rows[0]["clients"]) == [0, 1, 2] and rows[0]["bytes_up"] > 0
    rows = rows[1:]
    for row in rows:
        assert sorted(row["clients"]) == [0, 1, 2] and row["failed_clients"] == []
        assert row["steps"] == 6 and row["bytes_up"] > 0
    # Each SuperNode starts a fresh ClientApp process per message; evaluate only at the end.
    assert 0.0 <= rows[1]["generalized_accuracy"] <= 1.0
    assert 0.0 <= rows[1]["personalized_accuracy"] <= 1.0
    assert (out / "deployed" / "trainable.safetensors").exists()
    # Everything the script started is gone when it returns, SuperExec and app processes
    # included: no process is left that inherited the test's private FLWR_HOME.
    assert _processes_with_env(f"FLWR_HOME={env['FLWR_HOME']}") == []


@pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="flwr CLI not installed")
def test_deployment_where_each_node_holds_its_own_file(tiny_bert, tmp_path):
    # Prepare: two sites' files (one writes its labels as the other does not: both are read
    # against the run's label set) and the server's held-out file; no `dataset` at all
    rows = [(f"a fine film {i}", "pos") if i % 2 else (f"a dull film {i}", "neg")
            for i in range(24)]
    for site in (0, 1):
        (tmp_path / f"site{site}.csv").write_text(
            "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows[site::2] + rows[:4]))
    (tmp_path / "held.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    out = tmp_path / "runs"
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr-home"), SPRY_PORT_BASE="19390")
    # Execute
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "deploy_local.sh"), "--nodes", "2",
         "--data-files", str(tmp_path / "site{i}.csv"), "--",
         f"model={tiny_bert}", "client_data=node", "label_names=neg,pos",
         f"test_file={tmp_path / 'held.csv'}", "num_clients=2", "clients_per_round=2",
         "rounds=1", "max_length=16", "max_steps=2", "personalization_epochs=0",
         f"output_dir={out}", "run_name=sites"],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    # Assert: round 0 from both nodes' files, one round, scored on the server's file
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_metrics(out / "sites")
    assert [r["round"] for r in rows] == [0, 1]
    assert sorted(rows[0]["clients"]) == [0, 1] and rows[0]["bytes_up"] > 0
    assert rows[1]["failed_clients"] == [] and rows[1]["steps"] == 4
    assert 0.0 <= rows[1]["test_accuracy"] <= 1.0
    assert _processes_with_env(f"FLWR_HOME={env['FLWR_HOME']}") == []


def _processes_with_env(entry: str) -> list[str]:
    """Command lines of the processes whose environment holds `entry` (Linux /proc)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # gone, or not ours to read
            continue
    return found


def _with_data_files(files: dict[int, Path] | None):
    """Spry's ClientApp on nodes started with `--node-config data-file=...`: each handler
    sees the node's own file in its node config, as a SuperNode's command line gives it."""
    from spry.flower.client_app import DATA_FILE, handle_evaluate, handle_query

    def on_node(handler):
        def handle(message, context):
            if files is not None:
                context.node_config[DATA_FILE] = str(files[partition_id(context)])
            return handler(message, context)
        return handle

    return make_client_app(train=on_node(handle_train), evaluate=on_node(handle_evaluate),
                           query=on_node(handle_query))


def test_nodes_reading_their_own_files_train_what_the_dealt_shares_train(tiny_config,
                                                                         tmp_path):
    # Prepare: each client's dealt share of the task written to a file of its own, and the
    # held-out split to the server's test_file; the server then reads no training data
    import json

    from spry.data import dirichlet_partition, load_task
    from spry.seeds import derive_seed

    dealt = small(tiny_config, output_dir=str(tmp_path), run_name="dealt", rounds=1,
                  head_init="lda", head="shared", personalization_epochs=0)
    task = load_task(dealt)
    parts = dirichlet_partition(task.train.labels, dealt.num_clients, dealt.dirichlet_alpha,
                                seed=derive_seed(dealt.seed, "partition"),
                                num_labels=len(task.label_names))

    def write(path, examples, indices):
        path.write_text("".join(json.dumps({"text": examples.texts[i],
                                            "label": task.label_names[examples.labels[i]]})
                                + "\n" for i in indices))
        return path

    files = {cid: write(tmp_path / f"site{cid}.jsonl", task.train, indices)
             for cid, indices in enumerate(parts)}
    held_out = write(tmp_path / "held.jsonl", task.test, range(len(task.test)))
    nodes = dealt.replace(engine="flower", client_data="node", run_name="nodes",
                          dataset="no-such-file.csv", test_file=str(held_out),
                          label_names=list(task.label_names))
    # Execute
    dealt_out = run(dealt, progress=False)
    nodes_out = run_simulation(nodes, progress=False, client_app=_with_data_files(files))
    # Assert: the same round 0, the same training, the same held-out scores
    a = load_file(str(dealt_out / "trainable.safetensors"))
    b = load_file(str(nodes_out / "trainable.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
    for da, no in zip(read_metrics(dealt_out), read_metrics(nodes_out), strict=True):
        for key in ("test_accuracy", "generalized_accuracy", "clients", "steps", "bytes_up"):
            assert no.get(key) == da.get(key), key


def test_client_data_node_needs_each_node_to_name_its_file(tiny_config, tmp_path):
    # the handshake asks before any work: a node without its file stops the run there
    cfg = small(tiny_config, engine="flower", client_data="node", output_dir=str(tmp_path),
                run_name="nofiles", label_names=["negative", "positive"])
    with pytest.raises(ConfigError, match="SuperNode.s. of partition-id 0, 1, 2, 3 name no "
                                          "data-file; start each with its file, e.g. "
                                          "--node-config 'partition-id=0 data-file="):
        run_simulation(cfg, progress=False, client_app=_with_data_files(None))
    assert not (tmp_path / "nofiles" / "metrics.jsonl").exists()
