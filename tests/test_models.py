"""Models: PEFT variants, eager attention, units in network order."""

from __future__ import annotations

import pytest

from spry.config import Config, ConfigError
from spry.models import HEAD_UNIT, list_units, load_tokenizer
from spry.tasks.heads import load_model


def _load(path, **kw):
    cfg = Config(model=path, **{"peft": "lora", **kw})  # recipe=spry's default is TinyLoRA
    return load_model(cfg, num_labels=3, pad_token_id=load_tokenizer(cfg).pad_token_id)


def test_lora_units_are_query_value_per_layer_in_order_then_head(tiny_bert):
    units = list_units(_load(tiny_bert))
    names = [u.name for u in units]
    assert names == ["bert.encoder.layer.0.attention.self.query",
                     "bert.encoder.layer.0.attention.self.value",
                     "bert.encoder.layer.1.attention.self.query",
                     "bert.encoder.layer.1.attention.self.value", HEAD_UNIT]
    assert all(len(u.params) == 2 for u in units)  # lora_A, lora_B / head weight, bias
    assert all("lora_A" in u.params[0] and "lora_B" in u.params[1] for u in units[:-1])


def test_attention_is_eager_for_forward_ad(tiny_llama):
    model = _load(tiny_llama)
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("peft, per_unit", [("ia3", 1), ("bitfit", 1), ("head", None)])
def test_other_peft_methods(peft, per_unit, tiny_bert):
    model = _load(tiny_bert, peft=peft)
    units = list_units(model)
    assert units[-1].name == HEAD_UNIT
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(p for u in units for p in u.params)
    if peft == "head":
        assert len(units) == 1
    else:
        assert len(units) > 1 and all(len(u.params) == per_unit for u in units[:-1])
    if peft == "bitfit":
        assert all(n.endswith(".bias") for n in trainable if "classifier" not in n)


def test_lora_rank_and_targets(tiny_opt):
    model = _load(tiny_opt, lora_r=4, target_modules=["q_proj", "k_proj", "v_proj"])
    units = list_units(model)
    assert len(units) == 2 * 3 + 1
    a = dict(model.named_parameters())[units[0].params[0]]
    assert a.shape[0] == 4


def test_dotted_targets_pick_the_output_projections_not_the_pooler(tiny_bert):
    model = _load(tiny_bert, target_modules=["output.dense"])
    names = [u.name for u in list_units(model)][:-1]
    assert names == [f"bert.encoder.layer.{i}.{part}.dense" for i in (0, 1)
                     for part in ("attention.output", "output")]


def test_missing_target_module_is_named(tiny_bert):
    with pytest.raises(ConfigError, match="target_modules: \\['q_proj'\\] not found"):
        _load(tiny_bert, target_modules=["q_proj"])


def test_unloadable_model_is_named():
    with pytest.raises(ConfigError, match="model: cannot load"):
        load_tokenizer(Config(model="/nonexistent/model"))


@pytest.mark.real_model
def test_packaged_minilm_loads_offline():
    cfg = Config()
    model = load_model(cfg, num_labels=2, pad_token_id=load_tokenizer(cfg).pad_token_id)
    units = list_units(model)
    assert len(units) == 6 * 2 + 1  # query/value in 6 layers + head
    assert sum(p.numel() for p in model.parameters()) > 22_000_000
