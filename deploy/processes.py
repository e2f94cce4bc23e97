"""Start and stop the Flower processes of a deployment by PID, with their output in log files.

Every process is started in its own session (``start_new_session``) so a Ctrl-C in the launcher's terminal
reaches only the launcher, which then stops the children itself in reverse start order: SIGTERM to the PID,
wait, SIGKILL if needed. Flower's processes spawn their own children (``flower-superexec``, which spawns
``flwr-serverapp`` / ``flwr-clientapp``); those are found through ``/proc`` (parent PID chain) before the
parent is signalled and are stopped by PID too, so nothing the launcher started outlives it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedecg.errors import FedECGError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (Linux ``/proc``; empty elsewhere), children first."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    parent_of: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." — comm may contain spaces/parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            parent_of[int(entry.name)] = int(fields[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        cur = frontier.pop()
        kids = [p for p, pp in parent_of.items() if pp == cur]
        out.extend(kids)
        frontier.extend(kids)
    return out


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
        return state[state.rfind(")") + 2] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ('' when gone or unknown)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stamp() -> str:
    """The time prefix of a timestamped log line: local time with milliseconds (``2026-01-31T12:00:00.123``)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def _copy_with_timestamps(src, dst) -> None:  # noqa: ANN001 - binary file objects
    """Copy lines from the pipe ``src`` to the log ``dst``, each prefixed with the time it arrived; ends at EOF,
    i.e. once the process and every descendant holding the pipe have exited."""
    try:
        for line in iter(src.readline, b""):
            dst.write(stamp().encode() + b" " + line)
            dst.flush()
    except (OSError, ValueError):
        pass
    finally:
        src.close()
        dst.close()


@dataclass
class ManagedProcess:
    """One started process: its name, argv, log file and ``Popen`` handle (and, with timestamped logs, the
    thread that copies its output into the log)."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    copier: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class ProcessGroup:
    """The processes one launcher started. Use as a context manager: leaving it stops them all."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None, timestamps: bool = False) -> None:
        self.log_dir = Path(log_dir)
        self.env = dict(os.environ if env is None else env)
        # timestamps: every output line (the process's and its children's, e.g. each flwr-clientapp) is prefixed
        # with the time the launcher read it; the output goes through a pipe and a copier thread
        self.timestamps = timestamps
        self._procs: dict[str, ManagedProcess] = {}
        # every descendant PID seen → its command line, so a recycled PID is never signalled
        self.known_pids: dict[int, str] = {}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def __getitem__(self, name: str) -> ManagedProcess:
        return self._procs[name]

    def names(self) -> list[str]:
        return list(self._procs)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> ManagedProcess:
        """Start ``argv`` with stdout+stderr appended to ``<log_dir>/<name>.log`` (a restart appends; with
        ``timestamps`` each line starts with the time it was written, see :func:`stamp`)."""
        if name in self._procs and self._procs[name].alive():
            raise FedECGError(f"process {name!r} is already running (pid {self._procs[name].pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        full_env = {**self.env, **(env or {})}
        copier = None
        with open(log_path, "ab") as fh:
            fh.write(f"\n==== start {name}: {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                popen = subprocess.Popen(
                    list(argv), stdout=subprocess.PIPE if self.timestamps else fh, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=full_env, cwd=cwd, start_new_session=True,
                )
            except FileNotFoundError:
                raise FedECGError(f"cannot start {name}: {argv[0]} not found on PATH") from None
            if self.timestamps:
                copier = threading.Thread(target=_copy_with_timestamps, args=(popen.stdout, open(log_path, "ab")),
                                          name=f"log-{name}", daemon=True)
                copier.start()
        proc = ManagedProcess(name=name, argv=list(argv), log_path=log_path, popen=popen, copier=copier)
        self._procs[name] = proc
        log.info("started %s (pid %d), log %s", name, popen.pid, log_path)
        return proc

    def wait_for(self, name: str, ready: Callable[[ManagedProcess], bool], timeout: float,
                 failure: Callable[[ManagedProcess], str] | None = None) -> None:
        """Poll ``ready(proc)`` until true; raise FedECGError (with ``failure(proc)`` or the log tail) when the
        process exits first or ``timeout`` seconds pass."""
        proc = self._procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(proc):
                return
            if not proc.alive():
                reason = failure(proc) if failure else ""
                raise FedECGError(
                    f"{name} exited with code {proc.popen.returncode} before it was ready"
                    + (f": {reason}" if reason else "") + f" (log: {proc.log_path})"
                )
            time.sleep(0.2)
        reason = failure(proc) if failure else ""
        raise FedECGError(f"{name} was not ready after {timeout:.0f} s" + (f": {reason}" if reason else "")
                          + f" (log: {proc.log_path})")

    def stop(self, name: str, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Stop one process and its descendants by PID (``sig``, then SIGKILL after ``timeout`` s)."""
        proc = self._procs.get(name)
        if proc is None:
            return None
        kids = descendants(proc.pid)
        self._remember(kids)
        targets = [proc.pid, *kids] if proc.alive() else kids
        for pid in targets:
            _signal_pid(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (proc.alive() or any(pid_alive(p) for p in kids)):
            time.sleep(0.1)
        for pid in [proc.pid, *kids]:
            if pid_alive(pid) and (pid != proc.pid or proc.alive()):
                if sig != signal.SIGKILL:
                    log.warning("%s: pid %d did not stop after %.0f s, sending SIGKILL", name, pid, timeout)
                _signal_pid(pid, signal.SIGKILL)
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("%s: pid %d still running after SIGKILL", name, proc.pid)
        for pid in kids:  # reap-free: they belong to other parents; just make sure they are gone
            end = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.1)
        if proc.copier is not None:
            proc.copier.join(timeout=5)  # the last lines reach the log before stop() returns
        return proc.popen.returncode

    def kill(self, name: str) -> None:
        """SIGKILL one process and its descendants at once (simulates a crash)."""
        self.stop(name, timeout=0.0, sig=signal.SIGKILL)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every process in reverse start order; also any descendant PID seen earlier."""
        for name in reversed(list(self._procs)):
            self.stop(name, timeout=timeout)
        for pid in self.alive_pids():
            log.warning("pid %d (%s) outlived its parent, sending SIGKILL", pid, self.known_pids.get(pid, "")[:80])
            _signal_pid(pid, signal.SIGKILL)

    def _remember(self, pids: list[int]) -> None:
        for pid in pids:
            self.known_pids.setdefault(pid, cmdline(pid))

    def snapshot(self) -> None:
        """Record the current descendants of every running process (call while they run)."""
        for proc in self._procs.values():
            if proc.alive():
                self._remember(descendants(proc.pid))

    def alive_pids(self) -> list[int]:
        """Started processes still running, plus descendants seen earlier that still run the same command."""
        self.snapshot()
        started = [p.pid for p in self._procs.values() if p.alive()]
        seen = [p for p, cmd in self.known_pids.items() if cmd and pid_alive(p) and cmdline(p) == cmd]
        return sorted({*started, *seen})
