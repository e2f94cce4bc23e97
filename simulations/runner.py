"""Run a scenario in Flower's Simulation Engine (Ray): one process, one virtual SuperNode per partition.

The ServerApp and ClientApp are the same objects a real deployment runs (server.app / client.app); only the
transport differs. Environment hygiene for Flower: telemetry off, no runtime dependency installation,
FLWR_HOME inside the run directory.

``simulation.ray_address`` (or, without it, ``$RAY_ADDRESS``) joins an existing Ray cluster (``ray start
--head`` / a cluster's head address, ``auto``, or ``ray://host:10001``) instead of starting a local one: the
driver connects with ``ray.init(address=...)`` and the environment the simulated sites need (the node-config
file, Flower's and OpenMP's settings, PYTHONPATH) travels in the job's ``runtime_env``, since a cluster's
workers do not inherit the driver's environment. ``simulation.client_cpus`` / ``client_gpus`` are the Ray
resources of each site's actor, as on a local cluster. On a multi-node cluster the project must be installed
on every node and the run directory must be on storage every node sees.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

from client.app import app as client_app
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from privacy.policy import SIMULATED_NODE_CONFIG_ENV, check_policy_spec, write_simulated_node_configs
from privacy.policy import simulated_node_configs as build_node_configs
from ptbxl.check import check_record
from ptbxl.constants import FS
from ptbxl.layout import read_database
from ptbxl.partition import Manifest
from server.app import app as server_app
from server.app import bound_settings
from server.loop import ServerSettings, run_federation
from server.prepare import prepare_run
from simulations.inprocess import InProcessGrid

# flwr.simulation (~1 s) is imported where used: only the Ray engine needs it, not --engine inprocess; ray itself
# only when joining an existing cluster.

log = logging.getLogger(__name__)

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # Ray actors inherit this: spinning OpenMP threads ran 3-5x slower on a shared CPU (docs/model.md)
    "OMP_WAIT_POLICY": "PASSIVE",
}


def simulate(scenario: str | Path | None, run_dir: str | Path | None = None, overrides: list[str] | None = None,
             *, resume: bool = False, show_progress: bool = False, engine: str = "ray") -> Path:
    """Prepare (or, with ``resume``, reopen) a run directory and run it to the end. Returns the run dir.

    ``engine``: ``ray`` (Flower's Simulation Engine) or ``inprocess`` (sequential, no Ray; see
    simulations.inprocess). Raises FedECGError when the run did not complete (status.json says why)."""
    if engine not in ("ray", "inprocess"):
        raise FedECGError(f"engine must be ray or inprocess, got {engine!r}")
    rd = prepare_run(Path(scenario) if scenario else None, list(overrides or []),
                     Path(run_dir) if run_dir else None, partition=True, resume_only=resume)
    cfg = rd.read_config()
    if rd.latest_round() >= cfg.rounds:
        log.info("%s already completed %d rounds", rd.path, cfg.rounds)
        return rd.path
    check_records(rd)
    n_clients = len(Manifest.load(rd.manifest_path).clients)
    node_configs = simulated_node_configs(rd)
    settings = ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True,
                              show_progress=show_progress)
    if engine == "inprocess":
        try:
            run_federation(InProcessGrid(client_app, n_clients, node_config=lambda i: node_configs[i]), settings)
        except FedECGError:
            raise
        except Exception as exc:
            raise FedECGError(f"simulation of {rd.path} failed: {type(exc).__name__}: {exc}") from exc
        return _check_completed(rd)
    from flwr.simulation import run_simulation  # local: only the Ray engine needs it (see the imports)

    for k, v in FLOWER_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("FLWR_HOME", str(rd.flwr_home.resolve()))
    cpus = os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": cfg.simulation.client_cpus, "num_gpus": cfg.simulation.client_gpus},
        "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": True},
    }
    log.info("simulating %d sites for %d rounds → %s", n_clients, cfg.rounds, rd.path)
    # Flower's virtual SuperNodes get only partition-id / num-partitions: the rest of each node's own config (its
    # site policy) reaches it through a file named in the environment the Ray workers inherit
    previous = os.environ.get(SIMULATED_NODE_CONFIG_ENV)
    os.environ[SIMULATED_NODE_CONFIG_ENV] = str(write_simulated_node_configs(
        rd.simulated_node_config_path, node_configs).resolve())
    address = ray_address(cfg)
    joined = False
    try:
        if address:
            joined = join_ray_cluster(address, backend_config, env_keys=(SIMULATED_NODE_CONFIG_ENV,))
        with bound_settings(settings), _without_run_simulation_deprecation():
            run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_clients,
                           backend_config=backend_config)
    except Exception as exc:  # Flower wraps ServerApp errors; status.json has the cause
        status = rd.status()
        raise FedECGError(f"simulation of {rd.path} failed: {status.get('error', exc)}") from exc
    finally:
        if joined:
            import ray  # local: heavy, only when a Ray cluster was joined

            if ray.is_initialized():
                ray.shutdown()  # disconnects this driver; the cluster keeps running
        if previous is None:
            os.environ.pop(SIMULATED_NODE_CONFIG_ENV, None)
        else:
            os.environ[SIMULATED_NODE_CONFIG_ENV] = previous
    return _check_completed(rd)


class _DropRunSimulationDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (args and str(args[0]).startswith("The `run_simulation` function is deprecated"))


@contextlib.contextmanager
def _without_run_simulation_deprecation():
    """Flower 1.41 logs "run_simulation is deprecated, use `flwr run`" on every call. We keep it on purpose
    (docs/ARCHITECTURE.md, "Why run_simulation"): ``flwr run`` in 1.41 always submits a FAB built from the app
    folder to a SuperLink's Control API, and for a local simulation it starts a detached, managed
    ``flower-superlink --simulation`` that outlives the command; that would make every ``fedecg simulate``, test
    and benchmark leave a daemon behind and run the ServerApp in another process than the one that prepared the
    run. The one warning is dropped here, every other Flower log line stays."""
    flwr_log = logging.getLogger("flwr")
    f = _DropRunSimulationDeprecation()
    flwr_log.addFilter(f)
    try:
        yield
    finally:
        flwr_log.removeFilter(f)


def ray_address(cfg) -> str:  # noqa: ANN001 - ScenarioConfig
    """The Ray cluster to join: ``simulation.ray_address``, else ``$RAY_ADDRESS``; '' = start a local Ray."""
    return str(getattr(cfg.simulation, "ray_address", "") or os.environ.get("RAY_ADDRESS", "")).strip()


def join_ray_cluster(address: str, backend_config: dict, env_keys: tuple[str, ...] = ()) -> bool:
    """Connect this driver to the Ray cluster at ``address`` before Flower's backend starts (it then uses the
    connection as it is). Resources of a new cluster (num_cpus ...) cannot be given when joining one, so they
    are dropped from the init args; the sites' environment (Flower's settings and ``env_keys``) goes into the
    job's runtime_env."""
    import ray  # local: heavy, only for joining a Ray cluster

    init_args = {k: v for k, v in backend_config.get("init_args", {}).items()
                 if k not in ("num_cpus", "num_gpus", "resources", "object_store_memory", "include_dashboard")}
    backend_config["init_args"] = init_args
    pythonpath = os.pathsep.join([p for p in sys.path if p] + ([os.environ["PYTHONPATH"]]
                                                               if os.environ.get("PYTHONPATH") else []))
    env_vars = {k: os.environ[k] for k in (*FLOWER_ENV, "FLWR_HOME", "OMP_NUM_THREADS", *env_keys) if k in os.environ}
    env_vars["PYTHONPATH"] = pythonpath
    if ray.is_initialized():
        ray.shutdown()
    log.info("joining the Ray cluster at %s", address)
    try:
        ray.init(address=address, runtime_env={"env_vars": env_vars}, **init_args)
    except Exception as exc:  # ConnectionError, ValueError, ...: one clear line
        raise FedECGError(f"cannot join the Ray cluster at {address!r} (simulation.ray_address): "
                          f"{type(exc).__name__}: {exc}") from exc
    resources = ray.cluster_resources()
    log.info("Ray cluster: %.0f CPUs, %.0f GPUs", resources.get("CPU", 0), resources.get("GPU", 0))
    return True


