"""task_head=multilabel: any number of labels a text, from reading the file to `spry export`."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from spry.cli import main
from spry.config import Config, ConfigError
from spry.data.sources import load_task, rarest_labels, strata
from spry.experiment import run
from spry.predict import predict
from spry.tasks.classifier import pointwise_loss
from spry.tasks.linear_head import (ClassStatistics, class_mean_head, class_statistics,
                                    head_gradient, lda_head, multilabel_class_mean_head,
                                    multilabel_lda_head, multilabel_statistics)
from spry.tasks.metrics import label_set_report, label_set_scores

LABELS = ("good", "bad", "long")


def _labelled(words: list[str]) -> list[str]:
    """A text's labels: each of 'good' and 'bad' it holds, and 'long' past five words."""
    return [w for w in ("good", "bad") if w in words] + (["long"] if len(words) > 5 else [])


def _texts(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        words = [rng.choice(("good", "bad", "film", "plot")) for _ in range(rng.randint(2, 8))]
        yield " ".join(words), _labelled(words)


def _jsonl(path, n, seed=0):
    with open(path, "w") as f:
        for text, labels in _texts(n, seed):
            f.write(json.dumps({"text": text, "labels": labels}) + "\n")
    return str(path)


def _config(tiny_bert, tmp_path, **overrides) -> Config:
    base = dict(model=tiny_bert, dataset=_jsonl(tmp_path / "train.jsonl", 400),
                test_file=_jsonl(tmp_path / "test.jsonl", 80, seed=1), task_head="multilabel",
                num_clients=8, clients_per_round=4, rounds=2, max_steps=2, max_length=16,
                eval_every=1, output_dir=str(tmp_path / "runs"), run_name="ml")
    base.update(overrides)
    return Config(**base)


# --- the math -------------------------------------------------------------------------
def test_the_closed_form_head_gradient_of_binary_cross_entropy_is_autograds():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(7, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    hot = (torch.rand(7, 3, generator=g) < 0.4).double()
    logits = features @ weight.T + bias
    loss = pointwise_loss(logits, hot)
    assert loss.shape == (7,)  # one loss an example, the mean over its labels
    torch.testing.assert_close(loss.mean(), torch.nn.functional.binary_cross_entropy_with_logits(
        logits, hot))  # BCEWithLogitsLoss's mean over every (example, label)
    loss.mean().backward()
    gw, gb = head_gradient(features, logits.detach(), hot)
    torch.testing.assert_close(gw, weight.grad)
    torch.testing.assert_close(gb, bias.grad)


def _clients(x, hot, shares, scatter):
    return [ClassStatistics(i, *multilabel_statistics(x[a:b], hot[a:b], hot.shape[1],
                                                      scatter)[:3], 0.0,
                            *multilabel_statistics(x[a:b], hot[a:b], hot.shape[1], scatter)[3:])
            for i, (a, b) in enumerate(shares)]


def _binary(x, y, shares, scatter):
    return [ClassStatistics(i, *class_statistics(x[a:b], y[a:b], 2, scatter)[:3], 0.0,
                            *class_statistics(x[a:b], y[a:b], 2, scatter)[3:])
            for i, (a, b) in enumerate(shares)]


def _features_and_labels():
    g = torch.Generator().manual_seed(0)
    hot = (torch.rand(300, 3, generator=g) < torch.tensor([0.5, 0.2, 0.05])).float()
    hot[:, 2] = 0.0
    hot[7, 2] = 1.0  # a rare label: one example has it
    x = torch.randn(300, 6, generator=g) + hot @ torch.randn(3, 6, generator=g) * 2
    return x, hot


@pytest.mark.parametrize("shrinkage", [0.0, 0.5, 0.9])
def test_each_labels_discriminant_is_lda_of_the_examples_with_it_against_those_without(
        shrinkage):
    """multilabel_lda_head from a row per label and one of all, the within-class
    covariance of each label taken from the total: the same head as lda_head fed the
    two-class statistics of that label, one logit for its two rows."""
    x, hot = _features_and_labels()
    shares = [(0, 50), (50, 180), (180, 300)]  # unequal clients
    w, b = multilabel_lda_head(_clients(x, hot, shares, True), shrinkage, scale=0.5)
    assert w.shape == (3, 6) and b.shape == (3,)
    for label in range(3):
        w2, b2 = lda_head(_binary(x, hot[:, label].long(), shares, True), shrinkage, 0.5)
        torch.testing.assert_close(w[label], w2[1] - w2[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b[label], b2[1] - b2[0], rtol=1e-4, atol=1e-4)


def test_a_label_no_example_has_is_never_predicted():
    x, hot = _features_and_labels()
    hot[:, 2] = 0.0
    w, b = multilabel_lda_head(_clients(x, hot, [(0, 300)], True), 0.5)
    assert torch.all(w[2] == 0) and b[2] < -30


def test_the_class_mean_head_of_a_label_is_the_cosine_to_with_less_the_cosine_to_without():
    x, hot = _features_and_labels()
    shares = [(0, 120), (120, 300)]
    w, b = multilabel_class_mean_head(_clients(x, hot, shares, False), scale=10.0)
    for label in range(2):
        w2, _ = class_mean_head(_binary(x, hot[:, label].long(), shares, False), 10.0)
        torch.testing.assert_close(w[label], w2[1] - w2[0], rtol=1e-5, atol=1e-5)
    assert torch.all(b == 0)


def test_label_set_scores_are_scikit_learns():
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    predicted = [(0,), (0, 1), (), (2,), (1, 2), (0,)]
    gold = [(0,), (1,), (2,), (2,), (1, 2), (1,)]

    def hot(sets):
        return np.array([[int(c in s) for c in range(3)] for s in sets])

    scores = label_set_scores(predicted, gold)
    assert scores["accuracy"] == pytest.approx(accuracy_score(hot(gold), hot(predicted)))
    assert scores["micro_f1"] == pytest.approx(f1_score(hot(gold), hot(predicted),
                                                        average="micro"))
    assert scores["macro_f1"] == pytest.approx(f1_score(hot(gold), hot(predicted),
                                                        average="macro"))
    p, r, f, s = precision_recall_fscore_support(hot(gold), hot(predicted), zero_division=0)
    for c, row in label_set_report(predicted, gold).items():
        assert row == pytest.approx((p[c], r[c], f[c], s[c]))


# --- reading sets of labels -------------------------------------------------------------
def test_a_list_column_becomes_multi_hot_rows_and_is_dealt_by_its_rarest_label(tiny_bert,
                                                                                tmp_path):
    cfg = _config(tiny_bert, tmp_path)
    task = load_task(cfg)
    assert task.label_names == ("bad", "good", "long")  # sorted, as single labels are
    texts = list(_texts(400, 0))
    for text, row, (_, labels) in zip(task.train.texts, task.train.labels, texts):
        assert row == tuple(float(n in labels) for n in task.label_names)
    assert any(sum(row) == 0 for row in task.train.labels)  # a text with no label is kept
    # stratified by each row's rarest label, one class past them for a row with none
    assert rarest_labels([(1.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0)]) == [1, 0, 3]
    assert strata([(0.0, 1.0, 0.0)], cfg) == [1]


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return str(path)


@pytest.mark.parametrize("layout", ["separator", "python-list", "flag-columns", "class-label"])
def test_the_usual_layouts_of_several_labels_read_alike(tiny_bert, tmp_path, layout):
    """One labels cell joined by a separator (`|` here), a list as Python writes it, one
    0/1 column a label (Jigsaw's layout), and `datasets`' List(ClassLabel) in parquet."""
    texts = list(_texts(60, 0))
    settings = {}
    if layout == "separator":
        path = _write_csv(tmp_path / "d.csv", ["text", "tags"],
                          [[t, "|".join(ls)] for t, ls in texts])
        settings = dict(label_separator="|", label_column="tags")
    elif layout == "python-list":
        path = _write_csv(tmp_path / "d.csv", ["text", "labels"],
                          [[t, repr(ls)] for t, ls in texts])
    elif layout == "flag-columns":
        path = _write_csv(tmp_path / "d.csv", ["comment_text", *LABELS],
                          [[t, *(int(n in ls) for n in LABELS)] for t, ls in texts])
        settings = dict(label_column="good,bad,long")
    else:
        import datasets

        names = ["bad", "good", "long"]
        features = datasets.Features({"text": datasets.Value("string"),
                                      "labels": datasets.List(datasets.ClassLabel(names=names))})
        path = str(tmp_path / "d.parquet")
        datasets.Dataset.from_dict({"text": [t for t, _ in texts],
                                    "labels": [[names.index(n) for n in ls] for _, ls in texts]},
                                   features=features).to_parquet(path)
    task = load_task(_config(tiny_bert, tmp_path, dataset=path, test_file=None, **settings))
    names = task.label_names
    assert set(names) == set(LABELS)
    for row, (_, labels) in zip(task.train.labels, texts):
        assert {n for n, hot in zip(names, row) if hot} == set(labels)


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="sentiment", test_file=None), "has one label a text"),
    (dict(task_head="classifier"), "set task_head=multilabel"),
    (dict(label_column="good,bad", task_head="classifier"), "set task_head=multilabel"),
    (dict(label_separator=";", task_head="classifier"), "only used by task_head=multilabel"),
    (dict(label_separator=" "), "cannot join labels"),
])
def test_what_multilabel_refuses_names_the_fix(tiny_bert, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_task(_config(tiny_bert, tmp_path, **overrides))


def test_bad_label_cells_are_refused_with_their_row(tiny_bert, tmp_path):
    flags = _write_csv(tmp_path / "f.csv", ["text", "good", "bad"], [["a", 1, 0], ["b", 2, 0]])
    with pytest.raises(ConfigError, match=r"line 3 has 2 in column 'good', one of the label"):
        load_task(_config(tiny_bert, tmp_path, dataset=flags, test_file=None,
                          label_column="good,bad"))
    joined = _write_csv(tmp_path / "j.csv", ["text", "labels"],
                        [["a", "x|y"], ["b", "y|z"], ["c", "x"]])
    with pytest.raises(ConfigError, match=r"set label_separator=\|"):
        load_task(_config(tiny_bert, tmp_path, dataset=joined, test_file=None))
    unseen = _jsonl(tmp_path / "unseen.jsonl", 80, seed=1)
    with open(unseen, "a") as f:
        f.write(json.dumps({"text": "good", "labels": ["great"]}) + "\n")
    with pytest.raises(ConfigError, match=r"line 81 has label 'great', outside the label set"):
        load_task(_config(tiny_bert, tmp_path, test_file=unseen))


# --- a run, predict and export ------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    dict(method="spry"), dict(method="backprop"), dict(method="fedmezo"),
    dict(method="spry", head_init="class_means"),
    dict(method="spry", communication="per_iteration", server_optimizer="fedavg"),
    dict(method="spry", tangent_sharing="example", peft="lora")],
    ids=["spry", "backprop", "fedmezo", "class-means", "per-iteration", "per-example-tangents"])
