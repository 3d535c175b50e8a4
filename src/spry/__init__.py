"""Spry: memory-efficient federated finetuning of language models with forward-mode gradients."""

from spry.config import Config, ConfigError

__all__ = ["Config", "ConfigError"]
__version__ = "0.1.0"
