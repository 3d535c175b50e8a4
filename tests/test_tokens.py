"""task_head=token: a tag a word, from reading the file (columns or CoNLL) to `spry predict`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spry.cli import main
from spry.config import Config, ConfigError
from spry.data.files import read_rows
from spry.data.sources import load_task, strata
from spry.data.tags import rarest_tags
from spry.experiment import run
from spry.predict import predict
from spry.tasks.classifier import pointwise_loss
from spry.tasks.linear_head import (UNLABELLED_TOKEN, class_statistics, head_gradient,
                                    labelled_tokens)
from spry.tasks.tokens import _first_tokens, encode, entity_scores, is_entity_tagging, token_losses

NAMES = ("Alice", "Bob", "Carol", "Dmitri")
PLACES = ("Paris", "Lagos", "Tokyo")
FILLER = ("met", "in", "the", "a", "visit", "went", "to", "with")


def _sentences(n: int, seed: int):
    """Words and BIO tags: a person's first name (B-PER, a second name I-PER), a place
    (B-LOC), the rest O."""
    rng = random.Random(seed)
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 9)):
            r = rng.random()
            if r < 0.2:
                words += [rng.choice(NAMES), rng.choice(NAMES)]
                tags += ["B-PER", "I-PER"]
            elif r < 0.35:
                words.append(rng.choice(PLACES))
                tags.append("B-LOC")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        yield words, tags


def _conll(path, n, seed=0):
    with open(path, "w") as f:
        f.write("-DOCSTART- O\n\n")
        for words, tags in _sentences(n, seed):
            f.writelines(f"{w}\t{t}\n" for w, t in zip(words, tags))
            f.write("\n")
    return str(path)


def _config(tiny_bert, tmp_path, **overrides) -> Config:
    base = dict(model=tiny_bert, dataset=_conll(tmp_path / "train.conll", 300),
                test_file=_conll(tmp_path / "test.conll", 60, seed=1), task_head="token",
                num_clients=6, clients_per_round=3, rounds=2, max_steps=2, max_length=32,
                eval_every=1, output_dir=str(tmp_path / "runs"), run_name="tag")
    base.update(overrides)
    return Config(**base)


# --- the math -------------------------------------------------------------------------
def _token_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 6), generator=g)
    labels[0, 0] = labels[1, 4:] = labels[2, ::2] = UNLABELLED_TOKEN  # specials, padding, sub-words
    return g, features, labels


def test_the_token_loss_is_the_mean_cross_entropy_over_the_labelled_tokens():
    g, _, labels = _token_batch()
    logits = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    mean = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index=UNLABELLED_TOKEN)
    torch.testing.assert_close(pointwise_loss(logits, labels, "mean"), mean)
    each = pointwise_loss(logits, labels)  # each sentence's share: their mean is the loss
    assert each.shape == (3,)
    torch.testing.assert_close(each.mean(), mean)
    one = F.cross_entropy(logits[1, :4], labels[1, :4], reduction="sum")
    torch.testing.assert_close(each[1], one * 3 / (labels != UNLABELLED_TOKEN).sum())


def test_the_closed_form_head_gradient_over_token_states_is_autograds():
    g, features, labels = _token_batch()
    weight = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    logits = features @ weight.T + bias
    token_losses(logits, labels, "mean").backward()
    gw, gb = head_gradient(features, logits.detach(), labels)
    torch.testing.assert_close(gw, weight.grad)
    torch.testing.assert_close(gb, bias.grad)


def test_round_zero_statistics_of_tokens_are_those_of_the_labelled_tokens():
    g, features, labels = _token_batch()
    f, _, y = labelled_tokens(features, features[..., :4], labels)
    assert len(y) == int((labels != UNLABELLED_TOKEN).sum()) and (y != UNLABELLED_TOKEN).all()
    sums, counts = class_statistics(f, y, 4, scatter=False)[:2]
    for c in range(4):
        assert counts[c] == int((labels == c).sum())


def test_each_word_is_read_at_its_first_token():
    from spry.models import load_tokenizer

    tokenizer = load_tokenizer(Config(model="all-minilm-l6-v2"))
    words = ["Empire", "State", "Building", "=", "ESB", "unbelievably"]
    enc = tokenizer(" ".join(words), return_offsets_mapping=True)
    at = _first_tokens(words, enc["offset_mapping"])
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert [tokens[t] for t in at] == ["empire", "state", "building", "=", "es", "un"]
    from spry.data.examples import Examples

    cut = encode(Examples([" ".join(words)], [[1, 2, 2, 0, 1, 0]], words=[words]), tokenizer, 6)
    assert cut.word_tokens[0][-2:] == [-1, -1]  # ESB and on: past max_length
    assert [t for t in cut.labels[0] if t != UNLABELLED_TOKEN] == [1, 2, 2, 0]


def test_entity_scores_count_whole_entities():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert entity_scores(gold, gold)["test_entity_f1"] == 1.0
    half = entity_scores(gold, [["B-PER", "O", "O", "B-LOC"]])  # PER cut short: wrong
    assert half["test_entity_precision"] == 0.5 and half["test_entity_recall"] == 0.5
    assert is_entity_tagging(("B-PER", "I-PER", "O")) and not is_entity_tagging(("NOUN", "VERB"))


# --- reading ---------------------------------------------------------------------------
def test_a_conll_file_reads_a_sentence_a_row(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                    "Peter\tB-PER\nBlackburn\tI-PER\n")
    rows = read_rows(path)
    assert rows.rows == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                         {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}]
    assert [rows.name(i) for i in range(2)] == ["line 3", "line 7"]
    path.write_text("EU B-ORG\nrejects\n")
    with pytest.raises(ConfigError, match=r"a.conll line 2 \('rejects'\) has a word and no tag"):
        read_rows(path)
    with pytest.raises(ConfigError, match=r"line 2 has a word and no tag, and other lines"):
        read_rows(path, unlabelled=True)  # spry predict: words alone, or every word tagged
    path.write_text("EU\nrejects\n\nPeter\n")
    assert read_rows(path, unlabelled=True).rows == [{"tokens": ["EU", "rejects"]},
                                                     {"tokens": ["Peter"]}]


def test_a_conllu_file_reads_form_and_upos(tmp_path):
    path = tmp_path / "ud.conllu"
    path.write_text("# sent_id = 1\n# text = Don't go\n1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
                    "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n2\tn't\tnot\tPART\tRB\t_\t3\t_\t_\t_\n"
                    "3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n3.1\tx\tx\tX\t_\t_\t_\t_\t_\t_\n\n")
    assert read_rows(path).rows == [{"tokens": ["Do", "n't", "go"],
                                     "tags": ["AUX", "PART", "VERB"]}]


@pytest.mark.parametrize("layout", ["jsonl-names", "jsonl-ints", "csv-strings", "parquet"])
def test_the_usual_layouts_of_tagged_words_read_alike(tiny_bert, tmp_path, layout):
    sentences = list(_sentences(30, 0))
    names = ("B-LOC", "B-PER", "I-PER", "O")
    path, extra = tmp_path / "train.jsonl", {}
    if layout == "jsonl-names":
        path.write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n"
                                for w, t in sentences))
    elif layout == "jsonl-ints":
        path.write_text("".join(json.dumps({"words": w, "tags": [names.index(x) for x in t]})
                                + "\n" for w, t in sentences))
        extra = dict(label_names=list(names))
    elif layout == "csv-strings":
        path = tmp_path / "train.csv"
        path.write_text("sentence,labels\n" + "".join(f'"{" ".join(w)}","{" ".join(t)}"\n'
                                                      for w, t in sentences))
    else:
        datasets = pytest.importorskip("datasets")
        features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                      "ner_tags": datasets.Sequence(datasets.ClassLabel(
                                          names=list(names)))})
        path = tmp_path / "train.parquet"
        datasets.Dataset.from_dict({"tokens": [w for w, _ in sentences],
                                    "ner_tags": [[names.index(x) for x in t]
                                                 for _, t in sentences]},
                                   features=features).to_parquet(str(path))
    task = load_task(Config(model=tiny_bert, dataset=str(path), task_head="token", **extra))
    assert task.label_names == names
    assert task.train.words == [w for w, _ in sentences]
    assert task.train.labels == [[names.index(x) for x in t] for _, t in sentences]
    assert task.train.texts[0] == " ".join(sentences[0][0])


def test_bad_tagged_rows_are_refused_with_their_line(tiny_bert, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O", "O"]}) + "\n"
                    + json.dumps({"tokens": ["a", "b", "c"], "tags": ["O", "O"]}) + "\n")
    cfg = Config(model=tiny_bert, dataset=str(path), task_head="token")
    with pytest.raises(ConfigError, match=r"line 2 has 3 words in column 'tokens' and 2 tags"):
        load_task(cfg)
    path.write_text(json.dumps({"tokens": [], "tags": []}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1 has no words in column 'tokens'"):
        load_task(cfg)
    train, test = tmp_path / "t.conll", tmp_path / "test.conll"
    train.write_text("a O\nb B-PER\n\n")
    test.write_text("a O\nb B-MISC\n\n")
    with pytest.raises(ConfigError, match=r"test.conll line 1 has label 'B-MISC', outside the "
                                          r"label set \['B-PER', 'O'\]"):
        load_task(Config(model=tiny_bert, dataset=str(train), test_file=str(test),
                         task_head="token"))


def test_a_tagging_file_under_another_head_is_told_task_head_token(tiny_bert, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n"
                            for w, t in _sentences(5, 0)))
    with pytest.raises(ConfigError, match="a tag a word: set task_head=token"):
        load_task(Config(model=tiny_bert, dataset=str(path)))
    conll = tmp_path / "wnut.txt"  # CoNLL lines in a .txt, read as fastText
    conll.write_text("Empire\tB-location\nState\tI-location\n\n")
    with pytest.raises(ConfigError, match=r"rename it to wnut.conll and set task_head=token"):
        load_task(Config(model=tiny_bert, dataset=str(conll)))


@pytest.mark.parametrize("overrides, message", [
    (dict(pooling="mean"), "task_head=token reads every token's state"),
    (dict(dataset="sentiment", test_file=None), "task_head: token tags each word"),
    (dict(pair_column="tags"), "pair_column: task_head=token tags the words of one text"),
    (dict(text_column="words"), r"text_column: .* has no column 'words' for the words"),
])
def test_what_token_refuses_names_the_fix(tiny_bert, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run(_config(tiny_bert, tmp_path, **overrides), progress=False)


def test_sentences_are_dealt_by_their_rarest_tag(tiny_bert, tmp_path):
    assert rarest_tags([[3, 3, 0], [3, 1], [3]]) == [0, 1, 3]
    cfg = _config(tiny_bert, tmp_path)
    task = load_task(cfg)
    assert strata(task.train.labels, cfg) == rarest_tags(task.train.labels)


# --- runs ------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    {},
    dict(method="backprop"),
    dict(peft="lora", tangent_sharing="example", tangents=2),
    dict(communication="per_iteration", server_optimizer="fedavg"),
])
def test_a_token_run_reports_word_accuracy_and_entity_f1(tiny_bert, tmp_path, overrides, caplog):
    out = run(_config(tiny_bert, tmp_path, **overrides), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows][-3:] == [0, 1, 2] or [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["test_accuracy"] <= 1 and np.isfinite(r["test_loss"])
        assert 0 <= r["test_entity_f1"] <= 1 and 0 <= r["test_macro_f1"] <= 1
    if rows[0]["round"] == 0:  # the discriminant reads the words: names and places differ
        assert rows[0]["test_entity_f1"] > 0.5
    assert not [m for m in caplog.messages if "vmap" in m]  # the tangents were batched


def test_predict_tags_each_word_as_the_run_scored_it(tiny_bert, tmp_path, capsys):
    out = run(_config(tiny_bert, tmp_path), progress=False)
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    made = predict(out, tmp_path / "test.conll")
    assert made.count == 60
    assert made.accuracy == pytest.approx(final["test_accuracy"])
    assert made.entities["test_entity_f1"] == pytest.approx(final["test_entity_f1"])
    assert made.loss == pytest.approx(final["test_loss"], rel=1e-5)
    lines = made.path.read_text().split("\n\n")[0].splitlines()
    first = next(_sentences(60, 1))
    assert [line.split("\t")[:2] for line in lines] == [list(x) for x in zip(*first)]
    assert main(["predict", str(out), str(tmp_path / "test.conll")]) == 0
    assert "(words), entity F1" in capsys.readouterr().out
    (tmp_path / "new.conll").write_text("Alice\nmet\nBob\n\nParis\n")  # words alone
    made = predict(out, tmp_path / "new.conll", out=tmp_path / "new.csv")
    assert made.count == 2 and made.accuracy is None
    assert (tmp_path / "new.csv").read_text().splitlines()[1].startswith("Alice met Bob,")
    assert main(["compare", str(out)]) == 0
    assert "final test entity F1" in capsys.readouterr().out
    assert main(["export", str(out), str(tmp_path / "exported")]) != 0  # no sentence head
    assert "export takes runs of task_head=classifier or multilabel" in capsys.readouterr().err


def test_integer_tags_without_names_are_named_by_label_names(tiny_bert, tmp_path, caplog):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"tokens": w, "ner_tags": [("O", "B-PER", "I-PER",
                                                                   "B-LOC").index(x) for x in t]})
                            + "\n" for w, t in _sentences(20, 0)))
    caplog.set_level("INFO")
    task = load_task(Config(model=tiny_bert, dataset=str(path), task_head="token"))
    assert task.label_names == ("0", "1", "2", "3")
    assert "label_names=O,B-PER,I-PER,... in their order names them" in caplog.text
    named = load_task(Config(model=tiny_bert, dataset=str(path), task_head="token",
                             label_names=["O", "B-PER", "I-PER", "B-LOC"]))
    assert named.train.labels == task.train.labels and is_entity_tagging(named.label_names)


def test_a_decoder_tags_words_too(tiny_llama, tmp_path):
    """A causal LM's token states read by the same head (each sees its left context only)."""
    out = run(_config(tiny_llama, tmp_path, rounds=1), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    assert all(0 <= r["test_entity_f1"] <= 1 and np.isfinite(r["test_loss"]) for r in rows)


def test_held_out_words_past_max_length_are_counted_and_told(tiny_bert, tmp_path, caplog):
    from spry.experiment import build, cut_words

    assert cut_words([[0, 1, -1], [-1, -1], [2]]) == 3
    caplog.set_level("WARNING")
    exp = build(_config(tiny_bert, tmp_path, max_length=6))
    cut = cut_words(exp.data.test.word_tokens)
    assert cut > 0 and f"{cut} of the " in caplog.text and "count as predicted `O`" in caplog.text


def test_a_supernodes_own_conll_file_is_its_client(tiny_bert, tmp_path):
    """client_data=node (a Flower deployment): a site's CoNLL file, tags against the run's."""
    from spry.data import node_client_data
    from spry.models import load_tokenizer

    cfg = Config(model=tiny_bert, engine="flower", client_data="node", task_head="token",
                 label_names=["O", "B-PER", "I-PER", "B-LOC"], client_test_fraction=0.2)
    path = _conll(tmp_path / "site.conll", 10)
    data = node_client_data(cfg, load_tokenizer(cfg), path, client_id=1, encoder=encode)
    assert (len(data.train), len(data.test)) == (8, 2)
    words = sum(len(t) for t in data.train.word_tags) + sum(len(t) for t in data.test.word_tags)
    assert sum(data.label_counts) == words  # a count a word, in the run's tag order


def test_the_token_heads_default_learning_rate_is_its_own():
    """recipe=spry: 1e-3 for the token head (docs/tokens.md), 1e-4 for a sentence head."""
    assert Config(task_head="token").head_lr == 1e-3
    assert Config().head_lr == 1e-4
    assert Config(task_head="token", head_lr=1e-4).head_lr == 1e-4
    assert Config(task_head="token", recipe="paper").head_lr is None  # client_lr's
