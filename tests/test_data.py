"""Data: Dirichlet partitions, per-client splits, local files, recipes."""

from __future__ import annotations

import json
import statistics

import pytest

from spry.config import Config, ConfigError
from spry.data import dirichlet_partition, load_task, train_test_split
from spry.data.synthetic import make_sentiment


def _labels(n=4000, k=4):
    return [i % k for i in range(n)]


def _shares(labels, parts, k):
    return [[sum(labels[i] == c for i in p) / len(p) for c in range(k)] for p in parts]


def test_partition_is_disjoint_equal_sized_and_reproducible():
    labels = _labels()
    parts = dirichlet_partition(labels, 50, 0.1, seed=1)
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == 50 * (len(labels) // 50)
    assert {len(p) for p in parts} == {len(labels) // 50}
    assert parts == dirichlet_partition(labels, 50, 0.1, seed=1)
    assert parts != dirichlet_partition(labels, 50, 0.1, seed=2)


def test_label_shares_follow_alpha():
    labels, k = _labels(), 4
    skewed = _shares(labels, dirichlet_partition(labels, 40, 0.1, seed=0), k)
    mixed = _shares(labels, dirichlet_partition(labels, 40, 1.0, seed=0), k)
    flat = _shares(labels, dirichlet_partition(labels, 40, 1000.0, seed=0), k)
    top = lambda shares: statistics.mean(max(s) for s in shares)  # noqa: E731
    # α=0.1: most clients are dominated by one label; α→∞: each mirrors the prior (1/4).
    assert top(skewed) > 0.75
    assert 0.4 < top(mixed) < top(skewed)
    assert top(flat) < 0.35
    # Whatever α, the pool is used evenly: the mean share of each label stays near the prior.
    for shares in (skewed, mixed):
        for c in range(k):
            assert statistics.mean(s[c] for s in shares) == pytest.approx(0.25, abs=0.08)


def test_too_many_clients_is_a_clear_error():
    with pytest.raises(ValueError, match="num_clients"):
        dirichlet_partition(_labels(30), 20, 0.1, seed=0)


def test_client_split_80_20():
    train, test = train_test_split(list(range(100, 150)), 0.2, seed=0)
    assert len(train) == 40 and len(test) == 10 and not set(train) & set(test)
    assert train_test_split([5], 0.2, seed=0) == ([5], [])


def test_synthetic_task_is_reproducible_and_balanced():
    texts, labels = make_sentiment(500, seed=3)
    assert (texts, labels) == make_sentiment(500, seed=3)
    assert 0.4 < sum(labels) / len(labels) < 0.6


def test_local_csv_with_column_and_label_mapping(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('body,verdict\n"great, really",pos\nawful,neg\n"fine ""quote""",pos\n')
    task = load_task(Config(dataset=str(path), text_column="body", label_column="verdict",
                            label_names=["neg", "pos"]))
    assert task.train.texts[0] == "great, really" and task.train.labels == [1, 0, 1]
    inferred = load_task(Config(dataset=str(path), text_column="body", label_column="verdict"))
    assert inferred.label_names == ("neg", "pos")


def test_local_jsonl_pairs_and_parquet(tmp_path):
    import pandas as pd

    rows = [{"premise": "a", "hypothesis": "b", "label": 0}, {"premise": "c", "hypothesis": "d",
                                                            "label": 2}]
    pd.DataFrame(rows).to_json(tmp_path / "nli.jsonl", orient="records", lines=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "nli.parquet")
    for name in ("nli.jsonl", "nli.parquet"):
        task = load_task(Config(dataset=str(tmp_path / name), pair_column="hypothesis"))
        assert task.train.pairs == ["b", "d"] and task.train.labels == [0, 2]
        assert task.label_names == ("0", "1", "2")


def test_missing_column_and_unknown_label_are_named(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\nhello\t1\nbye\t7\n")
    with pytest.raises(ConfigError, match="label_column: .* no column 'y'"):
        load_task(Config(dataset=str(path), label_column="y"))
    with pytest.raises(ConfigError, match="label_names: .*has label 7, outside"):
        load_task(Config(dataset=str(path), label_names=["neg", "pos"]))


def test_a_headerless_csv_is_named_with_a_fix_and_read_with_column_names(tmp_path):
    # The first line is data (a label that recurs below): listing it as the columns would
    # not tell the user what is wrong; the error names the layout to copy.
    path = tmp_path / "topics.csv"
    path.write_text('"why is the sky blue",science\n"who won the match",sports\n'
                    '"what is a quark",science\n')
    with pytest.raises(ConfigError, match=r"first line of .*topics.csv looks like data, not a "
                                          r"header .*column_names=text,label"):
        load_task(Config(dataset=str(path)))
    test = tmp_path / "topics-test.csv"
    test.write_text('"how do tides work",science\n')
    task = load_task(Config(dataset=str(path), column_names=["text", "label"],
                            test_file=str(test)))
    assert task.train.texts[0] == "why is the sky blue"  # the first line is an example
    assert task.label_names == ("science", "sports") and task.train.labels == [0, 1, 0]
    assert task.test.texts == ["how do tides work"] and task.test.labels == [0]
    # A class id column in front (AG News' layout): the guess puts `label` there.
    ids = tmp_path / "ids.csv"
    ids.write_text('"3","Title one","A longer description of the first story"\n'
                   '"1","Title two","A longer description of the second story"\n'
                   '"3","Title three","A longer description of the third story"\n')
    with pytest.raises(ConfigError, match="column_names=label,column2,text"):
        load_task(Config(dataset=str(ids)))
    # A file with a real header whose text column has another name keeps the old error.
    headed = tmp_path / "headed.csv"
    headed.write_text("words,label\nhello,0\nbye,1\n")
    with pytest.raises(ConfigError, match=r"text_column: .* has columns \['words', 'label'\]"):
        load_task(Config(dataset=str(headed)))


def test_integer_labels_from_one_are_not_given_an_empty_class_zero(tmp_path):
    stars = tmp_path / "stars.tsv"
    stars.write_text("text\tlabel\nbad\t1\nok\t3\ngreat\t5\n")
    test = tmp_path / "stars-test.tsv"
    test.write_text("text\tlabel\nfine\t5\n")
    task = load_task(Config(dataset=str(stars), test_file=str(test)))
    assert task.label_names == ("1", "3", "5")
    assert task.train.labels == [0, 1, 2] and task.test.labels == [2]
    test.write_text("text\tlabel\nfine\t4\n")  # a class the training file lacks
    with pytest.raises(ConfigError, match="line 2 has label 4, outside .* set label_names"):
        load_task(Config(dataset=str(stars), test_file=str(test)))
    zero_based = tmp_path / "z.tsv"
    zero_based.write_text("text\tlabel\na\t0\nb\t2\n")
    assert load_task(Config(dataset=str(zero_based))).label_names == ("0", "1", "2")


def test_the_usual_label_and_text_column_names_are_found(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("id,body,stars\n1,awful,1\n2,great,5\n3,fine,4\n")
    task = load_task(Config(dataset=str(path)))
    assert task.columns == {"text_column": "body", "pair_column": None, "label_column": "stars"}
    assert task.label_names == ("1", "4", "5") and task.train.labels == [0, 2, 1]
    both = tmp_path / "both.csv"  # `label` wins over a later name
    both.write_text("text,sentiment,label\nok,pos,0\nbad,neg,1\n")
    assert load_task(Config(dataset=str(both))).columns["label_column"] == "label"
    assert load_task(Config(dataset=str(both), label_column="sentiment")).label_names == (
        "neg", "pos")
    # No usual name: the one column beside the text is the label; with two, say which
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "ok", "is_positive": true}\n{"text": "bad", "is_positive": false}\n')
    task = load_task(Config(dataset=str(one)))
    assert task.columns["label_column"] == "is_positive"
    assert task.label_names == ("False", "True") and task.train.labels == [1, 0]
    none = tmp_path / "none.csv"
    none.write_text("text,verdict,notes\nok,pos,x\n")
    with pytest.raises(ConfigError, match="label_column: .* no column 'label'.*verdict"):
        load_task(Config(dataset=str(none)))


def test_labels_are_read_without_stray_spaces_and_case_twins_are_refused(tmp_path):
    spaced = tmp_path / "spaced.csv"
    spaced.write_text('text,label\na,"pos "\nb,neg\nc,pos\n')
    test = tmp_path / "test.csv"
    test.write_text('text,label\nd," neg"\n')
    task = load_task(Config(dataset=str(spaced), test_file=str(test)))
    assert task.label_names == ("neg", "pos") and task.train.labels == [1, 0, 1]
    assert task.test.labels == [0]
    twins = tmp_path / "twins.csv"
    twins.write_text("text,label\na,Positive\nb,positive\nc,negative\n")
    with pytest.raises(ConfigError, match="differ only in case \\('Positive' / 'positive'\\)"
                       ".*label_names=Positive,negative,positive"):
        load_task(Config(dataset=str(twins)))
    # named distinct by the user, they are three classes
    kept = load_task(Config(dataset=str(twins), label_names=["Positive", "negative", "positive"]))
    assert kept.train.labels == [0, 2, 1]


def test_a_label_column_of_scores_or_ids_is_refused_before_any_work(tmp_path):
    scores = tmp_path / "scores.csv"
    scores.write_text("text,score\n" + "".join(f"t{i},{1 + i / 7:.2f}\n" for i in range(30)))
    with pytest.raises(ConfigError, match="column 'score' holds fractional numbers .*bin"):
        load_task(Config(dataset=str(scores), label_column="score"))
    ids = tmp_path / "ids.csv"
    ids.write_text("text,label\n" + "".join(f"t{i},user-{i}\n" for i in range(300)))
    with pytest.raises(ConfigError, match="300 distinct values in 300 rows"):
        load_task(Config(dataset=str(ids)))
    # Whole numbers written as floats, and many classes with several rows each, are classes.
    floats = tmp_path / "floats.csv"
    floats.write_text("text,label\na,0.0\nb,1.0\nc,nan\n")
    assert load_task(Config(dataset=str(floats))).label_names == ("0.0", "1.0", "nan")
    many = tmp_path / "many.csv"
    many.write_text("text,label\n" + "".join(f"t{i},intent{i % 150}\n" for i in range(600)))
    assert len(load_task(Config(dataset=str(many))).label_names) == 150


def test_column_names_is_refused_where_it_cannot_apply(tmp_path):
    with pytest.raises(ConfigError, match="column_names: names the columns of a csv/tsv"):
        Config(dataset="sst2", column_names=["text", "label"])
    with pytest.raises(ConfigError, match="column_names: has duplicates"):
        Config(dataset=str(tmp_path / "a.csv"), column_names=["text", "text"])


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="dataset: file .* does not exist"):
        load_task(Config(dataset="/nonexistent/data.csv"))


@pytest.mark.real_data
@pytest.mark.parametrize("name, n_labels, has_test", [
    ("sst2", 2, True), ("ag_news", 4, True), ("snli", 3, True), ("mnli", 3, False),
    ("yahoo", 2, True)])
def test_recipes_read_the_shared_files(name, n_labels, has_test, data_dir):
    task = load_task(Config(dataset=name, data_dir=str(data_dir)))
    assert len(task.label_names) == n_labels
    assert len(task.train) > 1000
    assert set(task.train.labels) == set(range(n_labels))
    assert (task.test is not None) == has_test
    if has_test:
        assert set(task.test.labels) == set(range(n_labels))


def test_a_csv_separated_by_semicolons_or_pipes_is_read_by_its_delimiter(tmp_path):
    for delimiter in (";", "|", "\t"):
        path = tmp_path / "export.csv"  # a spreadsheet's export in many locales
        path.write_text(f'text{delimiter}label\n"ok, fine"{delimiter}pos\nbad{delimiter}neg\n')
        task = load_task(Config(dataset=str(path)))
        assert task.train.texts == ["ok, fine", "bad"] and task.label_names == ("neg", "pos")
    # a text holding the delimiter unquoted would shift its row: named, not read
    loose = tmp_path / "loose.csv"
    loose.write_text('text,label\n"ok, fine",pos\nbad, awful,neg\n')
    with pytest.raises(ConfigError, match="loose.csv line 3 has 3 fields separated by ',', "
                                          "where the header names 2 .*quote a text"):
        load_task(Config(dataset=str(loose)))
    one = tmp_path / "one.csv"  # one column: nothing splits it, and it is not a task
    one.write_text("text\nok\n")
    with pytest.raises(ConfigError, match="label_column"):
        load_task(Config(dataset=str(one)))


def test_a_folder_of_splits_is_read_as_train_and_test(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\nc,x\n")
    (tmp_path / "dev.csv").write_text("text,label\nd,y\n")
    (tmp_path / "README.md").write_text("notes")
    task = load_task(Config(dataset=str(tmp_path)))
    assert task.train.texts == ["a", "b", "c"] and task.test.texts == ["d"]
    assert task.test.labels == [1]
    with pytest.raises(ConfigError, match="already has a held-out test split"):
        load_task(Config(dataset=str(tmp_path), test_fraction=0.2))
    (tmp_path / "training.jsonl").write_text('{"text": "e", "label": "x"}\n')
    with pytest.raises(ConfigError, match="2 training files .*train.csv.*training.jsonl"):
        load_task(Config(dataset=str(tmp_path)))
    (tmp_path / "training.jsonl").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="folder .*empty has no training file .*train.csv"):
        load_task(Config(dataset=str(empty)))


def test_a_folder_with_validation_and_test_files_holds_out_the_labelled_validation(
        tmp_path, caplog):
    # GLUE's layout: train.tsv, dev.tsv, and a test.tsv without labels
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\t0\nb\t1\nc\t0\n")
    (tmp_path / "test.tsv").write_text("index\tsentence\n0\te\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nd\t1\n")
    with caplog.at_level("INFO", logger="spry.data.sources"):
        task = load_task(Config(dataset=str(tmp_path)))
    assert task.test.texts == ["d"] and task.test.labels == [1]
    assert "dev.tsv is the held-out split; test.tsv left unread" in caplog.text
    # both labelled: the validation split, the test split kept for the end
    (tmp_path / "test.tsv").write_text("sentence\tlabel\ne\t0\n")
    assert load_task(Config(dataset=str(tmp_path))).test.texts == ["d"]
    # test_file names the split where the user wants another
    chosen = load_task(Config(dataset=str(tmp_path), test_file=str(tmp_path / "test.tsv")))
    assert chosen.test.texts == ["e"]
    # an unlabelled validation file is passed over for a labelled test file
    (tmp_path / "dev.tsv").write_text("index\tsentence\n0\td\n")
    caplog.clear()
    with caplog.at_level("INFO", logger="spry.data.sources"):
        assert load_task(Config(dataset=str(tmp_path))).test.texts == ["e"]
    assert "test.tsv is the held-out split; dev.tsv (no labels) left unread" in caplog.text
    # no held-out file with labels: it could not score the model
    (tmp_path / "test.tsv").write_text("index\tsentence\n0\te\n")
    with pytest.raises(ConfigError, match=r"held-out files \['dev.tsv', 'test.tsv'\] have no "
                                          "labels in column 'label'.*test_fraction"):
        load_task(Config(dataset=str(tmp_path)))


def test_a_question_answer_file_is_a_pair_and_unread_text_columns_are_named(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "is it good?", "answer": "yes, it is", "label": 1}\n'
                  '{"question": "is it bad?", "answer": "not at all", "label": 0}\n')
    task = load_task(Config(dataset=str(qa)))
    assert task.columns["pair_column"] == "answer" and task.train.pairs == ["yes, it is",
                                                                             "not at all"]
    extra = tmp_path / "extra.csv"  # a second text column beside an id, a date, a category
    extra.write_text("id,text,notes,date,topic,label\n"
                     "1,good,a long note that nobody reads here,2024-01-01,films,1\n"
                     "2,bad,another long note nobody reads at all,2024-01-02,films,0\n")
    task = load_task(Config(dataset=str(extra)))
    assert task.unread == ("notes",)
    assert load_task(Config(dataset=str(extra), pair_column="notes")).unread == ()


def test_a_latin1_file_and_unusual_column_names_are_refused_with_the_fix(tmp_path):
    latin = tmp_path / "spam.csv"  # a spreadsheet's Windows-1252 export, as many are
    latin.write_bytes("v1,v2,,\nham,see you at the café,,\nspam,WIN £900 now,,\n"
                      .encode("cp1252"))
    with pytest.raises(ConfigError, match="spam.csv is not UTF-8 text \\(byte 0xe9 at line 2"
                                          ".*iconv -f cp1252 -t utf-8"):
        load_task(Config(dataset=str(latin)))
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text("v1,v2,,\nham,see you at the café,,\nspam,WIN £900 now,,\n")
    with pytest.raises(ConfigError, match="set text_column=.*by their values here: "
                                          "text_column=v2 label_column=v1"):
        load_task(Config(dataset=str(utf8)))
    with pytest.raises(ConfigError, match="values here: label_column=v1\\)$"):
        load_task(Config(dataset=str(utf8), text_column="v2"))
    task = load_task(Config(dataset=str(utf8), text_column="v2", label_column="v1"))
    assert task.train.texts[0] == "see you at the café" and task.label_names == ("ham", "spam")


def test_a_label_that_is_a_list_is_refused_and_an_objects_fields_are_columns(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"text": "ok", "label": [0, 2]}) + "\n")
    with pytest.raises(ConfigError, match="odd.jsonl line 1 has a list of labels .*multi-label"):
        load_task(Config(dataset=str(path)))
    # an object is flattened (datasets' flatten): its one field is the label column ...
    path.write_text("".join(json.dumps({"text": t, "label": {"name": n}}) + "\n"
                            for t, n in (("ok", "a"), ("no", "b"))))
    task = load_task(Config(dataset=str(path)))
    assert task.columns["label_column"] == "label.name" and task.label_names == ("a", "b")
    # ... and of several fields, the one to read is asked for by name
    path.write_text(json.dumps({"text": "ok", "label": {"name": "a", "id": 1}}) + "\n")
    with pytest.raises(ConfigError, match=r"has no column 'label'; its columns are \['label.id', "
                                          r"'label.name', 'text'\]; set label_column"):
        load_task(Config(dataset=str(path)))
