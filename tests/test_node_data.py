"""client_data=node: a SuperNode's own file becomes its client, with the run's label set;
what the setting rules out is refused before any work (the Flower runs that use it are in
test_flower.py)."""

from __future__ import annotations

import pytest

from spry.config import Config, ConfigError
from spry.data import node_client_data
from spry.models import load_tokenizer


def test_a_nodes_file_is_split_into_its_local_train_and_test(tiny_bert, tmp_path):
    path = tmp_path / "site.csv"
    path.write_text("review,sentiment\n" + "".join(
        f"text number {i},{'pos' if i % 3 else 'neg'}\n" for i in range(10)))
    cfg = Config(model=tiny_bert, engine="flower", client_data="node",
                 label_names=["neg", "pos"], client_test_fraction=0.2)
    data = node_client_data(cfg, load_tokenizer(cfg), path, client_id=3)
    assert data.client_id == 3 and (len(data.train), len(data.test)) == (8, 2)
    assert data.label_counts == [4, 6]  # labels read against the run's set, in its order
    again = node_client_data(cfg, load_tokenizer(cfg), path, client_id=3)
    assert again.test.labels == data.test.labels  # seeded by the client id


def test_a_nodes_bad_file_is_named_with_the_fix(tiny_bert, tmp_path):
    cfg = Config(model=tiny_bert, engine="flower", client_data="node",
                 label_names=["neg", "pos"])
    tokenizer = load_tokenizer(cfg)
    with pytest.raises(ConfigError, match="data-file: .*absent.csv is not a file on this node"):
        node_client_data(cfg, tokenizer, tmp_path / "absent.csv", 0)
    odd = tmp_path / "odd.csv"
    odd.write_text("text,label\ngood,pos\nbad,negative\n")
    with pytest.raises(ConfigError, match="odd.csv line 3 has label 'negative', outside the "
                                          r"label set \['neg', 'pos'\]"):
        node_client_data(cfg, tokenizer, odd, 0)
    one = tmp_path / "one.csv"
    one.write_text("text,label\ngood,pos\n")
    with pytest.raises(ConfigError, match="one.csv has 1 example"):
        node_client_data(cfg, tokenizer, one, 0)


@pytest.mark.parametrize("settings, message", [
    (dict(), "set engine=flower"),
    (dict(engine="flower"), "label_names: client_data=node needs the label set"),
    (dict(engine="flower", label_names=["a", "b"], test_fraction=0.2),
     "test_fraction: with client_data=node the server reads no training data"),
    (dict(engine="flower", label_names=["a", "b"], max_train_examples=10),
     "max_train_examples: with client_data=node"),
    (dict(engine="flower", label_names=["a", "b"], task_head="span"),
     "task_head='span' reads a recipe's QA data"),
])
def test_client_data_node_refuses_what_it_cannot_do(settings, message):
    with pytest.raises(ConfigError, match=message):
        Config(client_data="node", **settings)
