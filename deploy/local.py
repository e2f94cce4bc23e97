"""Try a consortium on one machine: a SuperLink and one SuperNode per site on 127.0.0.1, TLS + node auth.

:class:`LocalDeployment` drives the real Flower 1.41 executables (``flower-superlink``, ``flower-supernode``,
``flwr``) as separate processes that talk over the loopback network stack exactly as they would across
hospitals: HTTPS verified against the consortium CA, each SuperNode authenticated by its site key (which the
launcher registers with ``flwr supernode register``), each SuperNode with ``--node-config data-dir=<its own
folder>``. It picks free ports, keeps every process's output under ``<work_dir>/logs/``, gives every process
its own ``FLWR_HOME`` under ``work_dir``, sets ``FLWR_TELEMETRY_ENABLED=0`` and
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``, and stops every process it started, by PID, when the
``with`` block ends (also on an error or Ctrl-C).

``flwr run`` returns as soon as the run is submitted (and exits 0 even when the run later fails), so
:meth:`LocalDeployment.wait_for_run` polls ``flwr ls --run-id N --format json`` until the status is
``finished:*`` and :func:`run_local` raises :class:`FedECGError` unless it is ``finished:completed``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy.processes import ProcessGroup, free_port, port_open
from deploy.provision import CONNECTION_NAME, Consortium, flwr_config_toml
from deploy.runstatus import describe_status_file, read_status_file
from deploy.supernode import FLOWER_IDLE_S, IDLE_ENV
from deploy.worker import WORKER_SOCKET_KEY, WorkerError, health
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FINISHED_OK = "finished:completed"

# Flower's poll intervals on the message path (measured in docs/deploy.md, "Round overhead"):
# SuperExec asks its SuperNode for a new task every FLWR_SUPEREXEC_TASK_POLL_INTERVAL s (Flower's default 1 s);
# the SuperNode pulls the SuperLink again FEDECG_SUPERNODE_IDLE_POLL_S s after an empty pull (Flower: 3 s,
# shortened by deploy.supernode). FLOWER_DEFAULT_POLLS restores Flower's own values (the "before" numbers).
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
TUNED_POLLS = {"superexec_task_poll_s": 0.2, "supernode_idle_poll_s": 1.0}
FLOWER_DEFAULT_POLLS = {"superexec_task_poll_s": 1.0, "supernode_idle_poll_s": 3.0}


NOT_REGISTERED = "No SuperNode found with the given public key"
STILL_ONLINE = "could not be activated"


def explain_supernode_failure(text: str, superlink_text: str = "") -> str:
    """A one-line reason for a SuperNode that did not connect, read from its log (and the SuperLink's, if known).

    Flower 1.41 answers both an unknown key and a key whose node is still marked online with the same
    SuperNode-side error (``[code: 2004] Failed to activate SuperNode``); the SuperLink's log tells them apart."""
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL/TLS handshake error" in text:
        return ("TLS refused: the SuperLink's certificate does not verify against the given CA certificate "
                "(wrong ca.crt, or the address is not among the certificate's names)")
    if "code: 2004" in text or "Failed to activate SuperNode" in text:
        if STILL_ONLINE in superlink_text and NOT_REGISTERED not in superlink_text:
            return ("refused by the SuperLink: a SuperNode with this key is still marked online (after a crash "
                    "the SuperLink waits for 2 missed 30 s heartbeats, about 60 s, before it accepts the key again)")
        if NOT_REGISTERED in superlink_text or not superlink_text:
            return ("refused by the SuperLink: this SuperNode's public key is not registered "
                    "(flwr supernode register)" + ("" if superlink_text else ", or a SuperNode with this key is "
                                                   "still marked online after a crash (wait about 60 s)"))
        return "refused by the SuperLink (code 2004: failed to activate the SuperNode)"
    if "Unable to parse the private key" in text:
        return "the private key file is not an OpenSSH EC key"
    if "Connection refused" in text or "Failed to initialize the connection" in text:
        return "could not reach the SuperLink"
    return ""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string (JSON escapes are valid TOML escapes)


def write_run_config(path: Path, run_config: Mapping[str, object]) -> Path:
    """Write run-config overrides as a flat TOML file for ``flwr run --run-config <file>``."""
    lines = [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in run_config.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


@dataclass
class RunResult:
    """Outcome of one ``flwr run`` on the local deployment."""

    run_id: int
    status: str
    elapsed_s: float
    log_path: Path | None = None
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == FINISHED_OK


class LocalDeployment:
    """SuperLink + SuperNodes of a provisioned consortium on 127.0.0.1 (use as a context manager)."""

    def __init__(self, consortium: Consortium, work_dir: Path, site_data: Mapping[str, Path],
                 startup_timeout: float = 90.0, *, env: Mapping[str, str] | None = None,
                 polls: Mapping[str, float] | None = None, timestamps: bool = True, database: str = "file",
                 workers: bool = False) -> None:
        """``env``: extra environment for every process. ``polls``: Flower's poll intervals on the message path
        (:data:`TUNED_POLLS` by default, :data:`FLOWER_DEFAULT_POLLS` for Flower's own). ``timestamps``: prefix
        every log line with the time it was written (deploy.processes.stamp), for timing analyses.
        ``database``: ``file`` (an SQLite file, as start-superlink.sh: registrations and runs survive a SuperLink
        restart) or ``memory`` (Flower's in-memory state: nothing survives a restart, but no SQLite write lock;
        on a saturated machine Flower 1.41's SQLite state was seen failing pushes with ``database is locked``
        after its 5 s busy timeout). ``workers``: give every site a resident worker (deploy.worker, supervised,
        socket under ``<work_dir>/workers/<site>/``, log ``logs/worker-<site>.log``) and name its socket in the
        SuperNode's node config; the ClientApp then forwards train/evaluate to it (client.worker_channel) if it
        has that hook."""
        if database not in ("file", "memory"):
            raise FedECGError(f"database must be file or memory, not {database!r}")
        self.database = database
        self.workers = workers
        unknown = sorted(set(site_data) - set(consortium.sites))
        if unknown:
            raise FedECGError(f"sites not in the consortium {sorted(consortium.sites)}: {', '.join(unknown)}")
        for site, data_dir in site_data.items():
            if not (Path(data_dir) / "ptbxl_database.csv").is_file():
                raise FedECGError(f"site {site}: {data_dir} has no ptbxl_database.csv (not a PTB-XL folder)")
            if any(q in str(Path(data_dir).resolve()) for q in "'\""):
                raise FedECGError(f"site {site}: the data folder path must not contain quotes: {data_dir}")
        self.consortium = consortium
        self.work_dir = Path(work_dir).resolve()
        self.site_data = {s: Path(p).resolve() for s, p in site_data.items()}
        self.startup_timeout = startup_timeout
        self.bin_dir = Path(sys.executable).parent
        extra_env = env
        env = dict(os.environ)
        env.update({
            "PATH": f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
        })
        self.polls = {**TUNED_POLLS, **(polls or {})}
        env[TASK_POLL_ENV] = repr(float(self.polls["superexec_task_poll_s"]))
        env.update(extra_env or {})
        self.env = env
        self.procs = ProcessGroup(self.work_dir / "logs", env=env, timestamps=timestamps)
        self.superlink_port: int | None = None
        self.node_ids: dict[str, int] = {}

    # ---- context manager -------------------------------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process this deployment started (reverse order, by PID)."""
        self.procs.stop_all()

    # ---- helpers ---------------------------------------------------------------------------------------
    @property
    def superlink_address(self) -> str:
        if self.superlink_port is None:
            raise FedECGError("the SuperLink has not been started")
        return f"127.0.0.1:{self.superlink_port}"

    def _home(self, name: str) -> Path:
        home = self.work_dir / "flwr-home" / name
        home.mkdir(parents=True, exist_ok=True)
        return home

    @property
    def cli_home(self) -> Path:
        return self._home("cli")

    def flwr(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this deployment's SuperLink connection (FLWR_HOME under work_dir)."""
        env = {**self.env, "FLWR_HOME": str(self.cli_home)}
        argv = [str(self.bin_dir / "flwr"), *args]
        try:
            res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise FedECGError(f"`flwr {' '.join(args)}` did not finish within {timeout:.0f} s") from None
        if check and res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
            raise FedECGError(f"`flwr {' '.join(args)}` failed (exit {res.returncode}): {tail}")
        return res

    @staticmethod
    def _json_out(res: subprocess.CompletedProcess) -> dict:
        """The JSON object ``flwr --format json`` prints (the last line starting with '{')."""
        for line in reversed(res.stdout.splitlines()):
            if line.strip().startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    break
        try:
            return json.loads(res.stdout[res.stdout.index("{"):])
        except (ValueError, json.JSONDecodeError):
            raise FedECGError(f"unexpected `flwr` output: {res.stdout.strip()[-300:]}") from None

    # ---- SuperLink -------------------------------------------------------------------------------------
    def start_superlink(self, port: int | None = None) -> None:
        """Start ``flower-superlink`` with TLS and ``--enable-supernode-auth`` on 127.0.0.1 (state in an SQLite
        file, so registrations and runs survive a SuperLink restart) and wait until it accepts connections."""
        cons = self.consortium
        self.superlink_port = port or self.superlink_port or free_port()
        state = self.work_dir / "superlink"
        state.mkdir(parents=True, exist_ok=True)
        argv = [
            str(self.bin_dir / "flower-superlink"),
            "--ssl-ca-certfile", str(cons.ca_cert),
            "--ssl-certfile", str(cons.server_cert),
            "--ssl-keyfile", str(cons.server_key),
            "--enable-supernode-auth",
            "--host", "127.0.0.1", "--port", str(self.superlink_port),
            *(["--database", str(state / "state.db")] if self.database == "file" else []),
            "--disable-runtime-dependency-installation",
        ]
        # the coordinator's SuperExec only launches the ServerApp once per run: Flower's 1 s poll is fine there
        # (and every poll is a write to the SuperLink's state)
        self.procs.start("superlink", argv, env={"FLWR_HOME": str(self._home("superlink")), TASK_POLL_ENV: "1.0"},
                         cwd=state)
        self.procs.wait_for(
            "superlink", lambda p: "Uvicorn running on" in p.log_text() and port_open("127.0.0.1", self.superlink_port),
            timeout=self.startup_timeout,
        )
        atomic_write_text(self.cli_home / "config.toml", flwr_config_toml(self.superlink_address, cons.ca_cert))

    def kill_superlink(self) -> None:
        """SIGKILL the SuperLink and its children (SuperExec, ServerApp): a coordinator crash."""
        self.procs.kill("superlink")

    def register_sites(self, sites: list[str] | None = None) -> dict[str, int]:
        """``flwr supernode register <site>.pub`` for each site; returns the node IDs the SuperLink assigned."""
        for site in sites or list(self.site_data):
            res = self.flwr("supernode", "register", str(self.consortium.site_public_key(site)), CONNECTION_NAME,
                            "--name", site, "--format", "json")
            out = self._json_out(res)
            if not out.get("success"):
                raise FedECGError(f"registering site {site} failed: {out}")
            self.node_ids[site] = int(out["node-id"])
            log.info("registered site %s as node %s", site, out["node-id"])
        return dict(self.node_ids)

    # ---- SuperNodes ------------------------------------------------------------------------------------
    def start_supernode(self, site: str, *, private_key: Path | None = None, root_certificates: Path | None = None,
                        wait: bool = True, max_retries: int | None = None, rejoin_timeout: float = 0.0) -> None:
        """Start the SuperNode of ``site`` (its own data folder, runtime port and FLWR_HOME); wait until the
        SuperLink accepted it (``SuperNode ID`` in its log), else raise with a one-line reason.

        ``rejoin_timeout`` > 0 (a restart after a crash): while the SuperLink still lists the key as online,
        try again every 5 s for up to that many seconds."""
        bundle = self.consortium.sites[site]
        node_config = self.node_config(site)
        if self.workers:
            if f"worker-{site}" not in self.procs.names() or not self.procs[f"worker-{site}"].alive():
                self.start_worker(site)
            node_config += f" {WORKER_SOCKET_KEY}='{self.worker_socket(site)}'"
        argv = [
            *self.supernode_command(),
            "--superlink", self.superlink_address,
            "--root-certificates", str(root_certificates or bundle.ca_cert),
            "--auth-supernode-private-key", str(private_key or bundle.private_key),
            "--node-config", node_config,
            "--port", str(free_port()),
        ]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        name = f"supernode-{site}"
        deadline = time.monotonic() + rejoin_timeout
        while True:
            link_mark = self.log_offset("superlink")
            proc = self.procs.start(name, argv, env={"FLWR_HOME": str(self._home(name))}, cwd=self._home(name))
            if not wait:
                return
            offset = len(proc.log_text())
            try:
                self.procs.wait_for(
                    name, lambda p, off=offset: "SuperNode ID:" in p.log_text()[off:], timeout=self.startup_timeout,
                    failure=lambda p, off=offset, link=link_mark: explain_supernode_failure(
                        p.log_text()[off:], self.procs["superlink"].log_text()[link:]),
                )
                return
            except FedECGError as exc:
                if "still marked online" not in str(exc) or time.monotonic() > deadline:
                    raise
                log.info("%s: the SuperLink still lists this key as online; retrying in 5 s", name)
                time.sleep(5)

    def node_config(self, site: str) -> str:
        """The site's ``--node-config`` (its data folder and public name)."""
        return f"data-dir='{self.site_data[site]}' site-name='{site}'"

    # ---- resident site workers -------------------------------------------------------------------------
    def worker_socket(self, site: str) -> Path:
        return self.work_dir / "workers" / site / "worker.sock"

    def start_worker(self, site: str, timeout: float | None = None) -> dict:
        """Start the supervised resident worker of ``site`` (deploy.worker) and wait until it answers its
        health check warm; returns the health answer."""
        sock = self.worker_socket(site)
        sock.parent.parent.mkdir(parents=True, exist_ok=True)
        sock.parent.mkdir(mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "deploy.worker", "supervise", "--socket", str(sock),
                "--node-config", self.node_config(site), "--log", str(self.work_dir / "logs" / f"worker-{site}.log")]
        self.procs.start(f"worker-{site}", argv, cwd=self.work_dir)
        answer: dict = {}

        def ready(_proc) -> bool:
            nonlocal answer
            try:
                answer = health(sock, timeout=2)
            except (WorkerError, ValueError):
                return False
            return bool(answer.get("ok") and answer.get("warm"))

        self.procs.wait_for(f"worker-{site}", ready, timeout=timeout or max(self.startup_timeout, 240.0))
        return answer

    def worker_health(self, site: str) -> dict:
        return health(self.worker_socket(site))

    def kill_worker(self, site: str) -> int:
        """SIGKILL the serving worker process of ``site`` (a crash); its supervisor starts a new one. Returns
        the killed PID."""
        pid = int(self.worker_health(site)["pid"])
        os.kill(pid, signal.SIGKILL)
        return pid

    def supernode_command(self) -> list[str]:
        """``flower-supernode``, or ``python -m deploy.supernode`` (the same SuperNode with a shorter idle
        back-off, set by ``$FEDECG_SUPERNODE_IDLE_POLL_S``) when the idle poll differs from Flower's 3 s."""
        idle = float(self.polls["supernode_idle_poll_s"])
        if idle == FLOWER_IDLE_S:
            return [str(self.bin_dir / "flower-supernode")]
        self.env[IDLE_ENV] = repr(idle)
        self.procs.env[IDLE_ENV] = repr(idle)
        return [sys.executable, "-m", "deploy.supernode"]

    def log_offset(self, name: str) -> int:
        """Current length of a process's log (pass to :meth:`wait_for_log` to look only at newer lines)."""
        return len(self.procs[name].log_text())

    def wait_for_log(self, name: str, needle: str, *, after: int = 0, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until ``needle`` appears ``count`` times in the log of process ``name`` past offset ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].log_text()[after:].count(needle) >= count:
                return
            time.sleep(0.2)
        raise FedECGError(f"{name}: {needle!r} did not appear {count}x within {timeout:.0f} s "
                          f"(log: {self.procs[name].log_path})")

    def node_status(self, site: str) -> str:
        """The SuperLink's view of ``site``'s node (``registered``/``online``/``offline``): `flwr supernode list`."""
        out = self._json_out(self.flwr("supernode", "list", CONNECTION_NAME, "--format", "json"))
        for node in out.get("nodes", []):
            if int(node["node-id"]) == self.node_ids.get(site):
                return str(node["status"])
        raise FedECGError(f"the SuperLink lists no node for site {site} (registered: {self.node_ids})")

    def restart_after_crash(self, site: str, timeout: float = 180.0, margin: float = 10.0) -> None:
        """Restart a crashed SuperNode the safe way: wait until the SuperLink marks the node offline (2 missed
        30 s heartbeats), then ``margin`` more seconds so the ServerApp's reply poll (every 3 s) sees it offline
        and gets a "Node Unavailable" error for the message the crashed process took, then start it again.

        Restarting sooner is refused by the SuperLink; restarting within a second or two of the offline mark is
        accepted but the in-flight message is then never answered nor failed (Flower 1.41), so the round waits
        for the scenario's ``strategy.round_timeout_s``."""
        deadline = time.monotonic() + timeout
        while self.node_status(site) == "online":
            if time.monotonic() > deadline:
                raise FedECGError(f"site {site}: the SuperLink still lists the node online after {timeout:.0f} s")
            time.sleep(2)
        time.sleep(margin)
        self.start_supernode(site, rejoin_timeout=max(0.0, deadline - time.monotonic()))

    def stop_supernode(self, site: str) -> None:
        self.procs.stop(f"supernode-{site}")

    def kill_supernode(self, site: str) -> None:
        """SIGKILL the SuperNode of ``site`` and its children (a crash, not a clean shutdown)."""
        self.procs.kill(f"supernode-{site}")

    def start(self, sites: list[str] | None = None) -> None:
        """SuperLink, registration, then every site's SuperNode."""
        sites = sites or list(self.site_data)
        self.start_superlink()
        self.register_sites(sites)
        for site in sites:
            self.start_supernode(site)

    # ---- runs ------------------------------------------------------------------------------------------
    def submit_run(self, app_dir: Path, run_config: Mapping[str, object] | None = None) -> int:
        """``flwr run <app_dir> consortium`` (run-config overrides via a TOML file); returns the run ID."""
        args = ["run", str(Path(app_dir).resolve()), CONNECTION_NAME, "--format", "json"]
        if run_config:
            path = write_run_config(self.work_dir / "run-config.toml", run_config)
            args += ["--run-config", str(path)]
        out = self._json_out(self.flwr(*args, timeout=300))
        if not out.get("success") or not out.get("run-id"):
            raise FedECGError(f"`flwr run` did not start a run: {out}")
        log.info("submitted run %s", out["run-id"])
        return int(out["run-id"])

    def run_status(self, run_id: int) -> dict:
        """The row ``flwr ls --run-id`` prints for ``run_id`` (``status`` like ``running``/``finished:failed``)."""
        for attempt in range(5):  # a busy SuperLink answers "Internal server error" now and then: ask again
            out = self._json_out(self.flwr("ls", CONNECTION_NAME, "--run-id", str(run_id), "--format", "json"))
            runs = out.get("runs") or []
            if runs:
                return runs[0]
            if "Internal server error" not in str(out.get("error-message", "")) or attempt == 4:
                break
            log.warning("flwr ls: the SuperLink answered with an internal error; asking again in 3 s")
            time.sleep(3)
        raise FedECGError(f"the SuperLink does not know run {run_id}: {out}")

    def wait_for_run(self, run_id: int, timeout: float, poll: float = 2.0) -> RunResult:
        """Poll until the run is ``finished:*`` (or raise after ``timeout`` s); save its log under logs/."""
        start = time.monotonic()
        row: dict = {}
        while time.monotonic() - start < timeout:
            if not self.procs["superlink"].alive():
                raise FedECGError(f"the SuperLink exited while run {run_id} was in progress "
                                  f"(log: {self.procs['superlink'].log_path})")
            row = self.run_status(run_id)
            if str(row.get("status", "")).startswith("finished"):
                break
            time.sleep(poll)
        else:
            raise FedECGError(f"run {run_id} did not finish within {timeout:.0f} s (last status {row.get('status')})")
        log_path = self.work_dir / "logs" / f"run-{run_id}.log"
        res = self.flwr("log", str(run_id), CONNECTION_NAME, "--show", check=False, timeout=60)
        atomic_write_text(log_path, res.stdout + res.stderr)
        return RunResult(run_id=run_id, status=str(row["status"]), elapsed_s=time.monotonic() - start,
                         log_path=log_path, details=row)


def run_local(consortium: Consortium, work_dir: Path, site_data: Mapping[str, Path], app_dir: Path,
              run_config: Mapping[str, object] | None = None, timeout: float = 3600.0,
              **options: object) -> RunResult:
    """Start everything, run the app once, stop everything. Raises FedECGError unless the run completed (the
    SuperLink says ``finished:completed`` and, when the run config names a ``run-dir``, its status.json says
    ``completed``). ``options`` go to :class:`LocalDeployment` (``workers=True``, ``polls=...``, ...)."""
    work_dir = Path(work_dir)
    with LocalDeployment(consortium, work_dir, site_data, **options) as dep:
        dep.start()
        run_id = dep.submit_run(app_dir, run_config)
        result = dep.wait_for_run(run_id, timeout=timeout)
    run_dir = (run_config or {}).get("run-dir")
    dir_ok, dir_line = describe_status_file(Path(str(run_dir))) if run_dir else (True, "")
    atomic_write_json(work_dir / "result.json", {
        "run_id": result.run_id, "status": result.status, "elapsed_s": round(result.elapsed_s, 1),
        "node_ids": dep.node_ids, "log": str(result.log_path),
        **({"run_dir_status": read_status_file(Path(str(run_dir)))} if run_dir else {})})
    if not result.ok or not dir_ok:
        raise FedECGError(f"run {result.run_id} did not complete: SuperLink status {result.status}"
                          + (f"; {dir_line}" if dir_line else "") + f" (log: {result.log_path})")
    return result
