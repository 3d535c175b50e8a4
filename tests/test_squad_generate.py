"""SQuAD v2 as generation on decoders (task_head=generate): encoding, the scored-positions-only
loss, its forward gradient, greedy decoding and a federated run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spry.config import Config, ConfigError
from spry.estimators.forward_gradient import forward_gradient
from spry.data.squad import QAExample
from spry.models import list_units, load_tokenizer
from spry.tasks.heads import load_model
from spry.tasks.squad_generate import (NO_ANSWER, GenerativeLM, answer_loss, clean_answer,
                                       collate_generative, encode_generative, end_token_id,
                                       generate_answers)
from test_decoders import _grad_dot_tangent, _ShapeLog, _squad_data_dir

CONTEXT = "The tower in Paris was completed in 1889 by the builders."
EXAMPLES = [
    QAExample("q1", "A", "Where is the tower?", CONTEXT, ["Paris"], [CONTEXT.index("Paris")]),
    QAExample("q2", "A", "Who painted it?", CONTEXT, [], []),
    QAExample("q3", "A", "When was it completed?", CONTEXT, ["1889"], [CONTEXT.index("1889")]),
]


def _model(path, **kw):
    cfg = Config(model=path, dataset="squad_v2", task_head="generate", **kw)
    tok = load_tokenizer(cfg)
    return cfg, tok, load_model(cfg, num_labels=2, pad_token_id=tok.pad_token_id)


def test_encoding_prompts_and_targets(tiny_llama):
    tok = load_tokenizer(Config(model=tiny_llama))
    enc = encode_generative(EXAMPLES, tok, max_length=64)
    end = end_token_id(tok)
    assert tok.decode(enc.targets[0][:-1]).strip() == "paris" and enc.targets[0][-1] == end
    assert tok.decode(enc.targets[1][:-1]).strip() == NO_ANSWER  # unanswerable
    prompt = tok.decode(enc.prompts[2], skip_special_tokens=True)
    assert prompt.startswith("context : the tower in paris")
    assert prompt.endswith("question : when was it completed? answer :")


def test_an_answer_cut_off_with_the_context_is_trained_as_unanswerable(tiny_llama):
    tok = load_tokenizer(Config(model=tiny_llama))
    enc = encode_generative(EXAMPLES, tok, max_length=24)  # room for a few context tokens
    assert tok.decode(enc.targets[2][:-1]).strip() == NO_ANSWER  # 1889 fell outside
    assert all(len(p) + len(t) <= 24 for p, t in zip(enc.prompts, enc.targets))
    with pytest.raises(ConfigError, match="max_length"):
        encode_generative(EXAMPLES, tok, max_length=8)


def test_collate_marks_only_target_tokens(tiny_llama):
    tok = load_tokenizer(Config(model=tiny_llama))
    enc = encode_generative(EXAMPLES, tok, max_length=64)
    batch = collate_generative(enc, [0, 1], tok)
    for row, i in enumerate([0, 1]):
        ids = batch["input_ids"][row][batch["target_mask"][row]].tolist()
        assert ids == enc.targets[i]
        assert int(batch["attention_mask"][row].sum()) == len(enc.prompts[i]) + len(enc.targets[i])


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_opt"])
def test_loss_equals_the_full_lm_loss_on_answer_tokens(fixture, request):
    """Scoring only the answer positions gives the causal-LM loss with the prompt masked."""
    _, tok, model = _model(request.getfixturevalue(fixture))
    assert isinstance(model, GenerativeLM)
    enc = encode_generative(EXAMPLES, tok, max_length=64)
    batch = collate_generative(enc, [0, 1, 2], tok)
    labels = batch["input_ids"].masked_fill(~batch["target_mask"], -100)
    lm = model.get_base_model()
    with torch.no_grad():
        full = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  labels=labels).loss
        params = dict(model.named_parameters())
        ours = answer_loss(model, batch)(params)
    assert float(ours) == pytest.approx(float(full), rel=1e-5)


def test_units_are_the_adapters_only(tiny_llama):
    _, _, model = _model(tiny_llama)
    units = list_units(model)
    assert len(units) == 4 and all("lora" in p for u in units for p in u.params)


def test_jvp_scores_only_answer_positions(tiny_llama):
    """No (…, length, vocabulary) tensor: vocabulary logits only for the scored tokens."""
    _, tok, model = _model(tiny_llama)
    vocab = model.config.vocab_size
    enc = encode_generative(EXAMPLES, tok, max_length=64)
    batch = collate_generative(enc, [0, 1, 2], tok)
    scored = int(batch["target_mask"].sum())
    params = {p: dict(model.named_parameters())[p] for u in list_units(model) for p in u.params}
    with _ShapeLog() as log:
        est = forward_gradient(answer_loss(model, batch), params, [5])
    assert math.isfinite(est.loss)
    hidden = model.config.hidden_size
    weights = {(vocab, hidden), (hidden, vocab)}  # the output embedding itself (and its view)
    wide = {s for s in log.shapes if vocab in s and s not in weights}
    assert wide == {(scored, vocab)}, wide


def test_directional_derivative_matches_autograd(tiny_llama):
    _, tok, model = _model(tiny_llama, lora_dropout=0.0)
    named = dict(model.named_parameters())
    params = {p: named[p] for u in list_units(model) for p in u.params}
    with torch.no_grad():  # LoRA B starts at zero: move it off so A has a gradient
        for name, p in params.items():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    batch = collate_generative(encode_generative(EXAMPLES, tok, 64), [0, 1, 2], tok)
    loss_fn = answer_loss(model, batch)
    est = forward_gradient(loss_fn, params, [3])
    # float32: the two orders of summation differ by ~1e-5 relative on this small value
    assert est.scalars[0] == pytest.approx(_grad_dot_tangent(loss_fn, params, 3), rel=1e-4)


def test_clean_answer():
    assert clean_answer(" Paris\nQuestion: more") == "Paris"
    assert clean_answer(" Unanswerable.") == ""
    assert clean_answer("") == ""


def test_batched_greedy_decoding_equals_one_at_a_time(tiny_llama):
    """Left padding must not change what a prompt decodes to."""
    cfg, tok, model = _model(tiny_llama)
    enc = encode_generative(EXAMPLES, tok, max_length=64)
    assert len({len(p) for p in enc.prompts}) > 1  # prompts of different lengths
    batched = generate_answers(model, enc, tok, batch_size=3)
    single = generate_answers(model, enc, tok, batch_size=1)
    assert batched == single and set(batched) == {"q1", "q2", "q3"}
    # the first decoded token is the argmax of the LM at the prompt's last position
    lm = model.get_base_model()
    with torch.no_grad():
        first = int(lm(input_ids=torch.tensor([enc.prompts[0]])).logits[0, -1].argmax())
        out = lm.generate(input_ids=torch.tensor([enc.prompts[0]]), max_new_tokens=1,
                          do_sample=False, pad_token_id=tok.pad_token_id)
    assert int(out[0, -1]) == first


@pytest.mark.parametrize("settings, message", [
    (dict(task_head="generate"), "dataset=squad_v2"),
    (dict(dataset="squad_v2", task_head="generate", peft="head"), "no head to train"),
    (dict(dataset="squad_v2", task_head="generate", head="shared"), "no head unit"),
])
def test_config_checks_generate(settings, message):
    with pytest.raises(ConfigError, match=message):
        Config(**settings)


def test_generate_refuses_an_encoder(tiny_bert):
    with pytest.raises(ConfigError, match="task_head=generate"):
        _model(tiny_bert)


def test_spry_run_generates_answers_on_squad_v2(tiny_llama, tmp_path):
    from spry.experiment import run
    from spry.metrics import read_metrics

    root = _squad_data_dir(tmp_path / "data")
    cfg = Config(model=tiny_llama, dataset="squad_v2", task_head="generate", data_dir=str(root),
                 num_clients=4, clients_per_round=2, rounds=2, max_length=48, max_steps=2,
                 dirichlet_alpha=1.0, personalization_epochs=1, output_dir=str(tmp_path / "runs"),
                 run_name="squad-gen")
    rows = read_metrics(run(cfg, progress=False))
    assert len(rows) == 2 and all(math.isfinite(r["train_loss"]) for r in rows)
    last = rows[-1]
    assert 0 <= last["test_accuracy"] <= last["test_f1"] <= 1  # exact match ≤ F1
    assert 0 <= last["generalized_accuracy"] <= 1 and 0 <= last["personalized_accuracy"] <= 1


def test_multirc_run_records_f1a(tiny_opt, tmp_path):
    from spry.experiment import run
    from spry.metrics import read_metrics
    from test_decoders import _write_multirc

    root = tmp_path / "data" / "multirc"
    root.mkdir(parents=True)
    for name in ("train.jsonl", "val.jsonl"):
        _write_multirc(root / name)
    (root / "train.jsonl").write_text((root / "train.jsonl").read_text() * 8)
    cfg = Config(model=tiny_opt, dataset="multirc", task_head="verbalizer",
                 data_dir=str(tmp_path / "data"), num_clients=2, clients_per_round=2, rounds=1,
                 max_length=48, max_steps=1, dirichlet_alpha=1.0, personalization_epochs=0,
                 output_dir=str(tmp_path / "runs"), run_name="multirc")
    out = run(cfg, progress=False)
    row = read_metrics(out)[-1]
    # the same numbers from the saved global weights, through the pieces themselves
    from safetensors.torch import load_file

    from spry.tasks.classifier import predict_labels
    from spry.data import build_federated_data
    from spry.models import load_trainable
    from spry.tasks.metrics import binary_f1

    tok = load_tokenizer(cfg)
    data = build_federated_data(cfg, tok)
    model = load_model(cfg, 2, tok.pad_token_id, data.task.label_words)
    load_trainable(model, load_file(str(out / "trainable.safetensors")))
    predictions, labels, _ = predict_labels(model, data.test, tok, cfg)
    assert labels == [1, 0, 1]
    assert row["test_f1a"] == pytest.approx(binary_f1(predictions, labels))
    assert row["test_accuracy"] == pytest.approx(
        sum(p == y for p, y in zip(predictions, labels)) / 3)


def test_loss_ignores_padding(tiny_llama):
    """A question's loss does not depend on the other questions in its batch (padding)."""
    _, tok, model = _model(tiny_llama)
    enc = encode_generative(EXAMPLES, tok, max_length=64)
    params = dict(model.named_parameters())
    with torch.no_grad():
        alone = answer_loss(model, collate_generative(enc, [1], tok))(params)
        batch = collate_generative(enc, [0, 1], tok)
        out = model(**batch).logits
        n0 = len(enc.targets[0])
        together = F.cross_entropy(out[n0:], torch.tensor(enc.targets[1]))
    assert float(together) == pytest.approx(float(alone), rel=1e-5)
