"""The resident site worker: keeps torch, the fedecg ClientApp, the site's loaded records and warm caches in
one long-lived process next to the SuperNode, so a round no longer pays a Python + torch start-up and a data
load per message.

Flower 1.41 starts a fresh ``flwr-clientapp`` process for every message (train, then evaluate). With a worker,
that process stays thin: the ClientApp's first mod (client.worker_channel.forward_to_worker) sends the Message
and its Context over a local Unix socket to this worker, which runs *the same* ``client.app.app`` (site policy,
privacy ledger, egress guard and all) on them and sends back the reply and the updated ``context.state``.
Nothing else changes: what leaves the site is still decided by the egress guard, the ledger is the same file
(``<state-dir>/privacy-ledger.json``, locked per write), TLS and node authentication are the SuperNode's.

Guarantees of the channel:

- The socket is a filesystem Unix socket, mode 0600, in a folder of the site's service user (created 0700); the
  worker also checks every peer's uid (``SO_PEERCRED``) and refuses any other user.
- It serves only ``train`` and ``evaluate`` requests (plus ``health`` and ``register``), only for a registered
  run: with ``--runs auto`` (default) the first run to ask becomes the registered one and a different run id is
  refused until that run has been idle ``--run-idle-s`` seconds; with ``--runs explicit`` only run ids
  registered with ``python -m deploy.worker register`` (by the site's own user) are served. The Message's run
  id, the Context's run id and the request's run id must agree, and the message type must be the operation.
- It serves only its own site: the request's ``data-dir`` must be the worker's own; the worker's node config
  (its command line, the same string the SuperNode gets) is used, never the request's.
- It answers one train/evaluate at a time (the SuperNode hands out one message at a time anyway); a health check
  is answered while it trains.

Processes: ``python -m deploy.worker serve ...`` is the worker; ``python -m deploy.worker supervise ...`` runs it
and restarts it when it dies (after 2 s, doubling to 60 s while it keeps dying fast), until SIGTERM, or until
the process named by ``--parent-pid`` (the SuperNode) is gone. ``python -m deploy.worker health --socket S``
prints the worker's health JSON (exit 1 when it does not answer). The worker's own log is ``--log`` (default
stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from client.worker_channel import (  # noqa: F401 - re-exported: the worker's side of the same channel
    MAX_FRAME,
    OPS,
    PROTOCOL,
    WORKER_SOCKET_KEY,
    WorkerError,
    call,
    health,
    peer_uid,
    recv_frames,
    register,
    send_frames,
)
from deploy.processes import pid_alive

# This module starts light (standard library and the channel, no Flower, no torch): ``supervise``, ``health`` and
# ``register`` run as processes of their own and need neither, and ``serve`` binds its socket before the warm-up
# imports torch and the fedecg ClientApp. So Flower and torch are imported where used.

log = logging.getLogger("fedecg.worker")

# ---- node config ---------------------------------------------------------------------------------------------


def parse_node_config(text: str) -> dict:
    """A ``--node-config`` string ("k='v' k2=3"), parsed by Flower's own parser (as the SuperNode does)."""
    from flwr.common.config import parse_config_args  # local: see the note at the imports (only serve parses)

    return dict(parse_config_args([text])) if text.strip() else {}


# ---- the worker ----------------------------------------------------------------------------------------------


