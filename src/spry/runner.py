"""Start a run on the engine its Config names: the one door the CLI and scripts use.

engine=local runs the round loop (spry.experiment) in this process. engine=flower starts
Flower's simulation runtime, whose ServerApp runs that same loop with a FlowerEngine; the
loop never calls back into this module.
"""

from __future__ import annotations

from pathlib import Path

from spry import experiment
from spry.config import Config, ConfigError
from spry.models import check_device


def run(cfg: Config, progress: bool = True, resume_dir: str | Path | None = None) -> Path:
    """Run every round of `cfg`; return the run directory (spry.experiment.run)."""
    if cfg.engine == "flower":
        check_device(cfg.device)  # engine=local checks it in experiment.run
        if resume_dir is not None:
            raise ConfigError("--resume: engine=flower runs are not resumed yet; resume with "
                              "engine=local, or start the run again")
        from spry.flower import run_simulation

        return run_simulation(cfg, progress=progress)
    return experiment.run(cfg, progress=progress, resume_dir=resume_dir)
