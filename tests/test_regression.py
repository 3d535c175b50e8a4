"""task_head=regression: a numeric score per text, from reading the file to `spry predict`."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import torch

from spry.cli import main
from spry.config import Config, ConfigError
from spry.data.sources import load_task, strata
from spry.experiment import run
from spry.predict import predict
from spry.tasks.classifier import pointwise_loss
from spry.tasks.linear_head import (RIDGE_SHRINKAGES, ClassStatistics, gcv_shrinkage,
                                    head_gradient, pooled_moments, ridge_gcv, ridge_head,
                                    score_statistics)
from spry.tasks.regression import score_metrics

WORDS = ("good", "bad")


def _scored(path, n, seed=0):
    """Texts of 'good'/'bad' words; the score is the share of 'good' (0 to 1), which a
    linear head on any reasonable pooled feature can partly read."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "score"])
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
            w.writerow([" ".join(words), f"{words.count('good') / len(words):.3f}"])
    return str(path)


def _config(tiny_bert, tmp_path, **overrides) -> Config:
    base = dict(model=tiny_bert, dataset=_scored(tmp_path / "train.csv", 400),
                test_file=_scored(tmp_path / "test.csv", 80, seed=1), task_head="regression",
                num_clients=8, clients_per_round=4, rounds=2, max_steps=2, max_length=16,
                eval_every=1, output_dir=str(tmp_path / "runs"), run_name="reg")
    base.update(overrides)
    return Config(**base)


# --- the math -------------------------------------------------------------------------
def test_the_ridge_head_from_client_statistics_is_ridge_regression_on_all_the_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64) * torch.tensor([1, 2, .5, 1, 3, 1])
    y = x @ torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, 1.0], dtype=torch.float64) + 4.0
    y = y + 0.5 * torch.randn(300, generator=g, dtype=torch.float64)
    shares = [(0, 40), (40, 170), (170, 300)]  # unequal clients, each its own mean
    stats = [ClassStatistics(i, *score_statistics(x[a:b], y[a:b])[:3], 0.0,
                             score_statistics(x[a:b], y[a:b])[3])
             for i, (a, b) in enumerate(shares)]
    from sklearn.linear_model import Ridge

    for shrinkage in (0.0, 0.3, 0.9):
        w, b = ridge_head(stats, shrinkage)
        # ((1 − λ) Σ + λ μ I)⁻¹ (1 − λ) Σ_fy = (Σ + α/n I)⁻¹ Σ_fy, α = n λ μ / (1 − λ)
        cov = torch.cov(x.T, correction=0)
        alpha = len(x) * shrinkage * cov.diagonal().mean() / (1 - shrinkage)
        ref = Ridge(alpha=float(alpha) + 1e-12).fit(x.numpy(), y.numpy())
        assert w.shape == (1, 6) and b.shape == (1,)
        np.testing.assert_allclose(w[0].numpy(), ref.coef_, rtol=1e-4, atol=1e-5)
        assert float(b) == pytest.approx(ref.intercept_, rel=1e-4, abs=1e-5)
    # more shrinkage, smaller weights: the limit predicts the mean score
    norms = [ridge_head(stats, s)[0].norm() for s in (0.0, 0.5, 0.99)]
    assert norms[0] > norms[1] > norms[2]


def _stats(x, y, shares):
    return [ClassStatistics(i, *score_statistics(x[a:b], y[a:b])[:3], 0.0,
                            score_statistics(x[a:b], y[a:b])[3])
            for i, (a, b) in enumerate(shares)]


def test_the_gcv_error_from_client_statistics_is_the_hat_matrix_formula():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(60, 8, generator=g, dtype=torch.float64)
    y = x[:, 0] - 0.5 * x[:, 3] + torch.randn(60, generator=g, dtype=torch.float64)
    stats = _stats(x, y, [(0, 25), (25, 60)])
    _, _, covariance = pooled_moments(stats)
    xc = x - x.mean(0)
    for shrinkage in (0.1, 0.5):
        alpha = shrinkage * torch.cov(x.T, correction=0).diagonal().mean() / (1 - shrinkage)
        hat = xc @ torch.linalg.solve(xc.T @ xc + len(x) * alpha * torch.eye(8), xc.T)
        hat = hat + 1.0 / len(x)  # the intercept
        residual = y - hat @ y
        gcv = len(x) * residual.pow(2).sum() / (len(x) - hat.trace()) ** 2
        assert ridge_gcv(covariance, torch.tensor(60.0), shrinkage) == pytest.approx(
            float(gcv), rel=1e-4)


