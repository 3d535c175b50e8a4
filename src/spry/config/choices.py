"""The values each choice setting takes, and the error a wrong setting raises."""

from __future__ import annotations

from spry import methods


class ConfigError(ValueError):
    """A setting is wrong; the message names the field and the fix."""


# The method names in the table's order (spry.methods.METHODS holds what each one is).
METHODS = tuple(methods.METHODS)
# The methods whose estimator is a forward gradient (jvps): what per_iteration sends up
# and what guided_tangent steers.
FORWARD_GRADIENT_METHODS = tuple(name for name, method in methods.METHODS.items()
                                 if method.estimator == "forward_gradient")
# The methods whose server deals the units out among the round's clients.
SPLIT_METHODS = tuple(name for name, method in methods.METHODS.items() if method.split)
PEFT_METHODS = ("lora", "ia3", "tinylora", "bitfit", "head")
# The PEFTs that peft builds (adapters on target_modules); BitFit and head-only freeze.
PEFT_ADAPTERS = ("lora", "ia3", "tinylora")
# Per-example tangents perturb linear-layer weights per example (or a tensor einsum turns
# into one: TinyLoRA's v builds R); these PEFTs train other tensors (IA3's scales, BitFit's
# biases), so they share one tangent a batch.
NO_EXAMPLE_TANGENTS = ("ia3", "bitfit")
# Where per-example tangents work but the recipe keeps one tangent a batch: TinyLoRA, until
# the grid shows they help there (docs/learning.md, "Per-example tangents on TinyLoRA").
SHARED_TANGENT_DEFAULT = ("tinylora",)
ASSIGNMENTS = ("rotating", "static", "random", "contiguous")
HEAD_MODES = ("split", "shared")
SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")
CLIENT_OPTIMIZERS = ("sgd", "adam", "adamw")
COMMUNICATIONS = ("per_epoch", "per_iteration")
CONTEXTS = ("global", "local")
ENGINES = ("local", "flower")
CLIENT_DATA = ("partition", "node")
DTYPES = ("float32", "float64", "bfloat16")
# global: F epochs from the round's new global model (the paper); round: the clients' own
# models after the round's local training (no extra training)
PERSONALIZATIONS = ("global", "round")
EVAL_DTYPES = ("bfloat16",)  # autocast's lower precision; None evaluates in `dtype`
TASK_HEADS = ("classifier", "multilabel", "regression", "token", "verbalizer", "span",
              "generate")
LABEL_HEADS = ("classifier", "multilabel", "regression", "token", "verbalizer")
"""The task heads that read labelled text: a label (or score, or set of labels) a text, or
a tag a word (token); the QA heads answer with spans or text."""
POOLED_HEADS = ("classifier", "multilabel", "regression", "token")
"""The task heads that are a linear head over features (a pooled one, or every token's):
its round-0 initialisation and exact gradient apply."""
SENTENCE_HEADS = ("classifier", "multilabel", "regression")
"""The pooled heads over one feature a text (spry export writes them as sentence-transformers
models)."""
ON_ALL_CLIENTS_FAILED = ("continue", "stop")
RECIPES = ("spry", "paper")
POOLINGS = ("auto", "model", "cls", "mean", "max", "last")
HEAD_INITS = ("class_means", "lda", "random")
POOLED_HEAD_INITS = ("class_means", "lda")  # set from the clients' features in round 0
HEAD_GRADIENTS = ("exact", "estimator")
TANGENT_SHARINGS = ("example", "batch")
TANGENT_SPACES = ("parameters", "inputs")
LORA_FACTORS = ("both", "a")
