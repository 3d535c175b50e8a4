"""`spry run --resume RUN_DIR`: which config and which checkpoint a run continues from.

A resumed run keeps its settings (RUN_DIR/config.yaml, checked against the checkpoint's
copy); only `rounds` may change. It continues from checkpoint.pt and redoes the rows
written after it. Two ends of a killed run are handled: killed after its last checkpoint
but before its final files were written, the resume writes them without more rounds;
killed before its first checkpoint was whole, it starts over from round 0 in the same
directory (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import yaml

from spry import checkpoint
from spry.config import Config, ConfigError

log = logging.getLogger(__name__)

RESUME_OVERRIDES = ("rounds",)
"""What may change when a run is resumed: only how many rounds it runs in all."""
FINAL = "trainable.safetensors"
"""Written after the last round: a run without it did not finish."""


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
    _check_whole(path)
    return Config.from_yaml(path, overrides)


def _check_whole(path: Path) -> None:
    """spry run writes every setting, one a line, ending in a newline: a file without
    them all was cut short or edited, and its values cannot be trusted."""
    damaged = (f"--resume: {path} is damaged (%s); it is the run's settings as `spry run` "
               "wrote them: restore it from a copy, or start the run again")
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(damaged % f"not UTF-8 at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(damaged % f"not valid YAML: {str(exc).splitlines()[0]}") from None
    missing = sorted({f.name for f in dataclasses.fields(Config)} - set(values or {}))
    if missing or not text.endswith("\n"):
        why = (f"{len(missing)} settings missing, e.g. {missing[:3]}" if missing
               else "its last line is cut short")
        raise ConfigError(damaged % why)


def resume_state(cfg: Config, out: Path) -> dict | None:
    """The checkpoint to continue from, checked against `cfg`; None: no checkpoint was
    ever whole, so the run starts over from round 0 in `out`."""
    path = out / checkpoint.CHECKPOINT
    if not path.is_file() and not (out / checkpoint.PREVIOUS).is_file():
        if cfg.checkpoint_every is None:
            raise ConfigError(f"--resume: {out} has no {path.name}; only runs with "
                              "checkpoint_every set can be resumed")
        log.info("--resume: %s has no checkpoint yet (the run stopped before its first one "
                 "was whole): starting it over from round 0 (its rows are redone)", out)
        return None
    state = checkpoint.load(path)
    ignored = {"output_dir", "run_name", *RESUME_OVERRIDES}
    saved = Config.from_flat(state["config"]).to_dict()
    changed = sorted(k for k, v in cfg.to_dict().items() if k not in ignored and saved[k] != v)
    if changed:
        raise ConfigError(f"--resume: {changed} differ from the run in {out}; a resumed run "
                          f"keeps its config (only {', '.join(RESUME_OVERRIDES)} may change)")
    finishing = state["round"] == cfg.rounds and not (out / FINAL).is_file()
    if state["round"] >= cfg.rounds and not finishing:
        raise ConfigError(f"rounds: {out} already has a checkpoint after round {state['round']}"
                          f"; resume with rounds=<more than {state['round']}> to go on")
    if finishing:
        log.info("--resume: %s stopped after its last checkpoint (round %d) before writing "
                 "%s: writing the final files", out, state["round"], FINAL)
    return state


def rewrite_metrics(path: Path, rows: list[dict]) -> None:
    """metrics.jsonl as it stood at the checkpoint (rows written after it are redone)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.replace(tmp, path)