def test_a_multilabel_run_reports_exact_match_and_f1(tiny_bert, tmp_path, overrides):
    out = run(_config(tiny_bert, tmp_path, **overrides), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    # round 0's head reads the words: 'good', 'bad' and length are linear in a mean pool
    assert rows[0]["test_micro_f1"] > 0.6 and rows[0]["test_predicted_labels"] >= 2
    for r in rows:
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_macro_f1"] <= 1
        assert {"test_loss", "test_macro_f1"} <= set(r) and np.isfinite(r["test_loss"])
    for r in rows[1:]:
        assert 0 <= r["generalized_accuracy"] <= 1 and r["steps"] > 0


def test_predict_and_export_give_the_runs_own_label_sets(tiny_bert, tmp_path, capsys):
    out = run(_config(tiny_bert, tmp_path), progress=False)
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    made = predict(out, tmp_path / "test.jsonl")
    assert made.count == 80
    assert made.accuracy == pytest.approx(final["test_accuracy"])
    assert made.micro_f1 == pytest.approx(final["test_micro_f1"])
    assert made.loss == pytest.approx(final["test_loss"], rel=1e-5)
    rows = list(csv.DictReader(open(made.path, newline="")))
    assert list(rows[0]) == ["text", "label", "predicted", "p(bad)", "p(good)", "p(long)"]
    for row in rows:  # a label is predicted exactly where its probability passes 0.5
        chosen = {n for n in ("bad", "good", "long") if float(row[f"p({n})"]) > 0.5}
        assert set(filter(None, row["predicted"].split(","))) == chosen
    assert main(["predict", str(out), str(tmp_path / "test.jsonl")]) == 0
    assert "(exact match), micro-F1" in capsys.readouterr().out
    (tmp_path / "new.txt").write_text("good film\nbad plot plot plot good film\n")  # plain lines
    made = predict(out, tmp_path / "new.txt")
    assert made.count == 2 and made.accuracy is None and set(made.counts) == set(LABELS)
    assert main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert "exact-match rate" in table and "final test micro-F1" in table
    assert f"{final['test_micro_f1']:.3f}" in table
    # the exported sentence-transformers folder gives the same probabilities
    from sentence_transformers import SentenceTransformer

    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported)]) == 0
    info = json.loads((exported / "spry_export.json").read_text())
    assert info["activation"] == "sigmoid" and info["labels"] == ["bad", "good", "long"]
    texts = [r["text"] for r in rows[:5]]
    probabilities = torch.tensor(SentenceTransformer(str(exported)).encode(texts)).sigmoid()
    expected = torch.tensor([[float(r[f"p({n})"]) for n in info["labels"]] for r in rows[:5]])
    torch.testing.assert_close(probabilities, expected, atol=1e-3, rtol=0)


