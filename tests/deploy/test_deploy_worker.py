"""deploy.worker / client.worker_channel: the resident site worker and its thin ClientApp mod.

A stand-in ClientApp keeps these fast; the worker logic (channel, refusals, context.state round trip, health,
supervision) is the same as with the fedecg ClientApp."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.metadata import Metadata

from client.worker_channel import forward, forward_to_worker
from deploy import worker as W


def _message(run_id: int = 7, mtype: str = "train", rnd: int = 1) -> Message:
    from flwr.app.message.message import make_message

    meta = Metadata(run_id=run_id, message_id="", src_node_id=1, dst_node_id=2, reply_to_message_id="",
                    group_id=str(rnd), created_at=time.time(), ttl=3600.0, message_type=mtype)
    return make_message(metadata=meta, content=RecordDict({"config": ConfigRecord({"x": 2})}))


def _context(run_id: int = 7, data_dir: str = "/site", socket_path: str = "") -> Context:
    node = {"data-dir": data_dir, "site-name": "s"}
    if socket_path:
        node[W.WORKER_SOCKET_KEY] = socket_path
    return Context(run_id=run_id, node_id=2, node_config=node, state=RecordDict(), run_config={})


def _fake_app(message: Message, context: Context) -> Message:
    """Doubles x, counts calls in context.state, reports the node config it saw and its pid."""
    calls = int(context.state["n"]["calls"]) + 1 if "n" in context.state else 1
    context.state["n"] = MetricRecord({"calls": calls})
    out = ConfigRecord({"x2": int(message.content["config"]["x"]) * 2, "pid": os.getpid(),
                        "data_dir": str(context.node_config["data-dir"]), "calls": calls})
    return Message(RecordDict({"config": out}), reply_to=message)


@pytest.fixture()
def worker(tmp_path):
    data = tmp_path / "site"
    data.mkdir()
    sock_dir = tmp_path / "run"
    w = W.SiteWorker(sock_dir / "w.sock", {"data-dir": str(data), "site-name": "s"}, preload=False)
    w._app = _fake_app
    w.bind()
    t = threading.Thread(target=w.serve_forever, daemon=True)
    t.start()
    yield w, data
    w.stop()
    t.join(timeout=5)


def test_socket_is_private_and_health_answers(worker):
    w, data = worker
    mode = stat.S_IMODE(w.socket_path.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(w.socket_path.parent.stat().st_mode) == 0o700
    h = W.health(w.socket_path)
    assert h["ok"] and h["pid"] == os.getpid() and h["data_dir"] == str(data.resolve())


def test_train_round_trip_updates_context_state(worker):
    w, data = worker
    ctx = _context(data_dir=str(data))
    reply = forward(_message(), ctx, str(w.socket_path))
    assert int(reply.content["config"]["x2"]) == 4
    assert int(ctx.state["n"]["calls"]) == 1  # the worker's state change came back
    forward(_message(mtype="evaluate"), ctx, str(w.socket_path))
    assert int(ctx.state["n"]["calls"]) == 2
    assert W.health(w.socket_path)["served"] == {"train": 1, "evaluate": 1, "refused": 0}


def test_wrong_run_type_or_site_is_refused(worker):
    w, data = worker
    forward(_message(run_id=7), _context(run_id=7, data_dir=str(data)), str(w.socket_path))  # registers run 7
    with pytest.raises(W.WorkerError, match="not the registered run 7"):
        forward(_message(run_id=8), _context(run_id=8, data_dir=str(data)), str(w.socket_path))
    with pytest.raises(W.WorkerError, match="run ids disagree"):
        forward(_message(run_id=7), _context(run_id=9, data_dir=str(data)), str(w.socket_path))
    with pytest.raises(W.WorkerError, match="this worker serves"):
        forward(_message(), _context(data_dir="/elsewhere"), str(w.socket_path))
    with pytest.raises(W.WorkerError, match="only train, evaluate"):
        forward(_message(mtype="query"), _context(data_dir=str(data)), str(w.socket_path))
    frames = W.call(w.socket_path, {"op": "train", "run_id": 7}, [b"x"])
    assert "refused" in json.loads(frames[0])["error"]
    assert W.health(w.socket_path)["served"]["refused"] == 5


def test_explicit_runs_need_registration(tmp_path):
    data = tmp_path / "site"
    data.mkdir()
    w = W.SiteWorker(tmp_path / "r" / "w.sock", {"data-dir": str(data)}, runs="explicit", preload=False)
    w._app = _fake_app
    w.bind()
    t = threading.Thread(target=w.serve_forever, daemon=True)
    t.start()
    try:
        with pytest.raises(W.WorkerError, match="not registered"):
            forward(_message(run_id=3), _context(run_id=3, data_dir=str(data)), str(w.socket_path))
        assert W.register(w.socket_path, 3)["registered"] == [3]
        forward(_message(run_id=3), _context(run_id=3, data_dir=str(data)), str(w.socket_path))
    finally:
        w.stop()
        t.join(timeout=5)


def test_mod_forwards_only_with_a_socket_and_fails_cleanly(worker, tmp_path):
    w, data = worker
    local = []

    def call_next(msg, ctx):
        local.append(msg.metadata.message_type)
        return _fake_app(msg, ctx)

    # no worker-socket key: the ClientApp runs in this process, as before
    reply = forward_to_worker(_message(), _context(data_dir=str(data)), call_next)
    assert local == ["train"] and int(reply.content["config"]["pid"]) == os.getpid()
    # with the key: handled by the worker (query messages would stay local)
    ctx = _context(data_dir=str(data), socket_path=str(w.socket_path))
    reply = forward_to_worker(_message(), ctx, call_next)
    assert local == ["train"] and int(reply.content["config"]["x2"]) == 4
    # the worker is gone: a sanitized error reply, nothing local leaves the site
    ctx = _context(data_dir=str(data), socket_path=str(tmp_path / "nothing.sock"))
    reply = forward_to_worker(_message(), ctx, call_next)
    assert reply.has_error() and reply.error.reason.startswith("fedecg/internal: ")
    assert str(tmp_path) not in reply.error.reason


def _as_nobody(fn) -> str:
    """Run ``fn()`` in a forked child that has become uid/gid 65534 (nobody); return what it returned."""
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python start-up, so the venv's interpreter need not be readable by nobody
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            out = fn()
        except BaseException as exc:  # noqa: BLE001
            out = f"{type(exc).__name__}: {exc}"
        os.write(wfd, str(out).encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_connect(tmp_path):
    import shutil
    import tempfile

    reachable = Path(tempfile.mkdtemp(prefix="fedecg-worker-test-", dir="/tmp"))  # pytest's tmp is 0700
    try:
        w = W.SiteWorker(reachable / "sock" / "w.sock", {"data-dir": str(tmp_path)}, preload=False)
        w._app = _fake_app
        w.bind()
        t = threading.Thread(target=w.serve_forever, daemon=True)
        t.start()
        os.chmod(reachable, 0o755)
        os.chmod(w.socket_path.parent, 0o755)  # the other user reaches the folder: the socket's 0600 still stops it
        assert "Permission denied" in _as_nobody(lambda: W.health(w.socket_path, timeout=5))
        os.chmod(w.socket_path, 0o666)  # even with an open socket file, the worker checks the peer's uid
        out = _as_nobody(lambda: json.loads(W.call(w.socket_path, {"op": "health"}, timeout=10)[0]))
        assert "refused: another user" in out
        assert W.health(w.socket_path)["served"]["refused"] == 1
        w.stop()
        t.join(timeout=5)
    finally:
        shutil.rmtree(reachable, ignore_errors=True)


def test_supervisor_restarts_a_killed_worker_and_stops_cleanly(tmp_path):
    data = tmp_path / "site"
    data.mkdir()
    (data / "ptbxl_database.csv").write_text("ecg_id\n")
    sock = tmp_path / "run" / "w.sock"
    log_file = tmp_path / "worker.log"
    sup = subprocess.Popen([sys.executable, "-m", "deploy.worker", "supervise", "--socket", str(sock),
                            "--node-config", f"data-dir='{data}' site-name='s'", "--log", str(log_file)],
                           cwd=Path(__file__).resolve().parents[2])
    try:
        first = _wait_health(sock)
        os.kill(first["pid"], 9)  # a crash
        second = _wait_health(sock, not_pid=first["pid"])
        assert second["pid"] != first["pid"] and second["warm"]
        sup.terminate()
        assert sup.wait(timeout=30) == 0
        assert not sock.exists()
        assert "restarting" in log_file.read_text()
    finally:
        if sup.poll() is None:
            sup.kill()


def test_supervisor_stops_when_its_parent_is_gone_even_as_a_zombie(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "pass"])
    while Path(f"/proc/{parent.pid}/stat").read_text().split(") ")[1][0] != "Z":  # exited, not yet reaped
        time.sleep(0.05)
    log_file = tmp_path / "worker.log"
    try:
        sup = subprocess.run([sys.executable, "-m", "deploy.worker", "supervise", "--socket", str(tmp_path / "w.sock"),
                              "--node-config", f"data-dir='{tmp_path}' site-name='s'", "--log", str(log_file),
                              "--parent-pid", str(parent.pid)], cwd=Path(__file__).resolve().parents[2], timeout=120)
    finally:
        parent.wait()
    assert sup.returncode == 0
    assert f"parent {parent.pid} is gone" in log_file.read_text()


def _wait_health(sock: Path, not_pid: int | None = None, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            h = W.health(sock, timeout=2)
            if h.get("pid") != not_pid:
                return h
        except (W.WorkerError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no worker answered on {sock} within {timeout} s")
