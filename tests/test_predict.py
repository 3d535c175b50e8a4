"""`spry predict`: a finished run's model on new texts gives what the run measured."""

from __future__ import annotations

import csv
import gzip
import json

import datasets
import pytest

from spry.cli import main
from spry.config import Config, ConfigError
from spry.experiment import run
from spry.predict import predict


def _nli(path, n, offset=0):
    labels = ("entailment", "neutral", "contradiction")
    # some premises carry AG News's backslash line breaks, which both read as spaces
    rows = [{"premise": f"a person is walking {i}" + ("\\n fast" * (i % 4 == 1)),
             "hypothesis": f"someone moves {i % 5}",
             "label": labels[i % 3]} for i in range(offset, offset + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(params=[{}, {"peft": "lora", "lora_factors": "a"}], ids=["tinylora", "lora-a"])
def finished(request, tiny_bert, tmp_path):
    """A finished run on a local sentence-pair file with its own test file: on the default
    adapter, and on LoRA A factors beside B factors frozen at seeded random values (which
    predict must rebuild as the run drew them)."""
    train = _nli(tmp_path / "train.jsonl", 48)
    test = _nli(tmp_path / "test.jsonl", 18, offset=100)
    cfg = Config(model=tiny_bert, dataset=train, test_file=test, num_clients=4,
                 clients_per_round=2, rounds=2, max_steps=2, max_length=16,
                 personalization_epochs=0, output_dir=str(tmp_path / "runs"), run_name="nli",
                 **request.param)
    return run(cfg, progress=False), test


def test_predicting_the_runs_test_file_gives_its_final_test_accuracy(finished, tmp_path):
    out, test = finished
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    made = predict(out, test)
    assert made.count == 18 and made.accuracy == pytest.approx(final["test_accuracy"])
    # the loss tells apart a model rebuilt otherwise (other frozen projections, no weights)
    assert made.loss == pytest.approx(final["test_loss"], rel=1e-5)
    assert made.path == out / "predictions" / "test.csv"
    # macro-F1 and the per-class report count the same predictions as metrics.jsonl
    assert made.macro_f1 == pytest.approx(final["test_macro_f1"])
    assert set(made.report) <= {"entailment", "neutral", "contradiction"}
    assert sum(support for *_, support in made.report.values()) == 18
    with open(made.path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["text", "pair", "label", "predicted", "probability",
                             "p(contradiction)", "p(entailment)", "p(neutral)"]
    assert rows[0]["text"] == "a person is walking 100" and rows[0]["label"] == "neutral"
    for r in rows:
        p = [float(r[f"p({n})"]) for n in ("contradiction", "entailment", "neutral")]
        assert sum(p) == pytest.approx(1, abs=1e-3) and float(r["probability"]) == max(p)
    assert sum(made.counts.values()) == 18
    # without labels: predictions only, the same ones
    unlabelled = tmp_path / "new.jsonl"
    unlabelled.write_text("".join(json.dumps({"premise": r["text"], "hypothesis": r["pair"]})
                                  + "\n" for r in rows))
    again = predict(out, unlabelled, out=tmp_path / "new.csv")
    assert again.accuracy is None and again.counts == made.counts
    assert again.macro_f1 is None and again.report is None
    # the same test file gzipped, and as parquet whose ClassLabel orders the names its own
    # way: read by name, the same accuracy; predictions named without the suffixes
    with open(test, "rb") as f, gzip.open(tmp_path / "test.jsonl.gz", "wb") as g:
        g.write(f.read())
    zipped = predict(out, tmp_path / "test.jsonl.gz")
    assert zipped.accuracy == made.accuracy and zipped.path == out / "predictions" / "test.csv"
    order = ["neutral", "entailment", "contradiction"]
    features = datasets.Features({"premise": datasets.Value("string"),
                                  "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=order)})
    source = [json.loads(line) for line in open(test)]
    datasets.Dataset.from_list([dict(r, label=order.index(r["label"])) for r in source],
                               features=features).to_parquet(str(tmp_path / "cl.parquet"))
    assert predict(out, tmp_path / "cl.parquet").accuracy == made.accuracy
    datasets.Dataset.from_list([dict(r, label=-1) for r in source], features=features
                               ).to_parquet(str(tmp_path / "unlabelled.parquet"))
    assert predict(out, tmp_path / "unlabelled.parquet").accuracy is None


def test_predict_refuses_what_it_cannot_read_before_any_work(finished, tmp_path, capsys):
    out, test = finished
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"sentence": "a", "label": "neutral"}\n')
    with pytest.raises(ConfigError, match="no column 'premise', which the run read as its "
                                          "text"):
        predict(out, wrong)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"premise": "a", "hypothesis": "b", "label": "maybe"}\n')
    with pytest.raises(ConfigError, match="line 1 has label 'maybe', which the run did not "
                                          "train on"):
        predict(out, unknown)
    with pytest.raises(ConfigError, match="only device=.*may change, not \\['rounds=3'\\]"):
        predict(out, test, overrides=["rounds=3"])
    with pytest.raises(ConfigError, match="has no config.yaml"):
        predict(tmp_path, test)
    datasets.Dataset.from_list([{"premise": "a", "hypothesis": "b"}]).save_to_disk(
        str(tmp_path / "saved"))
    with pytest.raises(ConfigError, match=r"saved is a folder; give the file to predict \(a "
                                          r"split of this save_to_disk folder as one"):
        predict(out, tmp_path / "saved")
    (out / "trainable.safetensors").rename(out / "kept.safetensors")
    assert main(["predict", str(out), test]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_a_headerless_runs_predictions_read_files_with_or_without_the_header(tiny_bert,
                                                                              tmp_path, capsys):
    lines = [f"good film {i}\tpos\n" if i % 2 else f"bad film {i}\tneg\n" for i in range(40)]
    (tmp_path / "train.tsv").write_text("".join(lines))
    out = run(Config(model=tiny_bert, dataset=str(tmp_path / "train.tsv"),
                     column_names=["text", "label"], test_fraction=0.25, num_clients=2,
                     clients_per_round=2, rounds=1, max_steps=1, max_length=16,
                     personalization_epochs=0, output_dir=str(tmp_path / "runs"),
                     run_name="tsv"), progress=False)
    (tmp_path / "bare.tsv").write_text("".join(lines[:6]))
    (tmp_path / "named.tsv").write_text("text\tlabel\n" + "".join(lines[:6]))
    assert main(["predict", str(out), str(tmp_path / "bare.tsv")]) == 0
    assert main(["predict", str(out), str(tmp_path / "named.tsv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    scored = [line for line in printed if line.startswith("6 predictions: ")]
    assert len(scored) == 2 and "accuracy" in scored[0]
    assert scored[0].split("accuracy")[1] == scored[1].split("accuracy")[1]  # F1, loss too
    # each labelled prediction prints the per-class report: a header and a row per label
    assert printed.count("label  precision  recall  f1      support") == 2
    rows = [line.split()[0] for line in printed if line.split()[0] in ("neg", "pos")]
    assert rows == ["neg", "pos", "neg", "pos"]
