"""Data as `datasets` users keep it on disk: save_to_disk folders, a hub repository's sharded
split files, compressed text files and ClassLabel columns, read as a folder of csv files is."""

from __future__ import annotations

import gzip
import json
import logging

import datasets
import pytest

from spry.config import Config, ConfigError
from spry.data import load_task
from spry.data.files import data_stem, read_rows

TRAIN = [{"sentence": f"good film {i}" if i % 2 else f"bad film {i}", "label": i % 2}
         for i in range(12)]
VALID = [{"sentence": "a good one", "label": 1}, {"sentence": "a bad one", "label": 0}]
NAMES = ["negative", "positive"]


def _split(rows, names=NAMES):
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_list(rows, features=features)


def test_a_save_to_disk_folder_is_read_with_its_class_names_and_labelled_held_out_split(
        tmp_path, caplog):
    # GLUE as the hub gives it: a labelled validation split, a test split of -1 labels
    unlabelled = [dict(r, label=-1) for r in VALID]
    datasets.DatasetDict(train=_split(TRAIN), test=_split(unlabelled),
                         validation=_split(VALID)).save_to_disk(str(tmp_path / "glue"))
    with caplog.at_level(logging.INFO, logger="spry.data.sources"):
        task = load_task(Config(dataset=str(tmp_path / "glue")))
    assert task.label_names == ("negative", "positive")
    assert task.train.texts == [r["sentence"] for r in TRAIN]
    assert task.train.labels == [r["label"] for r in TRAIN]
    assert task.test.texts == ["a good one", "a bad one"] and task.test.labels == [1, 0]
    assert "split 'validation' is the held-out split; split 'test' left unread" in caplog.text
    # only the unlabelled test split: it cannot score the model
    datasets.DatasetDict(train=_split(TRAIN), test=_split(unlabelled)).save_to_disk(
        str(tmp_path / "no_labels"))
    with pytest.raises(ConfigError, match=r"held-out files \[\"split 'test'\"\] have no labels "
                                          r"in column 'label' \(no such column, or only -1"):
        load_task(Config(dataset=str(tmp_path / "no_labels")))
    # a saved Dataset is one training split; test_fraction holds part of it out
    _split(TRAIN).save_to_disk(str(tmp_path / "one"))
    task = load_task(Config(dataset=str(tmp_path / "one"), test_fraction=0.25))
    assert len(task.train) + len(task.test) == len(TRAIN) and len(task.test) == 4
    # no train split: named, with the splits it has
    datasets.DatasetDict(validation=_split(VALID)).save_to_disk(str(tmp_path / "no_train"))
    with pytest.raises(ConfigError, match=r"no_train \(saved by datasets\) has the splits "
                                          r"\['validation'\] and no train split"):
        load_task(Config(dataset=str(tmp_path / "no_train")))


def test_unlabelled_rows_of_a_class_label_column_are_left_out_and_counted(tmp_path, caplog):
    rows = TRAIN + [{"sentence": "no gold label", "label": -1}]
    _split(rows).to_parquet(str(tmp_path / "train.parquet"))
    with caplog.at_level(logging.INFO, logger="spry.data.sources"):
        task = load_task(Config(dataset=str(tmp_path / "train.parquet"), test_fraction=0.25))
    assert "no gold label" not in task.train.texts + task.test.texts
    assert len(task.train) + len(task.test) == len(TRAIN)
    assert "1 rows with label -1 (no label, as datasets marks it) left out" in caplog.text


def test_a_class_label_column_matches_label_names_and_test_files_by_name(tmp_path):
    _split(TRAIN).to_parquet(str(tmp_path / "train.parquet"))
    # the test file's ClassLabel orders the names the other way: 0 is positive there
    swapped = [dict(r, label=1 - r["label"]) for r in VALID]
    _split(swapped, names=["positive", "negative"]).to_parquet(str(tmp_path / "test.parquet"))
    task = load_task(Config(dataset=str(tmp_path / "train.parquet"),
                            test_file=str(tmp_path / "test.parquet")))
    assert task.label_names == ("negative", "positive")
    assert task.test.labels == [1, 0]  # "a good one" is positive in both files
    # label_names in another order: each row keeps its class by name
    task = load_task(Config(dataset=str(tmp_path / "train.parquet"),
                            test_file=str(tmp_path / "test.parquet"),
                            label_names=["positive", "negative"]))
    assert task.train.labels == [1 - r["label"] for r in TRAIN] and task.test.labels == [0, 1]
    with pytest.raises(ConfigError, match=r"has label 'negative', outside the label set "
                                          r"\['positive', 'neutral'\]"):
        load_task(Config(dataset=str(tmp_path / "train.parquet"),
                         label_names=["positive", "neutral"], test_fraction=0.25))


