"""The Flower ServerApp: reads its settings from the run config and runs server.loop.run_federation.

Run-config keys (``[tool.flwr.app.config]`` in pyproject.toml, ``flwr run . --run-config "k=v ..."``):
``scenario`` (YAML path, relative to the app folder), ``run-dir`` (where results go; default ``runs/<name>``),
``overrides`` (";"-separated ``key=value`` list), ``mode`` (``simulation``: partition the scenario's dataset
and hand simulated nodes their partition; ``deployment``: each site brings its own data folder).
An existing run directory is continued from its last checkpoint (resume).

The Simulation Engine runs this same ``app`` object: ``flwr.simulation.run_simulation`` hands the ServerApp an
empty run config, so the harness (simulations.runner) binds its already prepared settings with
:func:`bound_settings` for the length of the run instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedecg.config import split_overrides
from fedecg.errors import FedECGError
from server.loop import ServerSettings, run_federation
from server.prepare import prepare_run

log = logging.getLogger(__name__)

app = ServerApp()

_bound: list[ServerSettings] = []  # settings bound by the simulation harness (at most one run per process)
_bind_lock = threading.Lock()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = _bound[0] if _bound else settings_from_run_config(dict(context.run_config))
    run_federation(grid, settings)


@contextmanager
def bound_settings(settings: ServerSettings) -> Iterator[None]:
    """Within the block, :data:`app` runs with ``settings`` instead of reading the run config (the Simulation
    Engine gives it none). One run at a time per process: a second concurrent binding raises FedECGError."""
    with _bind_lock:
        if _bound:
            raise FedECGError("another simulation is already running in this process")
        _bound.append(settings)
    try:
        yield
    finally:
        with _bind_lock:
            _bound.clear()


def settings_from_run_config(run_config: dict) -> ServerSettings:
    """Prepare (or reopen) the run directory named by the run config and return the server settings."""
    app_dir = Path(__file__).resolve().parent.parent
    scenario = Path(str(run_config.get("scenario") or "simulations/scenarios/demo.yaml"))
    if not scenario.is_absolute():
        scenario = app_dir / scenario
    overrides = split_overrides(str(run_config.get("overrides", "")))
    mode = str(run_config.get("mode", "simulation"))
    run_dir = str(run_config.get("run-dir") or "")
    rd = prepare_run(scenario, overrides, Path(run_dir) if run_dir else None,
                     partition=(mode == "simulation"))
    return ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=(mode == "simulation"))
