"""The Flower ServerApp: reads its settings from the run config and runs server.loop.run_federation.

Run-config keys (``[tool.flwr.app.config]`` in pyproject.toml, ``flwr run . --run-config "k=v ..."``):
``scenario`` (YAML path, relative to the app folder), ``run-dir`` (where results go; default ``runs/<name>``),
``overrides`` (";"-separated ``key=value`` list), ``mode`` (``simulation``: partition the scenario's dataset
and hand simulated nodes their partition; ``deployment``: each site brings its own data folder).
An existing run directory is continued from its last checkpoint (resume).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.loop import ServerSettings, run_federation
from server.prepare import prepare_run

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = settings_from_run_config(dict(context.run_config))
    run_federation(grid, settings)


def settings_from_run_config(run_config: dict) -> ServerSettings:
    """Prepare (or reopen) the run directory named by the run config and return the server settings."""
    app_dir = Path(__file__).resolve().parent.parent
    scenario = Path(str(run_config.get("scenario") or "simulations/scenarios/demo.yaml"))
    if not scenario.is_absolute():
        scenario = app_dir / scenario
    overrides = [o.strip() for o in str(run_config.get("overrides", "")).split(";") if o.strip()]
    mode = str(run_config.get("mode", "simulation"))
    run_dir = str(run_config.get("run-dir") or "")
    rd = prepare_run(scenario, overrides, Path(run_dir) if run_dir else None,
                     partition=(mode == "simulation"))
    return ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=(mode == "simulation"))