def test_round_zeros_per_label_statistics_cross_flowers_records_unchanged():
    """Over Flower a client's round 0 travels as records: the label rows, the total row and
    the scatter come back as sent, so the server builds the same head. (A whole run over
    Flower against the local engine: checked by hand, as for the classifier in
    tests/test_flower.py; the records are the only multi-label difference.)"""
    pytest.importorskip("flwr")
    from spry.flower import records

    x, hot = _features_and_labels()
    sent = _clients(x, hot, [(0, 120), (120, 300)], True)
    back = [records.read_class_statistics(records.class_statistics_reply(s)) for s in sent]
    for a, b in zip(sent, back):
        assert b.client_id == a.client_id and b.norm_sum == pytest.approx(a.norm_sum)
        for name in ("sums", "counts", "scatter"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name))
    torch.testing.assert_close(multilabel_lda_head(back, 0.5), multilabel_lda_head(sent, 0.5))


def test_a_model_that_predicts_no_label_is_flagged(tmp_path, capsys):
    from spry.cli import _summary

    row = {"round": 3, "generalized_accuracy": 0.1, "test_accuracy": 0.12, "test_micro_f1": 0.0,
           "test_macro_f1": 0.0, "test_loss": 0.69, "test_predicted_labels": 0,
           "bytes_up_total": 1, "bytes_down_total": 1, "elapsed_seconds": 1.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    _summary(tmp_path)
    printed = capsys.readouterr().out
    assert "test accuracy 0.1200 (exact match), micro-F1 0.0000" in printed
    assert "predicts no label for any held-out test text" in printed
    row["test_predicted_labels"] = 2
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    _summary(tmp_path)
    assert "predicts no label" not in capsys.readouterr().out
