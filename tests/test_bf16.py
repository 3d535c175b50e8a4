"""bfloat16 end to end, on CPU: the lean forward-AD rules, the estimators and whole runs.

On a GPU Spry runs in bf16 (benchmarks/gpu.py); these tests run the same code paths in
bf16 here, so a rule or a cast that breaks in bf16 fails CI, not the first GPU run."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.func import jvp

from spry.config import Config, ConfigError
from spry.estimators import forward_gradient
from spry.estimators.example_tangents import example_forward_gradient
from spry.estimators.lean_jvp import lean_forward_ad
from spry.metrics import read_metrics
from spry.models import load_tokenizer, trainable_params
from spry.runner import run
from spry.tasks.classifier import classification_loss
from spry.tasks.heads import load_model
from tiny_lora import model_and_batch

BF16 = dict(rtol=2e-2, atol=2e-2)


def _inputs(*shapes):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g).to(torch.bfloat16) for s in shapes]


def test_lean_linear_in_bf16_matches_the_builtin_rule():
    x, w, b, xt, wt, bt = _inputs((3, 5, 8), (6, 8), (6,), (3, 5, 8), (6, 8), (6,))
    with torch.no_grad():
        plain = jvp(F.linear, (x, w, b), (xt, wt, bt))
        with lean_forward_ad():
            lean = jvp(F.linear, (x, w, b), (xt, wt, bt))
    assert lean[1].dtype == torch.bfloat16
    torch.testing.assert_close(lean[0], plain[0])
    torch.testing.assert_close(lean[1], plain[1], **BF16)


def test_lean_softmax_in_bf16_matches_the_builtin_rule():
    x, xt = _inputs((2, 3, 7), (2, 3, 7))
    call = lambda v: F.softmax(v, dim=-1)  # noqa: E731
    with torch.no_grad():
        plain = jvp(call, (x,), (xt,))
        with lean_forward_ad():
            lean = jvp(call, (x,), (xt,))
    assert lean[1].dtype == torch.bfloat16
    torch.testing.assert_close(lean[1], plain[1], **BF16)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_forward_gradient_in_bf16_agrees_with_backprop(fixture, request):
    # Prepare: d = ∇L·v from one jvp must match autograd's gradient dotted with v.
    model, batch = model_and_batch(request.getfixturevalue(fixture), dtype="bfloat16")
    params = {n: p.detach() for n, p in sorted(trainable_params(model).items())}
    loss_fn = classification_loss(model, batch)
    # Execute
    est = forward_gradient(loss_fn, params, [3])
    live = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    grads = torch.autograd.grad(loss_fn(live), list(live.values()))
    tangent = {n: g / est.scalars[0] for n, g in est.grads.items()}  # v = g_est / d
    exact = sum(float((g.float() * tangent[n].float()).sum()) for n, g in zip(live, grads))
    # Assert
    # peft keeps adapter weights in float32 over a bf16 body (its autocast_adapter_dtype)
    assert all(est.grads[n].dtype == p.dtype for n, p in params.items())
    assert any(p.dtype == torch.bfloat16 for p in model.parameters())
    assert math.isfinite(est.loss) and math.isfinite(est.scalars[0])
    assert est.scalars[0] == pytest.approx(exact, rel=0.1, abs=1e-2)


def test_per_example_tangents_run_in_bf16(tiny_bert):
    model, batch = model_and_batch(tiny_bert, dtype="bfloat16")
    params = {n: p.detach() for n, p in trainable_params(model).items()
              if "lora" in n and "lora_A" not in n}
    est = example_forward_gradient(classification_loss(model, batch, per_example=True),
                                   params, [5])
    assert all(torch.isfinite(g.float()).all() for g in est.grads.values())


@pytest.mark.parametrize("extra", [dict(), dict(communication="per_iteration",
                                                server_optimizer="fedavg")])
def test_a_spry_run_in_bf16_trains_and_saves_finite_weights(tiny_config, extra):
    # Prepare: the package defaults (pooled head from class means, exact head gradient,
    # per-example tangents) per epoch; per iteration the replayed optimizer steps too.
    cfg = tiny_config(dtype="bfloat16", rounds=2, head_init="class_means", head="shared",
                      **extra)
    # Execute
    out = run(cfg, progress=False)
    # Assert
    rows = [r for r in read_metrics(out) if r["round"] >= 1]
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert all(r["skipped_steps"] == 0 for r in rows)
    weights = load_file(str(out / "trainable.safetensors"))
    assert all(torch.isfinite(t.float()).all() for t in weights.values())
    assert {t.dtype for t in weights.values()} <= {torch.bfloat16, torch.float32}
    assert rows[-1]["test_accuracy"] is not None


def test_eval_dtype_bf16_evaluates_in_bf16_and_leaves_training_alone(tiny_config, monkeypatch):
    """eval_dtype=bfloat16: the evaluation passes run under bf16 autocast (the classifier's
    matmuls come out in bf16), the training rounds are the float32 run's to the last digit,
    and the scores stay close to float32's."""
    import spry.client as client

    seen = []
    inner = client.head_of

    def spying(cfg):
        head = inner(cfg)
        evaluate = head.evaluate

        def recording(model, *args):
            hook = model.register_forward_hook(
                lambda m, i, out: seen.append(out.logits.dtype))
            try:
                return evaluate(model, *args)
            finally:
                hook.remove()
        return dataclasses.replace(head, evaluate=recording)

    monkeypatch.setattr(client, "head_of", spying)
    runs = {dtype: [r for r in read_metrics(run(tiny_config(
        eval_dtype=dtype, run_name=f"eval-{dtype}", rounds=2), progress=False)) if r["round"] >= 1]
        for dtype in (None, "bfloat16")}
    assert seen and set(seen) == {torch.float32, torch.bfloat16}  # one run each way
    fp32, bf16 = runs[None], runs["bfloat16"]
    assert [r["train_loss"] for r in fp32] == [r["train_loss"] for r in bf16]
    assert bf16[-1]["eval_loss"] == pytest.approx(fp32[-1]["eval_loss"], rel=5e-2)
    with pytest.raises(ConfigError, match="eval_dtype"):
        tiny_config(eval_dtype="float16")


def test_a_bf16_body_keeps_its_pooled_head_in_float32(tiny_bert):
    """A bf16 weight drops an AdamW step of 1e-4 on a head of size ~1: the head stays
    float32 over the bf16 body and reads the pooled features in float32."""
    cfg = Config(model=tiny_bert, dtype="bfloat16")
    model = load_model(cfg, 2, load_tokenizer(cfg).pad_token_id)
    head = [p for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
    body = [p for n, p in model.named_parameters() if "embeddings" in n]
    assert head and {p.dtype for p in head} == {torch.float32}
    assert {p.dtype for p in body} == {torch.bfloat16}
    out = model(input_ids=torch.tensor([[2, 5, 6, 3]]), attention_mask=torch.ones(1, 4))
    assert out.features.dtype == out.logits.dtype == torch.float32
