"""`spry export`: a finished run's model, loaded by sentence-transformers or transformers
without Spry, gives the predictions `spry predict` gives."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from spry.cli import main
from spry.config import Config, ConfigError
from spry.experiment import run
from spry.export import EXPORT_INFO, export
from spry.predict import predict


def _reviews(path, n, offset=0, score=False):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(offset, offset + n):
            good = i % 2 == 0
            w.writerow([f"{'a good fine film' if good else 'a bad dull film'} {i}",
                        (4.5 if good else 1.0) if score else ("pos" if good else "neg")])
    return str(path)


def _finished(tiny_bert, tmp_path, **settings):
    score = settings.get("task_head") == "regression"
    cfg = Config(model=tiny_bert, dataset=_reviews(tmp_path / "train.csv", 40, score=score),
                 test_fraction=0.25, num_clients=4, clients_per_round=2, rounds=1, max_steps=2,
                 max_length=16, personalization_epochs=0, output_dir=str(tmp_path / "runs"),
                 run_name="run", **settings)
    return run(cfg, progress=False)


def _predicted(out, tmp_path, score=False):
    """What spry predict gives on 12 new texts: (the texts, its csv rows)."""
    data = _reviews(tmp_path / "new.csv", 12, offset=100, score=score)
    made = predict(out, data, out=tmp_path / "predicted.csv")
    with open(made.path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], rows


@pytest.mark.parametrize("settings", [{}, {"peft": "lora", "lora_factors": "a"}],
                         ids=["tinylora", "lora-a"])
def test_a_pooled_head_exports_as_a_sentence_transformer_that_predicts_as_spry(
        tiny_bert, tmp_path, settings):
    from sentence_transformers import SentenceTransformer

    out = _finished(tiny_bert, tmp_path, **settings)
    texts, rows = _predicted(out, tmp_path)
    folder = export(out, tmp_path / "exported")
    info = json.loads((folder / EXPORT_INFO).read_text())
    assert info["format"] == "sentence-transformers" and info["labels"] == ["neg", "pos"]
    logits = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    assert logits.shape == (12, 2)
    probabilities = logits.softmax(-1)
    for p, row in zip(probabilities, rows):
        assert info["labels"][int(p.argmax())] == row["predicted"]
        assert float(p.max()) == pytest.approx(float(row["probability"]), abs=1e-3)


def test_pooling_model_exports_for_the_transformers_pipeline(tiny_bert, tmp_path):
    from transformers import pipeline

    out = _finished(tiny_bert, tmp_path, pooling="model", peft="lora")
    texts, rows = _predicted(out, tmp_path)
    folder = export(out, tmp_path / "exported")
    assert json.loads((folder / EXPORT_INFO).read_text())["format"] == "transformers"
    classify = pipeline("text-classification", model=str(folder), device="cpu")
    for got, row in zip(classify(texts), rows):
        assert got["label"] == row["predicted"]
        assert got["score"] == pytest.approx(float(row["probability"]), abs=1e-3)


def test_a_regression_head_exports_its_score(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = _finished(tiny_bert, tmp_path, task_head="regression")
    texts, rows = _predicted(out, tmp_path, score=True)
    folder = export(out, tmp_path / "exported")
    assert json.loads((folder / EXPORT_INFO).read_text())["labels"] == ["score"]
    scores = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    expected = torch.tensor([float(r["predicted"]) for r in rows])
    torch.testing.assert_close(scores[:, 0], expected, atol=1e-3, rtol=0)


def test_export_refuses_what_it_cannot_write_before_any_work(tiny_bert, tmp_path, capsys):
    out = _finished(tiny_bert, tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("kept")
    with pytest.raises(ConfigError, match=r"taken exists and is not an empty folder; give a new "
                                          r"folder \(nothing was overwritten\)"):
        export(out, taken)
    assert (taken / "mine.txt").read_text() == "kept"
    # a pair task on the pooled head: no sentence-transformers folder reads it
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"premise": f"a man walks {i}", "hypothesis": "he moves",
                                         "label": ["yes", "no"][i % 2]}) + "\n"
                             for i in range(40)))
    pair_run = run(Config(model=tiny_bert, dataset=str(pairs), test_fraction=0.25, num_clients=4,
                          clients_per_round=2, rounds=1, max_steps=2, max_length=16,
                          personalization_epochs=0, output_dir=str(tmp_path / "runs"),
                          run_name="pairs"), progress=False)
    with pytest.raises(ConfigError, match=r"reads text pairs \('premise', 'hypothesis'\).*a "
                                          r"run with pooling=model exports"):
        export(pair_run, tmp_path / "pairs-out")
    assert not (tmp_path / "pairs-out").exists()
    # the CLI says where it wrote, and names a bad input as an error
    assert main(["export", str(out), str(tmp_path / "cli")]) == 0
    assert "a sentence-transformers model" in capsys.readouterr().out
    assert main(["export", str(tmp_path), str(tmp_path / "none")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
