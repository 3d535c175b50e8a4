"""Validation of a built Config: each setting's type and value, then how they combine.

The checks run in a fixed order and the first problem raises, so a config with several
problems is always told the same one first.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import typing
from pathlib import Path
from typing import Any

from spry.config.choices import (ASSIGNMENTS, CLIENT_DATA, CLIENT_OPTIMIZERS, COMMUNICATIONS,
                                 CONTEXTS, DTYPES, ENGINES, EVAL_DTYPES,
                                 FORWARD_GRADIENT_METHODS, HEAD_GRADIENTS, HEAD_INITS,
                                 HEAD_MODES, LABEL_HEADS, LORA_FACTORS, METHODS,
                                 POOLED_HEADS,
                                 NO_EXAMPLE_TANGENTS, ON_ALL_CLIENTS_FAILED, PEFT_ADAPTERS,
                                 PEFT_METHODS, PERSONALIZATIONS, POOLED_HEAD_INITS, POOLINGS,
                                 RECIPES, SERVER_OPTIMIZERS, SPLIT_METHODS, TANGENT_SHARINGS,
                                 TANGENT_SPACES, TASK_HEADS, ConfigError)
from spry.config.loading import type_name, type_ok

Config = Any
"""spry.config.schema.Config, which runs these checks when built: not imported here, so
the schema stands above its checks (no import circle)."""


def check_types(cfg: Config) -> None:
    """Every field holds its annotated type and a finite number; an int given for a float
    field becomes that float."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not type_ok(value, hints[f.name]):
            want = type_name(hints[f.name])
            raise ConfigError(f"{f.name}: expected {want}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}: must be a finite number, got {value!r}")
        if hints[f.name] is float and isinstance(value, int):
            object.__setattr__(cfg, f.name, float(value))


KNOWN_AS = {("method", "fedavg"): "backprop", ("method", "fedadam"): "backprop",
            ("method", "fedyogi"): "backprop", ("method", "mezo"): "fedmezo",
            ("method", "fgd"): "fedfgd", ("peft", "none"): "head",
            ("peft", "linear_probe"): "head", ("personalization", "local"): "round"}
"""Names users bring from papers and other tools, and the choice here that does it:
FedAvg/FedAdam/FedYogi are servers (server_optimizer) around backprop clients."""


def one_of(cfg: Config, name: str, choices: tuple[str, ...]) -> None:
    """Refuse a value outside `choices`, naming the one meant where it can tell: the same
    but for case, a name from elsewhere (KNOWN_AS), or a near spelling."""
    value = getattr(cfg, name)
    if value in choices:
        return
    key = str(value).lower()
    if key in choices:
        near = key
    elif (name, key) in KNOWN_AS:
        near = KNOWN_AS[name, key]
    else:
        near = next(iter(difflib.get_close_matches(key, choices, n=1)), None)
    hint = "" if near is None else f"; did you mean {name}={near}?"
    if (name, key) in KNOWN_AS and near == "backprop":
        hint += (" (FedAvg, FedAdam and FedYogi are the server's step, server_optimizer; the "
                 "method is the clients')")
    raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}{hint}")


def _schema_default(cfg: Config, name: str):
    """The schema's default of a setting: a value equal to it was (taken to be) not set."""
    return next(f.default for f in dataclasses.fields(cfg) if f.name == name)


def _positive(cfg: Config, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{name}: must be > 0, got {value}")


def check_values(cfg: Config) -> None:
    """Each setting's value, then how the settings combine."""
    _check_choices(cfg)
    _check_client_data(cfg)
    _check_partition_by(cfg)
    _check_head(cfg)
    _check_numbers(cfg)
    _check_communication(cfg)
    _check_zeroth_order(cfg)
    _check_lists(cfg)
    _check_task_head(cfg)


def _check_choices(cfg: Config) -> None:
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard: true needs the tensorboard package: "
                          "pip install tensorboard (or set tensorboard=false)")
    if cfg.eval_dtype is not None:
        one_of(cfg, "eval_dtype", EVAL_DTYPES)
    if cfg.tangent_dtype is not None:
        one_of(cfg, "tangent_dtype", DTYPES)
    for name, choices in (("method", METHODS), ("peft", PEFT_METHODS),
                          ("assignment", ASSIGNMENTS), ("head", HEAD_MODES),
                          ("server_optimizer", SERVER_OPTIMIZERS),
                          ("client_optimizer", CLIENT_OPTIMIZERS),
                          ("communication", COMMUNICATIONS), ("context", CONTEXTS),
                          ("engine", ENGINES), ("dtype", DTYPES),
                          ("on_all_clients_failed", ON_ALL_CLIENTS_FAILED), ("recipe", RECIPES),
                          ("tangent_space", TANGENT_SPACES), ("lora_factors", LORA_FACTORS),
                          ("personalization", PERSONALIZATIONS),
                          ("client_data", CLIENT_DATA)):
        one_of(cfg, name, choices)