def test_a_hub_repository_layout_of_sharded_parquet_files_is_one_split_a_name(tmp_path):
    data = tmp_path / "repo" / "data"
    data.mkdir(parents=True)
    _split(TRAIN[:6]).to_parquet(str(data / "train-00000-of-00002.parquet"))
    _split(TRAIN[6:]).to_parquet(str(data / "train-00001-of-00002.parquet"))
    _split(VALID).to_parquet(str(data / "validation-00000-of-00001.parquet"))
    _split([dict(r, label=-1) for r in VALID]).to_parquet(str(data / "test-00000-of-00001.parquet"))
    (tmp_path / "repo" / "README.md").write_text("---\nlicense: mit\n---\n")
    task = load_task(Config(dataset=str(tmp_path / "repo")))
    assert task.train.texts == [r["sentence"] for r in TRAIN]  # the shards, in order
    assert task.test.labels == [1, 0] and task.label_names == ("negative", "positive")
    # an error in the second shard names that file and its row
    bad = TRAIN[6:] + [{"sentence": " ", "label": 1}]
    _split(bad).to_parquet(str(data / "train-00001-of-00002.parquet"))
    with pytest.raises(ConfigError, match=r"data train-00001-of-00002.parquet row 7 has an "
                                          r"empty text in column 'sentence'"):
        load_task(Config(dataset=str(tmp_path / "repo")))
    # shards of one split must share their columns
    datasets.Dataset.from_list([{"text": "x", "label": 0}]).to_parquet(
        str(data / "train-00001-of-00002.parquet"))
    with pytest.raises(ConfigError, match=r"train-00001-of-00002.parquet has columns "
                                          r"\['label', 'text'\].*give a split's files the same"):
        load_task(Config(dataset=str(tmp_path / "repo")))


