"""Build a run from a Config and drive its rounds; writes the run directory.

A run directory holds: config.yaml (resolved), metrics.jsonl (one line per round),
units.json (the trainable units in network order) and trainable.safetensors (the final
trainable weights); with checkpoint_every, checkpoint.pt (spry.checkpoint), from which
`run(cfg, resume_dir=...)` / `spry run --resume RUN_DIR` continue exactly.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from safetensors.torch import save_file
from torch import nn

from spry import checkpoint
from spry.client import held_out_metrics
from spry.config import Config, ConfigError
from spry.data import FederatedData, build_federated_data, load_task
from spry.engines import LocalEngine
from spry.engines.local_steps import LocalStepEngine
from spry.metrics import MetricsLog
from spry.models import list_units, load_model, load_tokenizer, load_trainable, trainable_state
from spry.seeds import derive_seed, seeded_global_rng
from spry.per_iteration import PerIterationServer
from spry.progress import Progress
from spry.server import Server

log = logging.getLogger(__name__)

RESUME_OVERRIDES = ("rounds",)
"""What may change when a run is resumed: only how many rounds it runs in all."""


class RunStopped(RuntimeError):
    """The run ended early as configured (on_all_clients_failed=stop); metrics.jsonl,
    trainable.safetensors and the last checkpoint are written."""


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


def class_means_head(exp: Experiment) -> tuple[str, str] | None:
    """(weight, bias) of the head that round 0 sets from class means, or None."""
    from spry.models import HEAD_UNIT
    from spry.tasks.classifier import head_param_names, is_pooled

    cfg = exp.cfg
    if cfg.head_init != "class_means" or cfg.task_head != "classifier" or not is_pooled(exp.model):
        return None
    head = next((u for u in exp.server.units if u.name == HEAD_UNIT), None)
    return None if head is None else head_param_names(head.params)


def run_dir_for(cfg: Config) -> Path:
    name = cfg.run_name or f"{Path(cfg.dataset).stem}-{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.output_dir) / name


def global_test_metrics(exp: Experiment) -> dict[str, float | None]:
    """The global model on the held-out split (spry.client.held_out_metrics)."""
    if exp.data.test is None or len(exp.data.test) == 0:
        return {"test_accuracy": None}
    load_trainable(exp.model, exp.server.weights)
    return held_out_metrics(exp.model, exp.data.test, exp.tokenizer, exp.cfg)


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a run directory was started with; `rounds=N` is the only override."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"--resume: {run_dir} has no config.yaml; give a directory that "
                          "`spry run` wrote")
    bad = [o for o in overrides or [] if o.partition("=")[0].strip() not in RESUME_OVERRIDES]
    if bad:
        raise ConfigError(f"--resume: a resumed run keeps its config; only "
                          f"{', '.join(k + '=' for k in RESUME_OVERRIDES)} may change, not {bad}")
    return Config.from_yaml(path, overrides)


def _load_resume_state(cfg: Config, out: Path) -> dict:
    state = checkpoint.load(out / checkpoint.CHECKPOINT)
    ignored = {"output_dir", "run_name", *RESUME_OVERRIDES}
    saved = Config.from_flat(state["config"]).to_dict()
    changed = sorted(k for k, v in cfg.to_dict().items() if k not in ignored and saved[k] != v)
    if changed:
        raise ConfigError(f"--resume: {changed} differ from the run in {out}; a resumed run "
                          f"keeps its config (only {', '.join(RESUME_OVERRIDES)} may change)")
    if state["round"] >= cfg.rounds:
        raise ConfigError(f"rounds: {out} already has a checkpoint after round {state['round']}"
                          f"; resume with rounds=<more than {state['round']}> to go on")
    return state


def _rewrite_metrics(path: Path, rows: list[dict]) -> None:
    """metrics.jsonl as it stood at the checkpoint (rows written after it are redone)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)


