"""partition_by: clients named by the data (a user, a site), not dealt by Dirichlet(α)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from spry.config import Config, ConfigError
from spry.data import load_task
from spry.data.partition import PartitionError, natural_partition

USERS = ("ann", "bob", "cy")


def _rows(n: int = 36) -> list[dict]:
    # user i % 3's rows; ann writes good reviews, bob bad ones, cy both
    rows = []
    for i in range(n):
        positive = i % 3 == 0 or (i % 3 == 2 and i % 2 == 0)
        rows.append({"user": USERS[i % 3], "text": f"{'good' if positive else 'bad'} film {i}",
                     "label": int(positive)})
    return rows


def _file(tmp_path, rows) -> str:
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_each_value_is_one_client_in_sorted_order_numbers_by_value():
    groups = ["10", "2", "2", "10", "1", "1"]
    assert natural_partition(groups, 3, "site") == [[4, 5], [1, 2], [0, 3]]  # 1, 2, 10
    assert natural_partition(["b", "a", "b", "a"], 2, "user") == [[1, 3], [0, 2]]
    with pytest.raises(PartitionError, match=r"partition_by=site gives 3 clients \(the distinct "
                                             r"values of column 'site'\), not 100; set "
                                             r"num_clients=3"):
        natural_partition(groups, 100, "site")
    assert natural_partition(["x", "y", "y"], 2, "user") == [[0], [1, 2]]  # x trains only


def test_a_run_deals_each_users_rows_to_that_users_client(tiny_bert, tmp_path, caplog):
    from spry.experiment import build

    rows = _rows()
    path = _file(tmp_path, rows)
    exp = build(Config(model=tiny_bert, dataset=path, partition_by="user", num_clients=3,
                       clients_per_round=2, client_test_fraction=0.25, max_length=16,
                       output_dir=str(tmp_path)))
    assert exp.cfg.partition_by == "user"
    for client, user in zip(exp.data.clients, USERS):  # sorted: ann, bob, cy
        mine = [r for r in rows if r["user"] == user]
        assert len(client.train) + len(client.test) == len(mine) == 12
        assert len(client.test) == 3
        assert client.label_counts == [sum(r["label"] == c for r in mine) for c in (0, 1)]
    # ann's client holds only positive reviews, bob's only negative: the data's own skew
    assert exp.data.clients[0].label_counts == [0, 12]
    assert exp.data.clients[1].label_counts == [12, 0]
    # a held-out split first (test_fraction): each user keeps the rest of their rows
    held = build(Config(model=tiny_bert, dataset=path, partition_by="user", num_clients=3,
                        clients_per_round=2, test_fraction=0.25, max_length=16,
                        output_dir=str(tmp_path)))
    assert len(held.data.test) == 8  # a quarter of each label's 18, rounded half to even
    assert sum(len(c.train) + len(c.test) for c in held.data.clients) == 28
    # a user of one row: a client that trains and has no local test split, said so
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spry.experiment"):
        one = build(Config(model=tiny_bert, dataset=_file(tmp_path, rows + [
            {"user": "dee", "text": "good film", "label": 1}]), partition_by="user",
            num_clients=4, clients_per_round=2, max_length=16, output_dir=str(tmp_path)))
    assert (len(one.data.clients[3].train), len(one.data.clients[3].test)) == (1, 0)
    assert "clients train on 1 to 10 examples (median 10)" in caplog.text
    assert "1 of 4 clients hold too few examples for a local test split" in caplog.text


def test_partition_by_is_refused_where_it_cannot_apply(tiny_bert, tmp_path):
    from spry.experiment import build

    path = _file(tmp_path, _rows())
    with pytest.raises(ConfigError, match=r"partition_by: names a column of your own data; "
                                          r"dataset='sst2' is a recipe"):
        load_task(Config(dataset="sst2", partition_by="user", num_clients=3))
    for settings, message in (
            ({"dataset": path, "dirichlet_alpha": 1.0},
             r"dirichlet_alpha: with partition_by the clients are the column's values"),
            ({"dataset": path, "client_data": "node", "engine": "flower",
              "label_names": ["0", "1"]}, r"partition_by: with client_data=node")):
        with pytest.raises(ConfigError, match=message):
            Config(**{"partition_by": "user", **settings})
    with pytest.raises(ConfigError, match=r"partition_by: .*reviews.jsonl has no column 'site'"):
        build(Config(model=tiny_bert, dataset=path, partition_by="site", num_clients=3,
                     clients_per_round=2, output_dir=str(tmp_path)))
    rows = _rows()
    rows[4]["user"] = " "
    with pytest.raises(ConfigError, match=r"partition_by: .*reviews.jsonl line 5 has ' ' in "
                                          r"column 'user', not a client's name"):
        build(Config(model=tiny_bert, dataset=_file(tmp_path, rows), partition_by="user",
                     num_clients=3, clients_per_round=2, output_dir=str(tmp_path)))


def test_a_partition_by_run_over_flower_matches_the_local_engine(tiny_bert, tmp_path):
    """Every SuperNode reads the file and keeps its own user's rows, as the local engine
    deals them."""
    pytest.importorskip("flwr")
    from safetensors.torch import load_file

    from spry.runner import run as run_engine

    local = Config(model=tiny_bert, dataset=_file(tmp_path, _rows()), partition_by="user",
                   num_clients=3, clients_per_round=2, rounds=1, max_steps=2, max_length=16,
                   test_fraction=0.25, output_dir=str(tmp_path / "runs"), run_name="local")
    local_out = run_engine(local, progress=False)
    flower_out = run_engine(local.replace(engine="flower", run_name="flower"), progress=False)
    rows = [[json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            for out in (local_out, flower_out)]
    assert [r["round"] for r in rows[0]] == [r["round"] for r in rows[1]]
    assert rows[1][-1]["test_accuracy"] == pytest.approx(rows[0][-1]["test_accuracy"])
    assert rows[1][-1]["bytes_up"] == rows[0][-1]["bytes_up"]
    a, b = (load_file(str(out / "trainable.safetensors")) for out in (local_out, flower_out))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