def _check_partition_by(cfg: Config) -> None:
    """partition_by: the clients are a column's values (a recipe has no such column:
    spry.data.sources refuses it there)."""
    if cfg.partition_by is None:
        return
    if cfg.client_data == "node":
        raise ConfigError("partition_by: with client_data=node each SuperNode's file is its "
                          "client's data; remove partition_by")
    if cfg.dirichlet_alpha != _schema_default(cfg, "dirichlet_alpha"):
        raise ConfigError("dirichlet_alpha: with partition_by the clients are the column's "
                          "values, not a Dirichlet deal; remove one of the two")


def _check_client_data(cfg: Config) -> None:
    """client_data=node: a deployment whose nodes hold the data; what that rules out."""
    if cfg.client_data != "node":
        return
    if cfg.engine != "flower":
        raise ConfigError("client_data: node means each Flower SuperNode reads its own file; "
                          "set engine=flower (a deployment: docs/flower.md), or "
                          "client_data=partition to deal `dataset` to the clients here")
    if not cfg.label_names and cfg.task_head != "regression":
        raise ConfigError("label_names: client_data=node needs the label set, in class order "
                          "(e.g. label_names=negative,positive): no one process sees every "
                          "node's labels")
    if cfg.task_head not in LABEL_HEADS:
        raise ConfigError(f"client_data: node reads labelled text files; task_head="
                          f"{cfg.task_head!r} reads a recipe's QA data: use "
                          "client_data=partition")
    for name in ("test_fraction", "max_train_examples"):
        if getattr(cfg, name) is not None:
            raise ConfigError(f"{name}: with client_data=node the server reads no training "
                              "data to take it from; give test_file for a held-out split, "
                              f"and remove {name}")


