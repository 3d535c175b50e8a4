"""Checkpoints for exact resume: everything a run carries from one round to the next.

Every random number in a run is derived from the seed and the round (spry.seeds), so
resuming needs the state, not the random streams: the server's trainable weights, its
optimizer moments (m, v), FwdLLM's previous global update and the byte totals; each
client's state in the in-process engine (the copy the server last sent it, and with
keep_client_optimizer its optimizer moments); in per_iteration mode the server's and the
clients' replicas (weights, step optimizer, version), the step log and who synced when;
the round, the elapsed time and the metrics rows so far. The global torch / numpy /
random RNG states are saved and restored too, for code we do not own that might read them.

`save` is atomic and keeps the one before: it writes `checkpoint.pt.tmp` in the same
directory and flushes it to disk, moves the current `checkpoint.pt` to
`checkpoint.prev.pt`, then `os.replace`s the new file over `checkpoint.pt`; a crash at any
point leaves at least one whole checkpoint. The file is `torch.save` of {format, sha256,
payload}: the state's own torch.save bytes and their SHA-256, so a file damaged after it
was written (a flipped byte inside a tensor) is refused on load, naming the file and the
previous checkpoint to resume from. It loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spry.config import ConfigError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
FORMAT_VERSION = 2


def save(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save `state` to `path` with its checksum, atomically; the file it replaces
    becomes PREVIOUS beside it."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT_VERSION, "sha256": hashlib.sha256(payload).hexdigest(),
                        "payload": payload}, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, path.with_name(PREVIOUS))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the renames themselves durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | Path) -> dict[str, Any]:
    """The state saved at `path`, verified against its checksum."""
    path = Path(path)
    previous = path.with_name(PREVIOUS)
    if not path.is_file():
        if previous.is_file():
            raise ConfigError(f"--resume: {path} is missing (the run was stopped while "
                              f"replacing it); {_use_previous(path)}")
        raise ConfigError(f"--resume: {path.parent} has no {path.name}; only runs with "
                          "checkpoint_every set can be resumed")
    state = read_verified(path)
    if isinstance(state, str):
        advice = (_use_previous(path) if previous.is_file() and path.name == CHECKPOINT
                  and not isinstance(read_verified(previous), str)
                  else "start the run again (no earlier checkpoint is whole)")
        raise ConfigError(f"--resume: {path} {state}; {advice}")
    return state


def read_verified(path: Path) -> dict[str, Any] | str:
    """The state in `path`, or what is wrong with the file."""
    try:
        outer = torch.load(path, weights_only=True)
    except Exception as exc:  # a truncated, damaged or foreign file
        return f"is damaged or not a checkpoint (it cannot be read: {type(exc).__name__}: " \
               f"{str(exc)[:200]})"
    if not isinstance(outer, dict) or outer.get("format") != FORMAT_VERSION \
            or not isinstance(outer.get("payload"), bytes):
        return f"is not a Spry checkpoint (format {FORMAT_VERSION})"
    if hashlib.sha256(outer["payload"]).hexdigest() != outer.get("sha256"):
        return "is damaged: its contents do not match the checksum written with them"
    try:
        state = torch.load(io.BytesIO(outer["payload"]), weights_only=True)
    except Exception as exc:
        return f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
    return state if isinstance(state, dict) else "is not a Spry checkpoint"


def _use_previous(path: Path) -> str:
    previous = path.with_name(PREVIOUS)
    state = read_verified(previous)
    after = "" if isinstance(state, str) else f" (after round {state.get('round')})"
    return (f"resume from the previous checkpoint{after}: mv {previous} {path}, then run the "
            "same --resume again (the rounds after it are redone)")


# --------------------------------------------------------------------------------------
def _holders(exp) -> list:
    """Who holds a run's state between rounds: the server, the engine and, per_iteration,
    the step driver; each gives and takes it through state_dict / load_state_dict."""
    return [exp.server, exp.engine] + ([exp.driver] if exp.driver is not exp.server else [])


def capture(exp, server_round: int, rows: list[dict], elapsed: float) -> dict[str, Any]:
    """The state of `exp` (spry.experiment.Experiment) after `server_round`."""
    state = {
        "format": FORMAT_VERSION,
        "round": server_round,
        "elapsed_seconds": elapsed,
        "config": exp.cfg.to_dict(),
        "metrics": rows,
        "rng": {"torch": torch.get_rng_state(),
                "numpy": _numpy_state(),
                "python": _python_state()},
    }
    for holder in _holders(exp):
        state.update(holder.state_dict())
    return state


def restore(exp, state: dict[str, Any]) -> None:
    """Put `state` (from `capture`) back into a freshly built `exp`."""
    for holder in _holders(exp):
        holder.load_state_dict(state)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(_numpy_restore(rng["numpy"]))
    random.setstate(_python_restore(rng["python"]))


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]


def _numpy_restore(saved: list) -> tuple:
    kind, keys, pos, has_gauss, gauss = saved
    return kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_restore(saved: list) -> tuple:
    version, internal, gauss = saved
    return version, tuple(internal), gauss