def test_gcv_shrinks_hard_with_fewer_examples_than_features_and_little_with_many():
    g = torch.Generator().manual_seed(3)
    truth = torch.randn(40, generator=g, dtype=torch.float64) / 40 ** 0.5
    for n, expected in ((30, lambda s: s >= 0.1), (3000, lambda s: s <= 0.03)):
        x = torch.randn(n, 40, generator=g, dtype=torch.float64)
        y = x @ truth + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        counts, _, covariance = pooled_moments(_stats(x, y, [(0, n // 3), (n // 3, n)]))
        chosen = gcv_shrinkage(covariance, counts.sum())
        assert chosen in RIDGE_SHRINKAGES and expected(chosen), (n, chosen)
        w, _ = ridge_head(_stats(x, y, [(0, n)]))
        assert w.shape == (1, 40)


def test_the_closed_form_head_gradient_of_squared_error_is_autograds():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(7, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, generator=g, dtype=torch.float64, requires_grad=True)
    scores = torch.rand(7, generator=g, dtype=torch.float64) * 5
    logits = features @ weight.T + bias
    pointwise_loss(logits, scores).mean().backward()
    gw, gb = head_gradient(features, logits.detach(), scores)
    torch.testing.assert_close(gw, weight.grad)
    torch.testing.assert_close(gb, bias.grad)
    # class labels keep cross-entropy
    assert pointwise_loss(logits.repeat(1, 2), torch.zeros(7, dtype=torch.long)).shape == (7,)


def test_score_metrics_are_scipys_and_a_constant_prediction_correlates_with_nothing():
    from scipy.stats import pearsonr, spearmanr

    predicted, gold = [0.1, 0.5, 0.4, 0.9, 0.7], [0.0, 0.6, 0.2, 1.0, 0.9]
    m = score_metrics(predicted, gold)
    assert m["test_pearson"] == pytest.approx(pearsonr(predicted, gold)[0])
    assert m["test_spearman"] == pytest.approx(spearmanr(predicted, gold)[0])
    assert m["test_loss"] == pytest.approx(np.mean((np.array(predicted) - gold) ** 2))
    assert m["test_rmse"] == pytest.approx(m["test_loss"] ** 0.5)
    flat = score_metrics([0.5] * 5, gold)
    assert flat["test_pearson"] == 0.0 and flat["test_spearman"] == 0.0


# --- reading scores -------------------------------------------------------------------
def test_scores_are_read_as_numbers_and_split_by_quantile(tiny_bert, tmp_path):
    cfg = _config(tiny_bert, tmp_path, test_file=None, test_fraction=0.2)
    task = load_task(cfg)
    assert task.label_names == () and all(isinstance(y, float) for y in task.train.labels)
    assert len(task.test) == 80 and len(task.train) == 320
    # the held-out fifth spans the scores' range, as each quantile bin gives its share
    assert min(task.test.labels) < 0.3 and max(task.test.labels) > 0.7
    bins = strata([0.3, 0.1, 0.9, 0.5, 0.7], cfg)
    assert bins == [1, 0, 4, 2, 3]
    assert strata([1, 0, 1], Config(dataset="sentiment")) == [1, 0, 1]  # classes stay


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="sentiment", test_file=None), "classification task"),
    (dict(label_names=["a", "b"]), "remove label_names"),
    (dict(head_init="class_means"), "class_means needs classes"),
    (dict(head_init_lda_scale=2.0), "has no softmax"),
    (dict(head_init_shrinkage=0.2), "generalized cross-validation"),
])
def test_what_regression_refuses_names_the_fix(tiny_bert, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_task(_config(tiny_bert, tmp_path, **overrides))


def test_a_score_that_is_no_number_is_refused_with_its_line(tiny_bert, tmp_path):
    cfg = _config(tiny_bert, tmp_path)
    with open(cfg.dataset, "a") as f:
        f.write("good bad,high\n")
    with pytest.raises(ConfigError, match=r"line 402 has 'high' in column 'score', not a number"):
        load_task(cfg)


def test_a_classifier_on_fractional_scores_is_told_of_task_head_regression(tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="set task_head=regression"):
        load_task(_config(tiny_bert, tmp_path, task_head="classifier"))


# --- a run, and predict -----------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    dict(method="spry"), dict(method="backprop"), dict(method="fedmezo"),
    dict(method="spry", communication="per_iteration", server_optimizer="fedavg"),
    dict(method="spry", tangent_sharing="example", peft="lora")],
    ids=["spry", "backprop", "fedmezo", "per-iteration", "per-example-tangents"])