def simulated_node_configs(rd) -> list[dict]:
    """Each simulated node's own node config, by partition id: Flower's partition keys plus the site policy the
    scenario's ``site_policy`` section gives that site (privacy.policy). Built here, by the simulation harness;
    the server never sends it."""
    cfg = rd.read_config()
    sites = [str(c.client_id) for c in Manifest.load(rd.manifest_path).clients]
    check_policy_spec(cfg.site_policy, sites)
    return build_node_configs(cfg.site_policy, sites)


def check_records(rd) -> dict[str, list[dict]]:
    """Before a simulation starts: every record the manifest gives a site, checked like ``fedecg data check``
    (header, the folder's sampling rate and length, leads, format, .dat size; samples are checked by the sites
    as they load). Each bad record is logged with its ecg_id and client, and all of them are written to
    RUN_DIR/data_check.json; the sites skip them (client.data), so they are never trained on."""
    manifest = Manifest.load(rd.manifest_path)
    root = Path(manifest.dataset)
    meta = read_database(root)
    bad: dict[str, list[dict]] = {}
    for client in manifest.clients:
        for ecg_id in [*client.train, *client.val]:
            name = str(meta.at[int(ecg_id), "filename_lr"]) if int(ecg_id) in meta.index else None
            problem = "not in ptbxl_database.csv" if name is None else check_record(root, name, FS)
            if problem:
                bad.setdefault(str(client.client_id), []).append({"ecg_id": int(ecg_id), "record": name,
                                                                  "reason": problem})
                log.warning("dataset check: site %s, ecg_id %s (%s): %s; the site skips this record",
                            client.client_id, ecg_id, name, problem)
    atomic_write_json(rd.data_check_path, {"dataset": str(root), "invalid": bad})
    return bad


def _check_completed(rd) -> Path:
    status = rd.status()
    if status.get("status") != "completed":
        raise FedECGError(f"simulation of {rd.path} did not complete: status {status.get('status')!r}"
                          f"{' — ' + status['error'] if status.get('error') else ''}")
    if status.get("rounds_without_update"):
        reasons = _rejections(rd)
        raise FedECGError(f"simulation of {rd.path}: no site update was accepted in round(s) "
                          f"{status['rounds_without_update']} ({reasons}); see {rd.metrics_path}")
    for site, n in (status.get("invalid_records") or {}).items():
        log.warning("site %s skipped %d invalid record(s) (named in %s and in the site's log)", site, n,
                    rd.data_check_path)
    if status.get("failed_sites"):
        failed = "; ".join(f"{s} in round(s) {v['rounds']}: {v['reason']}" for s, v in status["failed_sites"].items())
        raise FedECGError(f"simulation of {rd.path} completed, but site(s) failed: {failed}; see {rd.metrics_path}")
    return rd.path


def _rejections(rd) -> str:
    seen = []
    for row in rd.metrics():
        for m in row.get("sites", {}).values():
            if m.get("status") == "rejected" and m.get("reason") not in seen:
                seen.append(m.get("reason"))
    return "; ".join(str(r) for r in seen[:3]) or "no replies"

