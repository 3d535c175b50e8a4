"""One flat, frozen schema for a run, validated when built.

Two doors into the same schema: `Config.from_yaml(path, overrides)` for the CLI and
`Config.from_flat(mapping)` for engines that carry a flat key/value run config (Flower).
Defaults are the paper's (Panchal et al. 2024, Sec. 5 and App. C): LoRA r=1, alpha=1,
dropout 0.1 on query/value, K=1, AdamW lr 1e-4, FedYogi server, batch 8, max length 64,
one local epoch, five personalization epochs.

The parts: schema (Config and each setting's docstring), choices (the allowed values and
ConfigError), defaults (what a setting left unset follows), checks (validation) and
loading (YAML and `key=value` coercion). Import from here: `from spry.config import Config`.
"""

from spry.config.choices import (ASSIGNMENTS, CLIENT_OPTIMIZERS, COMMUNICATIONS, CONTEXTS,
                                 DTYPES, ENGINES, HEAD_GRADIENTS, HEAD_INITS, HEAD_MODES,
                                 METHODS, NO_EXAMPLE_TANGENTS, ON_ALL_CLIENTS_FAILED,
                                 PEFT_METHODS, POOLED_HEAD_INITS, POOLINGS, RECIPES,
                                 SERVER_OPTIMIZERS, SHARED_TANGENT_DEFAULT, TANGENT_SHARINGS,
                                 TASK_HEADS, ConfigError)
from spry.config.defaults import (BACKPROP_TRAIN_DROPOUT, CHOICE_DEFAULTS, CLASS_MEAN_HEAD_LR,
                                  CLIENT_LR, CLIENTS_PER_ROUND, RECIPE_DEFAULTS, SERVER_LR,
                                  TINYLORA_CLIENT_LR, TOKEN_HEAD_LR)
from spry.config.schema import Config

__all__ = ["ASSIGNMENTS", "BACKPROP_TRAIN_DROPOUT", "CHOICE_DEFAULTS", "CLASS_MEAN_HEAD_LR",
           "CLIENT_LR", "CLIENTS_PER_ROUND", "CLIENT_OPTIMIZERS", "COMMUNICATIONS", "CONTEXTS", "Config",
           "ConfigError", "DTYPES", "ENGINES", "HEAD_GRADIENTS", "HEAD_INITS", "HEAD_MODES",
           "METHODS", "NO_EXAMPLE_TANGENTS", "ON_ALL_CLIENTS_FAILED", "PEFT_METHODS",
           "POOLED_HEAD_INITS", "POOLINGS", "RECIPES", "RECIPE_DEFAULTS", "SERVER_LR",
           "SERVER_OPTIMIZERS", "SHARED_TANGENT_DEFAULT", "TANGENT_SHARINGS", "TASK_HEADS",
           "TINYLORA_CLIENT_LR", "TOKEN_HEAD_LR"]