def test_a_regression_run_starts_from_least_squares_and_reports_scores(tiny_bert, tmp_path,
                                                                      overrides):
    out = run(_config(tiny_bert, tmp_path, **overrides), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    test_scores = [float(r["score"]) for r in csv.DictReader(open(tmp_path / "test.csv"))]
    variance = float(np.var(test_scores))  # the squared error of predicting the mean
    # round 0's least-squares head reads the share of "good" words better than the mean does
    assert rows[0]["test_loss"] < 0.8 * variance and rows[0]["test_pearson"] > 0.4
    for r in rows[1:]:
        assert r["generalized_accuracy"] is None and "personalized_accuracy" not in r
        assert r["eval_loss"] > 0 and {"test_rmse", "test_spearman"} <= set(r)
        assert "test_accuracy" not in r and r["steps"] > 0
    assert all(np.isfinite(r["train_loss"]) for r in rows[1:])


def test_predict_on_the_runs_test_file_gives_its_final_scores(tiny_bert, tmp_path, capsys):
    out = run(_config(tiny_bert, tmp_path), progress=False)
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    made = predict(out, tmp_path / "test.csv")
    assert made.count == 80 and made.accuracy is None
    assert made.scores["test_pearson"] == pytest.approx(final["test_pearson"], rel=1e-5)
    assert made.loss == pytest.approx(final["test_loss"], rel=1e-5)
    rows = list(csv.DictReader(open(made.path, newline="")))
    assert list(rows[0]) == ["text", "label", "predicted"]
    # without a score column: predictions only
    unlabelled = tmp_path / "new.csv"
    unlabelled.write_text("text\ngood good good\nbad bad bad\n")
    assert main(["predict", str(out), str(unlabelled)]) == 0
    printed = capsys.readouterr().out
    assert "2 predictions" in printed and "Pearson" not in printed
    good, bad = [float(r["predicted"]) for r in csv.DictReader(
        open(out / "predictions" / "new.csv", newline=""))]
    assert good > bad  # the head learned which word raises the score


def test_compare_and_plot_read_a_regression_run_by_its_correlation(tiny_bert, tmp_path, capsys):
    out = run(_config(tiny_bert, tmp_path), progress=False)
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Target: held-out test Pearson correlation" in table
    assert "final test Pearson" in table and f"{final['test_pearson']:.3f}" in table
    assert main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots.png").is_file()


def test_a_node_reads_its_own_scores(tiny_bert, tmp_path):
    """client_data=node: a SuperNode's file of scores needs no label set."""
    from spry.data import node_client_data
    from spry.models import load_tokenizer

    cfg = _config(tiny_bert, tmp_path, engine="flower", client_data="node", test_file=None)
    tokenizer = load_tokenizer(cfg)
    client = node_client_data(cfg, tokenizer, _scored(tmp_path / "site.csv", 30), client_id=3)
    assert client.label_counts == [30]
    assert len(client.train) + len(client.test) == 30
    assert all(isinstance(y, float) for y in client.train.labels)


def test_a_regression_run_over_flower_matches_the_local_engine(tiny_bert, tmp_path):
    """The least-squares round 0 and a round of scores cross Flower's records unchanged."""
    pytest.importorskip("flwr")
    from safetensors.torch import load_file

    from spry.runner import run as run_engine

    local = _config(tiny_bert, tmp_path, rounds=1, num_clients=4, clients_per_round=3)
    local_out = run_engine(local, progress=False)
    flower_out = run_engine(local.replace(engine="flower", run_name="flower"), progress=False)
    rows = [[json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            for out in (local_out, flower_out)]
    for a, b in zip(*rows):
        assert a["round"] == b["round"] and a["bytes_up"] == b["bytes_up"]
        assert b["test_pearson"] == pytest.approx(a["test_pearson"], abs=1e-5)
    assert rows[1][-1]["generalized_accuracy"] is None
    assert rows[1][-1]["eval_loss"] == pytest.approx(rows[0][-1]["eval_loss"], rel=1e-4)
    a, b = (load_file(str(out / "trainable.safetensors")) for out in (local_out, flower_out))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
