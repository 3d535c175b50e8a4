"""Bad input fails before training with a named error (hypothesis).

Random configs, random YAML files and malformed data files must each end in success or
in a `ConfigError` whose message starts with the field (or the flag) to fix — never a
traceback from deep inside. Examples are derandomized so a CI run is reproducible; raise
`max_examples` locally to search harder.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spry.config import Config, ConfigError
from spry.data import build_federated_data, load_task
from spry.experiment import build

FIELDS = [f.name for f in dataclasses.fields(Config)]
FLAGS = ("unknown config key", "override ", "--config", "--resume")


def assert_named(exc: ConfigError) -> None:
    """The message opens with what to fix: a Config field or a command-line flag."""
    message = str(exc)
    head = message.split(":", 1)[0]
    assert head in FIELDS or message.startswith(FLAGS), message


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["1e-3", "true", "null", "[a, b]", "{x: 1}", "spry", "lora", "-1", "0",
                     "nan", ".inf", "per_iteration", "fedavg", "stop"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=10))
CONFIGS = st.dictionaries(KEYS, VALUES, max_size=6)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(CONFIGS)
def test_random_flat_configs_build_or_name_the_field(values):
    try:
        cfg = Config.from_flat(values)
    except ConfigError as exc:
        assert_named(exc)
    else:
        assert Config.from_flat(cfg.to_dict()) == cfg  # a valid config round-trips


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.one_of(st.text(max_size=200),
                 CONFIGS.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                 st.binary(max_size=64).map(lambda b: b.decode("latin-1"))),
       st.lists(st.one_of(st.text(max_size=20),
                          st.builds("{}={}".format, st.sampled_from(FIELDS),
                                    st.text(max_size=8))), max_size=3))
def test_random_yaml_files_and_overrides_build_or_name_the_field(text, overrides):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            Config.from_yaml(path, overrides)
        except ConfigError as exc:
            assert_named(exc)


def test_unreadable_config_file_is_named(tmp_path):
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(ConfigError, match="^--config: cannot read"):
            Config.from_yaml(path)


# --- data files ------------------------------------------------------------------------
COLUMNS = st.sampled_from(["text", "sentence", "label", "premise", "hypothesis", "other"])
CELLS = st.one_of(st.integers(-2, 4), st.sampled_from(["pos", "neg", "", "0", "1", "x"]),
                  st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=15),
                  st.none(), st.floats(allow_nan=True))


@st.composite
def data_files(draw):
    """(suffix, content): a table with random columns and cells, or plain garbage."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet"]))
    if draw(st.integers(0, 5)) == 0:
        return suffix, draw(st.binary(max_size=80))
    columns = draw(st.lists(COLUMNS, min_size=1, max_size=3, unique=True))
    rows = draw(st.lists(st.fixed_dictionaries({c: CELLS for c in columns}), max_size=24))
    if suffix in (".jsonl", ".json"):
        return suffix, "".join(json.dumps(r) + "\n" for r in rows).encode()
    if suffix == ".parquet":
        return suffix, json.dumps(rows).encode()  # not parquet at all
    sep = "\t" if suffix == ".tsv" else ","
    lines = [sep.join(columns)] + [sep.join("" if r[c] is None else str(r[c]) for c in columns)
                                   for r in rows]
    return suffix, ("\n".join(lines) + "\n").encode()


DATA_SETTINGS = st.fixed_dictionaries({
    "text_column": st.sampled_from([None, "text", "sentence", "missing"]),
    "label_column": st.sampled_from([None, "label", "other"]),
    "label_names": st.sampled_from([None, ["neg", "pos"], ["0", "1"], ["a"]]),
    "num_clients": st.integers(1, 6),
})


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data_files(), DATA_SETTINGS)
def test_malformed_data_files_load_or_name_the_field(tiny_bert, tokenizer, file, data):
    suffix, content = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"train{suffix}"
        path.write_bytes(content)
        try:
            cfg = Config(model=tiny_bert, dataset=str(path), clients_per_round=1,
                         max_length=16, **data)
            build_federated_data(cfg, tokenizer, load_task(cfg))
        except ConfigError as exc:
            assert_named(exc)


@pytest.mark.parametrize("make", [
    lambda d: d / "absent.csv",
    lambda d: (d / "folder.csv").mkdir() or d / "folder.csv",
    lambda d: (d / "empty.jsonl").write_text("") and d / "empty.jsonl" or d / "empty.jsonl",
    lambda d: (d / "bad.parquet").write_bytes(b"\x00\xffnot parquet") and d / "bad.parquet",
])
def test_unreadable_data_files_are_named(tiny_bert, tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match="^dataset: ") as info:
        load_task(Config(model=tiny_bert, dataset=str(path)))
    assert str(path.name) in str(info.value)


# --- whole builds ------------------------------------------------------------------------
BUILD_SETTINGS = st.fixed_dictionaries({
    "peft": st.sampled_from(["lora", "ia3", "bitfit", "head"]),
    "target_modules": st.sampled_from([None, ["query"], ["query", "value"], ["q_proj"],
                                       ["nope"], []]),
    "method": st.sampled_from(["spry", "fedfgd", "backprop", "fedsgd", "fwdllm"]),
    "communication": st.sampled_from(["per_epoch", "per_iteration"]),
    "server_optimizer": st.sampled_from(["fedavg", "fedyogi"]),
    "client_optimizer": st.sampled_from(["sgd", "adamw"]),
    "tangents": st.integers(-1, 3),
    "num_clients": st.integers(0, 6),
    "clients_per_round": st.integers(0, 7),
    "dirichlet_alpha": st.sampled_from([-1.0, 0.0, 0.1, 1.0]),
    "label_names": st.sampled_from([None, ["negative", "positive"], ["only"], ["a", "a"]]),
})


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(BUILD_SETTINGS)
def test_random_settings_build_or_name_the_field(tiny_bert, settings_):
    try:
        cfg = Config(model=tiny_bert, max_length=16, **settings_)
        exp = build(cfg)
    except ConfigError as exc:
        assert_named(exc)
    else:
        assert exp.server.units
