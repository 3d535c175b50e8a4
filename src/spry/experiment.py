"""Build a run from a Config and drive its rounds; writes the run directory.

A run directory holds: config.yaml (resolved), metrics.jsonl (one line per round),
units.json (the trainable units in network order) and trainable.safetensors (the final
trainable weights).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from safetensors.torch import save_file
from torch import nn

from spry.client import evaluate
from spry.config import Config, ConfigError
from spry.data import FederatedData, build_federated_data, load_task
from spry.engines import LocalEngine
from spry.engines.local_steps import LocalStepEngine
from spry.metrics import MetricsLog
from spry.models import list_units, load_model, load_tokenizer, load_trainable, trainable_state
from spry.seeds import derive_seed, seeded_global_rng
from spry.per_iteration import PerIterationServer
from spry.server import Server

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    cfg: Config
    tokenizer: object
    data: FederatedData
    model: nn.Module
    server: Server
    engine: object
    driver: object = None
    """What runs a round: the Server itself, or PerIterationServer for per_iteration."""

    def __post_init__(self) -> None:
        self.driver = self.driver or self.server


def build(cfg: Config) -> Experiment:
    """Everything a run needs; every input is checked here, before the first round."""
    tokenizer = load_tokenizer(cfg)
    task = load_task(cfg)
    data = build_federated_data(cfg, tokenizer, task)
    # Head and adapter initialisation read the global RNG inside transformers/peft.
    with seeded_global_rng(derive_seed(cfg.seed, "init")):
        model = load_model(cfg, data.num_labels, tokenizer.pad_token_id)
    units = list_units(model)
    if not units:
        raise ConfigError(f"peft: {cfg.peft!r} left no trainable weights in {cfg.model!r}")
    server = Server(cfg, units, trainable_state(model))
    if cfg.communication == "per_iteration":
        driver = PerIterationServer(server)
        engine = LocalStepEngine(cfg, model, tokenizer, data, driver.params_of)
        return Experiment(cfg, tokenizer, data, model, server, engine, driver)
    return Experiment(cfg, tokenizer, data, model, server, LocalEngine(cfg, model, tokenizer, data))


def run_dir_for(cfg: Config) -> Path:
    name = cfg.run_name or f"{Path(cfg.dataset).stem}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.output_dir) / name


def global_test_accuracy(exp: Experiment) -> float | None:
    if exp.data.test is None or len(exp.data.test) == 0:
        return None
    load_trainable(exp.model, exp.server.weights)
    correct, total, _ = evaluate(exp.model, exp.data.test, exp.tokenizer, exp.cfg)
    return correct / total


def run(cfg: Config, progress: bool = True, engine=None) -> Path:
    """Run every round; return the run directory.

    `engine`: who runs the clients; None picks by `cfg.engine`. engine=flower starts
    Flower's simulation runtime, whose ServerApp calls back here with a FlowerEngine.
    """
    if engine is None and cfg.engine == "flower":
        from spry.engines.flower import run_simulation

        return run_simulation(cfg, progress=progress)
    out = run_dir_for(cfg)
    if (out / "metrics.jsonl").exists():
        raise ConfigError(f"run_name: {out} already holds a run; choose another run_name or "
                          "output_dir (nothing was overwritten)")
    exp = build(cfg)
    if engine is not None:
        exp.engine = engine
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "units.json").write_text(json.dumps(
        [{"name": u.name, "params": list(u.params)} for u in exp.server.units], indent=1))
    metrics = MetricsLog(out / "metrics.jsonl")

    bar = _progress(cfg.rounds, progress)
    started = time.perf_counter()
    for server_round in range(1, cfg.rounds + 1):
        row = exp.driver.run_round(server_round, exp.engine)
        if "generalized_accuracy" in row:
            t0 = time.perf_counter()
            row["test_accuracy"] = global_test_accuracy(exp)
            row["wall_seconds"] += time.perf_counter() - t0
        row["elapsed_seconds"] = time.perf_counter() - started
        metrics.append(row)
        _show(bar, row)
    if bar is not None:
        bar.close()
    save_file({n: t.contiguous() for n, t in exp.server.weights.items()},
              str(out / "trainable.safetensors"))
    return out


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="rounds", unit="round")


def _show(bar, row: dict) -> None:
    shown = {"loss": row.get("train_loss")}
    for key, label in (("generalized_accuracy", "acc"), ("test_accuracy", "test"),
                       ("personalized_accuracy", "pers")):
        if row.get(key) is not None:
            shown[label] = row[key]
    text = ", ".join(f"{k}={v:.4f}" for k, v in shown.items() if v is not None)
    if bar is None:
        log.info("round %d: %s", row["round"], text)
    else:
        bar.set_postfix_str(text)
        bar.update(1)