class SiteWorker:
    """Serve train/evaluate requests of the registered run on a 0600 Unix socket (see the module docstring)."""

    def __init__(self, socket_path: Path, node_config: dict, *, runs: str = "auto", run_idle_s: float = 3600.0,
                 preload: bool = True) -> None:
        if runs not in ("auto", "explicit"):
            raise ValueError(f"runs must be auto or explicit, not {runs!r}")
        if "data-dir" not in node_config:
            raise ValueError("the worker's node config needs data-dir (the site's PTB-XL folder)")
        self.socket_path = Path(socket_path)
        self.node_config = {k: v for k, v in node_config.items() if k != WORKER_SOCKET_KEY}
        self.data_dir = str(Path(str(node_config["data-dir"])).expanduser().resolve())
        self.runs = runs
        self.run_idle_s = run_idle_s
        self.preload = preload
        self.registered: dict[int, float] = {}  # run id → last request (monotonic)
        self.served = {"train": 0, "evaluate": 0, "refused": 0}
        self.started = time.time()
        self._compute = threading.Lock()
        self._state = threading.Lock()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._app = None

    # ---- set-up ----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Import what every request needs (Flower, torch, the fedecg ClientApp) and keep the site's loaded
        records in memory across requests (client.data's folder loader, memoised on the data table's mtime)."""
        t0 = time.perf_counter()
        import torch  # noqa: F401 - local: the warm-up itself (see the note at the imports)

        import client.app
        import client.data
        import client.training  # noqa: F401

        self._app = client.app.app
        _memoise_folder_loader(client.data)
        if self.preload:
            try:
                client.data._from_folder(dict(self.node_config))
            except Exception as exc:  # noqa: BLE001 - the request will report it through the egress guard
                log.warning("preloading the site's records failed (%s: %s); requests will try again",
                            type(exc).__name__, exc)
        log.info("warm in %.1f s (torch, fedecg ClientApp, the site's records)", time.perf_counter() - t0)

    def bind(self) -> None:
        folder = self.socket_path.parent
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)
        st = folder.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise WorkerError(f"{folder}: the socket's folder must belong to this user and not be group/world "
                              "writable")
        if self.socket_path.exists() or self.socket_path.is_symlink():
            if not stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                raise WorkerError(f"{self.socket_path} exists and is not a socket")
            if _answers(self.socket_path):
                raise WorkerError(f"another worker already serves {self.socket_path}")
            self.socket_path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        sock.listen(16)
        self._sock = sock
        log.info("listening on %s (mode 0600, uid %d)", self.socket_path, os.getuid())

    def serve_forever(self) -> None:
        if self._sock is None:
            self.bind()
        if self._app is None:
            self.warm_up()
        assert self._sock is not None
        self._sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass
            log.info("stopped; served %s", self.served)

    # ---- requests --------------------------------------------------------------------------------------
    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                uid = peer_uid(conn)
                if uid is not None and uid != os.getuid():
                    self._count("refused")
                    log.warning("refused a connection from uid %d (this worker serves uid %d only)", uid, os.getuid())
                    send_frames(conn, [json.dumps({"ok": False, "error": "refused: another user"}).encode()])
                    return
                conn.settimeout(600)
                frames = recv_frames(conn)
                header = json.loads(frames[0])
                reply = self.handle(header, frames[1:])
            except Exception as exc:  # noqa: BLE001 - the client gets a short reason, the log the details
                log.exception("request failed")
                reply = [json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}).encode()]
            try:
                send_frames(conn, reply)
            except OSError:  # e.g. a health check that timed out while the worker was warming up
                log.info("the client went away before the reply was sent")

    def handle(self, header: dict, blobs: list[bytes]) -> list[bytes]:
        """One request → response frames (header JSON first)."""
        op = header.get("op")
        if header.get("protocol") != PROTOCOL:
            return self._refuse(f"protocol {header.get('protocol')!r}, this worker speaks {PROTOCOL}")
        if op == "health":
            return [json.dumps(self.health()).encode()]
        if op == "register":
            run_id = int(header["run_id"])
            with self._state:
                self.registered[run_id] = time.monotonic()
            log.info("registered run %d", run_id)
            return [json.dumps({"ok": True, "registered": sorted(self.registered)}).encode()]
        if op not in OPS:
            return self._refuse(f"operation {op!r} is not served (only {', '.join(OPS)})")
        # local: see the note at the imports (loaded by the warm-up by now)
        from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
        from flwr.proto.message_pb2 import Context as ProtoContext
        from flwr.proto.message_pb2 import Message as ProtoMessage

        if len(blobs) != 2:
            return self._refuse("a train/evaluate request carries a message and a context")
        msg = message_from_proto(ProtoMessage.FromString(blobs[0]))
        context = context_from_proto(ProtoContext.FromString(blobs[1]))
        run_id = int(header.get("run_id", -1))
        if not (run_id == msg.metadata.run_id == context.run_id):
            return self._refuse(f"run ids disagree: request {run_id}, message {msg.metadata.run_id}, "
                                f"context {context.run_id}")
        if msg.metadata.message_type != op:
            return self._refuse(f"message type {msg.metadata.message_type!r} is not the operation {op!r}")
        their_dir = context.node_config.get("data-dir")
        if their_dir is not None and str(Path(str(their_dir)).expanduser().resolve()) != self.data_dir:
            return self._refuse(f"the request is for data-dir {their_dir}, this worker serves {self.data_dir}")
        refusal = self._admit(run_id)
        if refusal:
            return self._refuse(refusal)
        context.node_config = dict(self.node_config)  # the worker's own site config, never the request's
        with self._compute:
            t0 = time.perf_counter()
            reply = self._app(message=msg, context=context)
            seconds = time.perf_counter() - t0
        self._count(op)
        log.info("run %d %s (round %s) in %.2f s", run_id, op, msg.metadata.group_id or "?", seconds)
        return [json.dumps({"ok": True, "seconds": seconds}).encode(),
                message_to_proto(reply).SerializeToString(), context_to_proto(context).SerializeToString()]

    def _admit(self, run_id: int) -> str:
        now = time.monotonic()
        with self._state:
            if run_id in self.registered:
                self.registered[run_id] = now
                return ""
            if self.runs == "explicit":
                return f"run {run_id} is not registered with this site's worker"
            active = [r for r, last in self.registered.items() if now - last < self.run_idle_s]
            if active:
                return (f"run {run_id} is not the registered run {active[0]} (idle runs are replaced after "
                        f"{self.run_idle_s:.0f} s)")
            self.registered = {run_id: now}
        log.info("registered run %d (first request)", run_id)
        return ""

    def _refuse(self, reason: str) -> list[bytes]:
        self._count("refused")
        log.warning("refused: %s", reason)
        return [json.dumps({"ok": False, "error": f"refused: {reason}"}).encode()]

    def _count(self, key: str) -> None:
        with self._state:
            self.served[key] += 1

    def health(self) -> dict:
        with self._state:
            return {"ok": True, "pid": os.getpid(), "site": str(self.node_config.get("site-name", "")),
                    "data_dir": self.data_dir, "warm": self._app is not None, "runs": sorted(self.registered),
                    "served": dict(self.served), "uptime_s": round(time.time() - self.started, 1),
                    "busy": self._compute.locked()}


def _memoise_folder_loader(data_module) -> None:  # noqa: ANN001 - client.data
    """Keep what ``client.data._from_folder`` loaded (records, metadata) for the next request while the data
    table is unchanged (same path, size and mtime); load_site_data's checks and reports still run each time."""
    original = getattr(data_module._from_folder, "__wrapped__", data_module._from_folder)
    cache: dict[tuple, object] = {}

    def _from_folder(node_config: dict):
        table = Path(str(node_config["data-dir"])).expanduser() / "ptbxl_database.csv"
        try:
            st = table.stat()
            key = (str(table.resolve()), st.st_size, st.st_mtime_ns, str(node_config.get("state-dir", "")),
                   str(node_config.get("site-name", "")))
        except OSError:
            return original(node_config)
        if key not in cache:
            cache.clear()
            cache[key] = original(node_config)
        return cache[key]

    _from_folder.__wrapped__ = original
    data_module._from_folder = _from_folder