def _check_numbers(cfg: Config) -> None:
    """Ranges of the numeric settings, and the two that engine=flower does not take."""
    _positive(cfg, "lora_r", "tinylora_r", "tinylora_u", "lora_alpha", "max_length",
              "num_clients", "dirichlet_alpha", "rounds", "clients_per_round", "tangents",
              "tangent_chunk", "client_lr", "server_lr", "batch_size", "local_epochs",
              "max_steps", "eval_every", "eval_batch_size",
              "max_train_examples", "max_test_examples", "server_tau", "round_timeout",
              "checkpoint_every", "max_update_norm", "client_timeout_seconds", "threads",
              "unit_replicas")
    if cfg.test_fraction is not None and not 0 < cfg.test_fraction < 1:
        raise ConfigError(f"test_fraction: must be in (0, 1), got {cfg.test_fraction}")
    if cfg.engine == "flower" and cfg.client_timeout_seconds is not None:
        raise ConfigError("client_timeout_seconds: engine=local only; with engine=flower set "
                          "round_timeout instead")
    if cfg.engine == "flower" and cfg.checkpoint_every is not None:
        raise ConfigError("checkpoint_every: engine=local only (with engine=flower the client "
                          "state lives on the SuperNodes); remove it")
    if not 0 <= cfg.lora_dropout < 1:
        raise ConfigError(f"lora_dropout: must be in [0, 1), got {cfg.lora_dropout}")
    if not 0 < cfg.client_test_fraction < 1:
        raise ConfigError(
            f"client_test_fraction: must be in (0, 1), got {cfg.client_test_fraction}")
    for name in ("server_beta1", "server_beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.weight_decay < 0:
        raise ConfigError(f"weight_decay: must be >= 0, got {cfg.weight_decay}")
    if cfg.personalization_epochs < 0:
        raise ConfigError(
            f"personalization_epochs: must be >= 0, got {cfg.personalization_epochs}")
    if cfg.personalization == "round" and cfg.personalization_epochs not in (
            0, _schema_default(cfg, "personalization_epochs"), cfg.local_epochs):
        # Under `round` the round's own local training is the personalization, so F is
        # local_epochs; another F would be silently ignored.
        raise ConfigError(
            f"personalization_epochs: personalization=round scores the model the round's "
            f"local training left, local_epochs={cfg.local_epochs} epochs, so F is "
            f"{cfg.local_epochs}; set personalization_epochs={cfg.local_epochs} (or 0 to skip "
            f"personalized accuracy), or personalization=global to train F="
            f"{cfg.personalization_epochs} epochs from the new global model")


def _check_communication(cfg: Config) -> None:
    """per_iteration's limits, the round's clients, and who uses K."""
    if cfg.communication == "per_iteration":
        if cfg.method not in FORWARD_GRADIENT_METHODS:
            raise ConfigError(f"communication: per_iteration sends directional derivatives, which "
                              f"method={cfg.method!r} does not make; use method="
                              f"{' or '.join(FORWARD_GRADIENT_METHODS)}")
        if cfg.server_optimizer != "fedavg":
            raise ConfigError("server_optimizer: per_iteration steps client_optimizer/client_lr at "
                              "the server every step and has no round-level server step; set "
                              "server_optimizer=fedavg")
        if cfg.engine != "local":
            raise ConfigError("engine: per_iteration runs on engine=local only for now")
        if cfg.personalization == "round":
            raise ConfigError("personalization: per_iteration clients keep no local model of "
                              "their own (every step is the server's); set "
                              "personalization=global")
    if cfg.unit_replicas > 1 and cfg.method not in SPLIT_METHODS:
        raise ConfigError(f"unit_replicas: method={cfg.method} gives every client every unit; "
                          "replicas apply to split methods (spry, backprop_split); remove it")
    if cfg.unit_replicas > cfg.clients_per_round:
        raise ConfigError(f"unit_replicas: {cfg.unit_replicas} is more than clients_per_round "
                          f"({cfg.clients_per_round}); a unit can go to at most every client")
    if cfg.clients_per_round > cfg.num_clients:
        raise ConfigError(
            f"clients_per_round: {cfg.clients_per_round} is more than num_clients "
            f"({cfg.num_clients}); lower clients_per_round or raise num_clients")
    if cfg.method in ("backprop", "fedsgd") and cfg.tangents != 1:
        raise ConfigError("tangents: only forward-gradient methods use K; leave it at 1 "
                          f"with method={cfg.method}")
    if cfg.tangent_chunk is not None and cfg.method not in FORWARD_GRADIENT_METHODS:
        raise ConfigError(f"tangent_chunk: only forward-gradient methods share a primal pass "
                          f"among tangents; remove it with method={cfg.method}")
    if cfg.tangent_dtype is not None and cfg.method not in FORWARD_GRADIENT_METHODS:
        raise ConfigError(f"tangent_dtype: only forward-gradient methods run a tangent pass; "
                          f"remove it with method={cfg.method}")


def _check_lists(cfg: Config) -> None:
    if cfg.target_modules is not None and cfg.peft not in PEFT_ADAPTERS:
        raise ConfigError(f"target_modules: only used by peft=lora, ia3 or tinylora, not "
                          f"{cfg.peft!r}; remove it")
    if cfg.label_names is not None and len(set(cfg.label_names)) != len(cfg.label_names):
        raise ConfigError(f"label_names: has duplicates: {cfg.label_names}")
    if cfg.column_names is not None:
        if len(set(cfg.column_names)) != len(cfg.column_names):
            raise ConfigError(f"column_names: has duplicates: {cfg.column_names}")
        # a.csv, a.tsv.gz (spry.data.files reads compressed files), or a folder of them
        if not {".csv", ".tsv"} & {x.lower() for x in Path(cfg.dataset).suffixes[-2:]} and not (
                Path(cfg.dataset).is_dir()):
            raise ConfigError(f"column_names: names the columns of a csv/tsv file without a "
                              f"header row, not dataset={cfg.dataset!r}; remove it")


def _check_task_head(cfg: Config) -> None:
    one_of(cfg, "task_head", TASK_HEADS)
    if cfg.label_words is not None:
        if cfg.task_head != "verbalizer":
            raise ConfigError("label_words: only used by task_head=verbalizer; remove it or set "
                              "task_head=verbalizer")
        if len(set(cfg.label_words)) != len(cfg.label_words):
            raise ConfigError(f"label_words: has duplicates: {cfg.label_words}")
    if cfg.task_head in ("verbalizer", "generate"):
        if cfg.peft == "head":
            raise ConfigError(f"peft: task_head={cfg.task_head} has no head to train; use "
                              "peft=lora, ia3 or bitfit")
        if cfg.head == "shared":
            raise ConfigError(f"head: task_head={cfg.task_head} has no head unit to share; leave "
                              "head=split")
    qa_heads = ("span", "generate")
    if (cfg.dataset == "squad_v2") != (cfg.task_head in qa_heads):
        raise ConfigError(f"task_head: dataset={cfg.dataset!r} with task_head={cfg.task_head!r}; "
                          "SQuAD v2 pairs dataset=squad_v2 with task_head=span (an encoder's "
                          "extractive span head) or task_head=generate (a decoder writes the "
                          "answer)")
    if cfg.task_head in qa_heads and cfg.communication == "per_iteration":
        raise ConfigError(f"communication: task_head={cfg.task_head} runs per_epoch only for now")
    if cfg.task_head == "regression":
        _check_regression(cfg)
    if cfg.label_separator != _schema_default(cfg, "label_separator"):
        if cfg.task_head != "multilabel":
            raise ConfigError("label_separator: only used by task_head=multilabel (several "
                              "labels a row); remove it or set task_head=multilabel")
        if not cfg.label_separator.strip():
            raise ConfigError(f"label_separator: {cfg.label_separator!r} cannot join labels "
                              "(labels are stripped of white space); give a character such "
                              "as ',', ';' or '|'")


def _check_regression(cfg: Config) -> None:
    """task_head=regression reads a numeric label column: no label set, no class means (a
    recipe, a classification task, is refused where the data is read: spry.data.sources)."""
    if cfg.label_names is not None:
        raise ConfigError("label_names: task_head=regression learns a score, not classes; "
                          "remove label_names")
    if cfg.head_init == "class_means":
        raise ConfigError("head_init: class_means needs classes; under task_head=regression "
                          "use head_init=lda (the least-squares head from the clients' "
                          "feature statistics) or random")
    if cfg.head_init_lda_scale != _schema_default(cfg, "head_init_lda_scale"):
        raise ConfigError("head_init_lda_scale: a softmax temperature for classes; "
                          "task_head=regression has no softmax: remove it")
    if cfg.head_init_shrinkage != _schema_default(cfg, "head_init_shrinkage"):
        raise ConfigError("head_init_shrinkage: under task_head=regression the least-squares "
                          "head's ridge is chosen by generalized cross-validation from the "
                          "clients' statistics; remove head_init_shrinkage")


def _check_head(cfg: Config) -> None:
    """The classification head's settings (pooling, head_init, head_gradient)."""
    one_of(cfg, "pooling", POOLINGS)
    one_of(cfg, "head_init", HEAD_INITS)
    one_of(cfg, "head_gradient", HEAD_GRADIENTS)
    one_of(cfg, "tangent_sharing", TANGENT_SHARINGS)
    _positive(cfg, "head_init_scale", "head_init_lda_scale", "head_init_examples", "head_lr")
    if not 0.0 <= cfg.head_init_shrinkage <= 1.0:
        raise ConfigError(f"head_init_shrinkage: {cfg.head_init_shrinkage!r} is not in [0, 1] "
                          "(0: the sample covariance, 1: a multiple of the identity); the "
                          "default is 0.5")
    if cfg.tangent_sharing == "example":
        if cfg.peft in NO_EXAMPLE_TANGENTS or cfg.task_head not in POOLED_HEADS:
            raise ConfigError("tangent_sharing: example needs task_head=classifier (or "
                              "multilabel, regression, token) and linear "
                              "trainable tensors (peft=lora, tinylora or head), not "
                              f"peft={cfg.peft!r}, "
                              f"task_head={cfg.task_head!r}; set tangent_sharing=batch")
        if cfg.communication == "per_iteration":
            raise ConfigError("tangent_sharing: per_iteration uploads K scalars a step; set "
                              "tangent_sharing=batch")
    if cfg.tangent_space == "inputs" and (cfg.method not in FORWARD_GRADIENT_METHODS
                                          or cfg.tangent_sharing != "example"
                                          or cfg.peft != "lora"):
        raise ConfigError(f"tangent_space: inputs draws LoRA A tangents per example: needs a "
                          f"forward-gradient method ({', '.join(FORWARD_GRADIENT_METHODS)}), "
                          "peft=lora and tangent_sharing=example (communication=per_epoch); "
                          "set tangent_space=parameters")
    # An adapter's settings given to another adapter would be silently unused (since
    # recipe=spry trains TinyLoRA: e.g. the paper's lora_r without peft=lora).
    for names, adapter in ((("lora_factors", "lora_r", "lora_alpha"), "lora"),
                           (("tinylora_r", "tinylora_u"), "tinylora")):
        for name in names:
            if getattr(cfg, name) != _schema_default(cfg, name) and cfg.peft != adapter:
                raise ConfigError(f"{name}: only used by peft={adapter}; this run trains "
                                  f"peft={cfg.peft}; set peft={adapter} or remove {name}")
    for name in ("head_init_shrinkage", "head_init_lda_scale"):
        if getattr(cfg, name) != _schema_default(cfg, name) and cfg.head_init != "lda":
            raise ConfigError(f"{name}: only used by head_init=lda; this run has "
                              f"head_init={cfg.head_init}; set head_init=lda or remove {name}")
    if cfg.guided_tangent and (cfg.method not in FORWARD_GRADIENT_METHODS
                               or cfg.communication != "per_epoch"):
        raise ConfigError(f"guided_tangent: needs a forward-gradient method "
                          f"({', '.join(FORWARD_GRADIENT_METHODS)}) with "
                          "communication=per_epoch; set guided_tangent=false")
    if cfg.head_gradient == "exact" and cfg.communication == "per_iteration":
        raise ConfigError("head_gradient: per_iteration uploads only directional derivatives; "
                          "set head_gradient=estimator")
    if cfg.task_head not in POOLED_HEADS:
        return  # the other heads have no pooled linear head; these settings do not apply
    if cfg.task_head == "token" and cfg.pair_column is not None:
        raise ConfigError("pair_column: task_head=token tags the words of one text; remove "
                          "pair_column")
    if cfg.task_head == "token" and cfg.pooling not in ("auto", "model"):
        raise ConfigError(f"pooling: task_head=token reads every token's state, not a pooled "
                          f"one; pooling={cfg.pooling} does not apply: set pooling=auto (the "
                          "head on the token states) or model (the architecture's "
                          "*ForTokenClassification)")
    if cfg.pooling == "model" and cfg.head_init in POOLED_HEAD_INITS:
        raise ConfigError(f"head_init: {cfg.head_init} needs a pooled head (pooling=auto, cls, "
                          "mean or max); with pooling=model set head_init=random")
    if cfg.pooling == "model" and cfg.head_gradient == "exact":
        raise ConfigError("head_gradient: exact needs a pooled linear head (pooling=auto, cls, "
                          "mean or max); with pooling=model set head_gradient=estimator")


def _check_zeroth_order(cfg: Config) -> None:
    """The baselines' own settings (method=fedsgd, fedmezo, baffle, fwdllm)."""
    _positive(cfg, "fd_epsilon", "fwdllm_candidates", "fwdllm_max_perturbations",
              "fwdllm_variance_threshold")
    if cfg.method == "fedsgd" and cfg.client_optimizer != "sgd":
        raise ConfigError(f"client_optimizer: method=fedsgd takes one plain gradient step per "
                          f"round; {cfg.client_optimizer!r} would not send a gradient (Adam's "
                          "first step is sign(g)); set client_optimizer=sgd")
    if cfg.method == "fwdllm" and cfg.fwdllm_max_perturbations < cfg.tangents:
        raise ConfigError(f"fwdllm_max_perturbations: {cfg.fwdllm_max_perturbations} is below "
                          f"tangents ({cfg.tangents}), the minimum per step; raise it")
