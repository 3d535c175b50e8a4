"""The config schema: defaults are the paper's, bad input is named before any work."""

from __future__ import annotations

import pytest

from spry.config import Config, ConfigError


def test_defaults_are_the_papers():
    c = Config(recipe="paper")
    assert (c.peft, c.lora_r, c.lora_alpha, c.lora_dropout) == ("lora", 1, 1.0, 0.1)
    assert (c.tangents, c.client_optimizer, c.client_lr) == (1, "adamw", 1e-4)
    assert (c.server_optimizer, c.server_lr, c.server_beta1, c.server_beta2, c.server_tau) == (
        "fedyogi", 1e-2, 0.9, 0.99, 1e-3)
    assert (c.batch_size, c.max_length, c.local_epochs, c.personalization_epochs) == (8, 64, 1, 5)


def test_overrides_are_parsed_as_yaml_scalars(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 3\nclient_lr: 0.001\n")
    c = Config.from_yaml(path, ["client_lr=1e-3", "target_modules=[query, key]", "run_name=no",
                                "max_steps=null", "dirichlet_alpha=1"])
    assert c.rounds == 3 and c.client_lr == 1e-3 and c.target_modules == ["query", "key"]
    assert c.run_name == "no" and c.max_steps is None and c.dirichlet_alpha == 1.0
    # A list setting also takes the comma-separated form a shell user types.
    listed = Config.from_yaml(None, ["label_names=neg, pos", "target_modules=query,value",
                                     "run_name=a,b"])
    assert listed.label_names == ["neg", "pos"] and listed.target_modules == ["query", "value"]
    assert listed.run_name == "a,b"  # a string setting keeps its commas


def test_from_flat_is_the_same_schema():
    assert Config.from_flat({"rounds": "4", "method": "fedfgd"}) == Config(rounds=4,
                                                                          method="fedfgd")


@pytest.mark.parametrize("overrides, field", [
    ({"nope": 1}, "unknown config key"),
    ({"out_dir": "x"}, "'out_dir': did you mean 'output_dir'"),
    ({"rounds": "many"}, "rounds: expected int"),
    ({"tangents": 0}, "tangents: must be > 0"),
    ({"dirichlet_alpha": 0}, "dirichlet_alpha: must be > 0"),
    ({"clients_per_round": 20, "num_clients": 10}, "clients_per_round: 20 is more than"),
    ({"server_optimizer": "sgd"}, "server_optimizer: 'sgd' is not one of"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"peft": "bitfit", "target_modules": ["query"]}, "target_modules: only used by"),
    ({"method": "backprop", "tangents": 4}, "tangents: only forward-gradient"),
    ({"method": "fedmezo", "tangent_chunk": 2}, "tangent_chunk: only forward-gradient"),
    ({"tangent_chunk": 0}, "tangent_chunk: must be > 0"),
    ({"method": "backprop", "tangent_dtype": "bfloat16"}, "tangent_dtype: only forward-gradient"),
    ({"tangent_dtype": "half"}, "tangent_dtype: 'half' is not one of"),
    ({"head_init": "lda", "head_init_shrinkage": 1.5}, "head_init_shrinkage: 1.5 is not in"),
    ({"head_init": "lda", "head_init_lda_scale": 0}, "head_init_lda_scale: must be > 0"),
    ({"head_init": "class_means", "head_init_shrinkage": 0.2},
     "head_init_shrinkage: only used by head_init=lda"),
    ({"head_init": "lda", "pooling": "model"}, "head_init: lda needs a pooled head"),
    ({"unit_replicas": 2, "method": "fedfgd"}, "unit_replicas: method=fedfgd"),
    ({"unit_replicas": 11}, "unit_replicas: 11 is more than clients_per_round"),
    ({"personalization": "local"},
     "personalization: 'local' is not one of global, round; did you mean personalization=round"),
    # the choice meant, where it can be told: case, a name from elsewhere, a near spelling
    ({"peft": "LoRA"}, r"peft: 'LoRA' is not one of .*; did you mean peft=lora\?$"),
    ({"method": "FedAvg"}, r"did you mean method=backprop\? \(FedAvg, FedAdam and FedYogi are "
                           r"the server's step, server_optimizer"),
    ({"method": "fedmezzo"}, r"did you mean method=fedmezo\?$"),
    ({"server_optimizer": "FedYogi"}, r"did you mean server_optimizer=fedyogi\?$"),
    ({"personalization": "round", "personalization_epochs": 3},
     "personalization_epochs: personalization=round scores"),
    ({"personalization": "round", "communication": "per_iteration",
      "server_optimizer": "fedavg"}, "personalization: per_iteration"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        Config.from_flat(overrides)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Config.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        Config.from_yaml(bad)
    with pytest.raises(ConfigError, match="key=value"):
        Config.from_yaml(None, ["rounds"])


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).parent.parent
                                         / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    """Each configs/*.yaml passes validation, and its header names its own command."""
    cfg = Config.from_yaml(path)
    assert cfg.rounds >= 1
    header = path.read_text().split("\n\n", 1)[0]
    assert f"# spry run --config configs/{path.name}" in header
