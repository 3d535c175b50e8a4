"""The ServerApp: Spry's rounds, driven over a Flower Grid.

The round logic is not here: `experiment.run` drives the same `Server`
(configure_train -> engine.train -> aggregate_train -> configure_evaluate ->
engine.evaluate) as the local engine; this app only hands it a `FlowerEngine`.

Run config (`[tool.flwr.app.config]` in pyproject.toml, `flwr run --run-config`):
  config     a Spry YAML file ("" for the defaults); relative paths are read from the
             working directory, then from the app's directory
  overrides  "key=value key=value" on top of it, exactly as on the `spry run` command line
Any other key is a Config field. The resolved Config travels in every message, so the
SuperNodes need only the app.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from spry.config import Config

APP_DIR = Path(__file__).resolve().parents[3]
"""The repository root when Spry runs from a checkout (or a Flower app bundle)."""


def config_from_run_config(run_config) -> Config:
    values = dict(run_config)
    path = str(values.pop("config", "") or "")
    if path and not Path(path).exists() and (APP_DIR / path).exists():
        path = str(APP_DIR / path)
    cfg = Config.from_yaml(path or None, shlex.split(str(values.pop("overrides", "") or "")))
    return Config.from_flat({**cfg.to_dict(), **values, "engine": "flower"})


def make_server_app(cfg: Config | None = None, progress: bool = False) -> ServerApp:
    """A ServerApp that runs `cfg`, or the run config it is given when `cfg` is None."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        from spry.flower.engine import FlowerEngine
        from spry.experiment import run

        run_cfg = cfg if cfg is not None else config_from_run_config(context.run_config)
        run(run_cfg, progress=progress, engine=FlowerEngine(grid, run_cfg))

    return server


app = make_server_app()