def run(cfg: Config, progress: bool = True, engine=None, resume_dir: str | Path | None = None
        ) -> Path:
    """Run every round; return the run directory.

    `engine`: who runs the clients; None picks by `cfg.engine`. engine=flower starts
    Flower's simulation runtime, whose ServerApp calls back here with a FlowerEngine.
    `resume_dir`: continue that run from its checkpoint.pt (see `resume_config`): the
    config must match the run's except `rounds`; rows the run wrote after its checkpoint
    are dropped and redone, and the run ends as an uninterrupted one would (weights and
    metrics.jsonl, up to the *_seconds timings).
    Raises RunStopped when a round accepted no update and on_all_clients_failed=stop.
    """
    if engine is None and cfg.engine == "flower":
        from spry.engines.flower import run_simulation

        return run_simulation(cfg, progress=progress)
    state = None
    if resume_dir is not None:
        out = Path(resume_dir)
        state = _load_resume_state(cfg, out)
    else:
        out = run_dir_for(cfg)
        if (out / "metrics.jsonl").exists():
            raise ConfigError(f"run_name: {out} already holds a run; choose another run_name "
                              "or output_dir (nothing was overwritten)")
    exp = build(cfg)
    if engine is not None:
        exp.engine = engine
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (out / "units.json").write_text(json.dumps(
        [{"name": u.name, "params": list(u.params)} for u in exp.server.units], indent=1))
    first, elapsed = 1, 0.0
    if state is not None:
        checkpoint.restore(exp, state)
        first, elapsed = state["round"] + 1, state["elapsed_seconds"]
        _rewrite_metrics(out / "metrics.jsonl", state["metrics"])
        log.info("resuming %s after round %d", out, state["round"])
    metrics = MetricsLog(out / "metrics.jsonl")
    metrics.rows = list(state["metrics"]) if state is not None else []
    if state is None and (head := class_means_head(exp)) is not None:
        row = exp.server.initialize_head(exp.engine, *head)
        if exp.driver is not exp.server:
            exp.driver.load_weights(exp.server.weights)
        row.update(global_test_metrics(exp))
        metrics.append(row)

    view = Progress(cfg.rounds, first - 1, bar=progress, max_seconds=cfg.max_wall_seconds,
                    tensorboard_dir=out / "tensorboard" if cfg.tensorboard else None)
    started = time.perf_counter() - elapsed
    stopped = None
    for server_round in range(first, cfg.rounds + 1):
        if cfg.max_wall_seconds is not None and time.perf_counter() - started > cfg.max_wall_seconds:
            log.info("stopping after round %d: max_wall_seconds=%s reached", server_round - 1,
                     cfg.max_wall_seconds)
            break
        row = exp.driver.run_round(server_round, exp.engine)
        if "generalized_accuracy" in row:
            t0 = time.perf_counter()
            row.update(global_test_metrics(exp))
            row["wall_seconds"] += time.perf_counter() - t0
        row["elapsed_seconds"] = time.perf_counter() - started
        metrics.append(row)
        view.show(row)
        every = cfg.checkpoint_every
        if every is not None and (server_round % every == 0 or server_round == cfg.rounds):
            checkpoint.save(out / checkpoint.CHECKPOINT,
                            checkpoint.capture(exp, server_round, metrics.rows,
                                               time.perf_counter() - started))
        if row.get("all_clients_failed"):
            log.warning("round %d: no client's update was accepted (failed: %s, rejected: %s)",
                        server_round, row.get("failed_clients"), row.get("rejected_updates"))
            if cfg.on_all_clients_failed == "stop":
                stopped = server_round
                break
    view.close()
    save_file({n: t.contiguous() for n, t in exp.server.weights.items()},
              str(out / "trainable.safetensors"))
    if stopped is not None:
        raise RunStopped(f"round {stopped}: no client's update was accepted (see failed_clients "
                         f"and rejected_updates in {out / 'metrics.jsonl'}), and "
                         "on_all_clients_failed=stop; set on_all_clients_failed=continue to "
                         "go on past such rounds")
    return out