def test_compressed_files_are_read_as_they_are(tmp_path):
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": r["sentence"], "label": NAMES[r["label"]]}) + "\n"
                     for r in TRAIN)
    with gzip.open(tmp_path / "dev.tsv.gz", "wt") as f:
        f.write("text\tlabel\n" + "".join(f"{r['sentence']}\t{NAMES[r['label']]}\n"
                                          for r in VALID))
    task = load_task(Config(dataset=str(tmp_path)))  # the folder: train and dev found
    assert task.name == data_stem(tmp_path) and len(task.train) == len(TRAIN)
    assert task.test.texts == ["a good one", "a bad one"] and task.test.labels == [1, 0]
    single = load_task(Config(dataset=str(tmp_path / "train.jsonl.gz"),
                              test_file=str(tmp_path / "dev.tsv.gz")))
    assert single.name == "train" and single.test.labels == [1, 0]
    # the checks read through the compression: a bad line is named by its number
    with gzip.open(tmp_path / "bad.jsonl.gz", "wt") as f:
        f.write('{"text": "a", "label": "x"}\n{"text": "b", label: y}\n')
    with pytest.raises(ConfigError, match="bad.jsonl.gz line 2 is not valid JSON"):
        read_rows(tmp_path / "bad.jsonl.gz")
    with gzip.open(tmp_path / "cp1252.csv.gz", "wb") as f:
        f.write("text,label\ncaf\u00e9,x\n".encode("cp1252"))
    with pytest.raises(ConfigError, match="cp1252.csv.gz is not UTF-8 text .*line 2"):
        read_rows(tmp_path / "cp1252.csv.gz")
    # a headerless compressed csv takes column_names, as a plain one does
    with gzip.open(tmp_path / "plain.csv.gz", "wt") as f:
        f.write("".join(f"{r['sentence']},{r['label']}\n" for r in TRAIN))
    task = load_task(Config(dataset=str(tmp_path / "plain.csv.gz"), column_names=["text", "label"],
                            test_fraction=0.25))
    assert len(task.train) + len(task.test) == len(TRAIN)
    # a folder passes column_names' check; its parquet file, whose columns have names, not
    folder = tmp_path / "pq"
    folder.mkdir()
    _split(TRAIN).to_parquet(str(folder / "train.parquet"))
    with pytest.raises(ConfigError, match=r"column_names: .*train.parquet is parquet, whose "
                                          r"columns have names: remove it"):
        load_task(Config(dataset=str(folder), column_names=["text", "label"], test_fraction=0.25))
    (tmp_path / "x.parquet.gz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"suffix '.parquet.gz'; use one of"):
        read_rows(tmp_path / "x.parquet.gz")


def test_nested_json_fields_are_columns_and_a_list_is_no_text(tmp_path):
    nested = tmp_path / "nested.jsonl"
    nested.write_text("".join(json.dumps({"review": {"title": f"t{i}", "body": r["sentence"]},
                                          "label": r["label"]}) + "\n"
                              for i, r in enumerate(TRAIN)))
    # the object is not read as its repr: its fields are columns, named as datasets flattens
    with pytest.raises(ConfigError, match=r"has columns \['review.title', 'review.body', "
                                          r"'label'\].*text_column=review.body"):
        load_task(Config(dataset=str(nested), test_fraction=0.25))
    task = load_task(Config(dataset=str(nested), text_column="review.body", test_fraction=0.25))
    assert sorted(task.train.texts + task.test.texts) == sorted(r["sentence"] for r in TRAIN)
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("".join(json.dumps({"text": r["sentence"].split(), "label": r["label"]})
                              + "\n" for r in TRAIN))
    with pytest.raises(ConfigError, match=r"tokens.jsonl line 1 has a list in column 'text' "
                                          r"\(\['bad', 'film', '0'\]\), not a text"):
        load_task(Config(dataset=str(tokens), test_fraction=0.25))


def test_the_hub_reader_holds_out_the_first_labelled_split_of_a_dataset_dict(tmp_path):
    """_load_hub on what datasets.load_dataset returns for a hub id — here a local repository
    folder, which load_dataset reads as it reads a downloaded one (the hub is not reachable
    from the tests): train, then validation before a test split of -1 labels."""
    from spry.data.sources import _load_hub

    data = tmp_path / "repo" / "data"
    data.mkdir(parents=True)
    _split(TRAIN).to_parquet(str(data / "train-00000-of-00001.parquet"))
    _split([dict(r, label=-1) for r in VALID]).to_parquet(str(data / "test-00000-of-00001.parquet"))
    _split(VALID).to_parquet(str(data / "validation-00000-of-00001.parquet"))
    task = _load_hub(Config(dataset=str(tmp_path / "repo")))
    assert task.label_names == ("negative", "positive") and len(task.train) == len(TRAIN)
    assert task.test.texts == ["a good one", "a bad one"] and task.test.labels == [1, 0]
    # a recipe names its split: the -1 rows of it are left out, and none left is refused
    with pytest.raises(ConfigError, match=r"\[test\] has no labelled rows \(every label is -1"):
        _load_hub(Config(dataset=str(tmp_path / "repo")), test_split="test")


def test_fasttext_lines_are_read_as_labels_then_text(tmp_path):
    """A .txt file is fastText's supervised format (`__label__2 the text`, as the Amazon
    and Yelp review sets are often shipped); several labels a line are a multi-label row."""
    lines = [f"__label__{'pos' if i % 2 else 'neg'} {r['sentence']}" for i, r in enumerate(TRAIN)]
    (tmp_path / "train.txt").write_text("\n".join(lines[:6]) + "\n\n" + "\n".join(lines[6:]))
    task = load_task(Config(dataset=str(tmp_path / "train.txt"), test_fraction=0.25))
    assert task.label_names == ("neg", "pos") and len(task.train) + len(task.test) == 12
    rows = read_rows(tmp_path / "train.txt")
    assert rows.rows[7] == {"text": "good film 7", "label": "pos"}
    assert rows.name(7) == "line 9"  # the blank line is skipped, the numbering is the file's
    (tmp_path / "multi.txt").write_text("__label__a __label__b both\n__label__a one\n" * 3)
    assert read_rows(tmp_path / "multi.txt").rows[0] == {"text": "both", "label": ["a", "b"]}
    task = load_task(Config(dataset=str(tmp_path / "multi.txt"), task_head="multilabel",
                            test_fraction=0.5))
    assert task.label_names == ("a", "b")
    with pytest.raises(ConfigError, match="set task_head=multilabel"):
        load_task(Config(dataset=str(tmp_path / "multi.txt"), test_fraction=0.5))
    # plain lines: no labels to learn (refused), new texts for spry predict (read)
    (tmp_path / "plain.txt").write_text("a new review\n\nanother one\n")
    with pytest.raises(ConfigError, match=r"plain.txt line 1 \('a new review'\) has no "
                                          r"`__label__` label"):
        load_task(Config(dataset=str(tmp_path / "plain.txt")))
    assert read_rows(tmp_path / "plain.txt", unlabelled=True).rows == [
        {"text": "a new review"}, {"text": "another one"}]


def test_a_spreadsheet_is_refused_with_how_to_save_it_as_csv(tmp_path):
    (tmp_path / "reviews.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(ConfigError, match=r"pandas.read_excel\('reviews.xlsx'\).to_csv"
                                          r"\('reviews.csv', index=False\)"):
        load_task(Config(dataset=str(tmp_path / "reviews.xlsx")))
