"""engine=flower: Spry's rounds on Flower (Message API), simulated or deployed.

The only package that imports flwr. `server_app.app` and `client_app.app` are the apps
`flwr run .` loads (see [tool.flwr.app] in pyproject.toml); `run_simulation` runs a Config
on Flower's simulation runtime with one virtual SuperNode per client. See docs/flower.md.
"""

from __future__ import annotations

from pathlib import Path

from spry.config import Config, ConfigError


def run_simulation(cfg: Config, progress: bool = True, client_app=None) -> Path:
    """Run `cfg` on Flower's simulation runtime, `num_clients` virtual SuperNodes (node i
    has partition-id i); return the run directory. `client_app` replaces Spry's ClientApp
    (tests use it to make a node fail)."""
    from flwr.simulation import run_simulation as flower_run_simulation

    from spry.flower.client_app import app as spry_client_app
    from spry.flower.server_app import make_server_app
    from spry.experiment import run_dir_for
    from spry.metrics import read_metrics

    out = run_dir_for(cfg)
    if (out / "metrics.jsonl").exists():
        raise ConfigError(f"run_name: {out} already holds a run; choose another run_name or "
                          "output_dir (nothing was overwritten)")
    cfg = cfg.replace(run_name=out.name)  # one name, even if the clock ticks meanwhile
    flower_run_simulation(server_app=make_server_app(cfg, progress),
                          client_app=client_app or spry_client_app,
                          num_supernodes=cfg.num_clients)
    # Flower logs a ServerApp exception and returns; a run without all its rounds failed.
    rows = read_metrics(out) if (out / "metrics.jsonl").exists() else []
    rows = [r for r in rows if r["round"] >= 1]  # round 0 sets the head (head_init)
    if len(rows) != cfg.rounds:
        raise RuntimeError(f"the Flower run stopped after {len(rows)} of {cfg.rounds} rounds; "
                           "see the log above")
    return out