def _answers(path: Path, timeout: float = 2.0) -> bool:
    try:
        return bool(health(path, timeout=timeout).get("ok"))
    except (OSError, WorkerError, ValueError):
        return False


# ---- processes -------------------------------------------------------------------------------------------------


def _setup_logging(log_file: str | None) -> None:
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log)
    if args.threads > 0:
        import torch  # local: see the note at the imports

        torch.set_num_threads(args.threads)
    worker = SiteWorker(Path(args.socket), parse_node_config(args.node_config), runs=args.runs,
                        run_idle_s=args.run_idle_s)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.bind()  # the socket exists early; requests wait (connect queue) until warm
    worker.warm_up()
    log.info("site worker ready (pid %d)", os.getpid())
    worker.serve_forever()
    return 0


def supervise(args: argparse.Namespace, serve_argv: list[str]) -> int:
    """Run ``serve`` as a child and restart it whenever it dies, until SIGTERM or the parent PID is gone."""
    _setup_logging(args.log)
    stopping = threading.Event()
    child: list[subprocess.Popen] = []

    def _term(*_):
        stopping.set()
        if child and child[0].poll() is None:
            child[0].terminate()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    delay = 2.0
    while not stopping.is_set():
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "deploy.worker", "serve", *serve_argv])
        child[:] = [proc]
        log.info("supervisor: started worker pid %d", proc.pid)
        while proc.poll() is None and not stopping.is_set():
            if args.parent_pid and not pid_alive(args.parent_pid):
                log.info("supervisor: parent %d is gone, stopping the worker", args.parent_pid)
                stopping.set()
                proc.terminate()
                break
            time.sleep(0.5)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if stopping.is_set():
            break
        delay = 2.0 if time.monotonic() - started > 60 else min(delay * 2, 60.0)
        log.warning("supervisor: worker exited with code %s; restarting in %.0f s", code, delay)
        stopping.wait(delay)
    log.info("supervisor: stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m deploy.worker", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "supervise"):
        p = sub.add_parser(name)
        p.add_argument("--socket", required=True, help="Unix socket path (its folder: this user's, 0700)")
        p.add_argument("--node-config", required=True, help="the SuperNode's --node-config string")
        p.add_argument("--runs", choices=("auto", "explicit"), default="auto")
        p.add_argument("--run-idle-s", type=float, default=3600.0)
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: the run config decides)")
        p.add_argument("--log", default=None, help="log file (default stderr)")
        if name == "supervise":
            p.add_argument("--parent-pid", type=int, default=0, help="stop when this process is gone")
    for name in ("health", "register"):
        p = sub.add_parser(name)
        p.add_argument("--socket", required=True)
        if name == "register":
            p.add_argument("--run-id", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args)
    if args.cmd == "supervise":
        serve_argv = ["--socket", args.socket, "--node-config", args.node_config, "--runs", args.runs,
                      "--run-idle-s", str(args.run_idle_s), "--threads", str(args.threads)]
        if args.log:
            serve_argv += ["--log", args.log]
        return supervise(args, serve_argv)
    try:
        out = health(args.socket) if args.cmd == "health" else register(args.socket, args.run_id)
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
