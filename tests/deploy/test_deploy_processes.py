"""deploy.processes: processes started by PID are stopped with their descendants; ports; readiness."""

from __future__ import annotations

import sys
import time

import pytest

from deploy.processes import ProcessGroup, descendants, free_port, pid_alive, port_open
from fedecg.errors import FedECGError

# a parent that starts a grandchild and then waits (like flower-supernode → flower-superexec)
PARENT = [sys.executable, "-c",
          "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(120)']);"
          "print('ready', flush=True); time.sleep(120)"]


def test_stop_all_stops_started_processes_and_their_children(tmp_path):
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("parent", PARENT)
        group.wait_for("parent", lambda p: "ready" in p.log_text(), timeout=20)
        time.sleep(0.3)
        parent = group["parent"].pid
        kids = descendants(parent)
        assert len(kids) == 1 and pid_alive(kids[0])
        assert sorted(group.alive_pids()) == sorted([parent, *kids])
    assert not pid_alive(parent)
    assert not any(pid_alive(k) for k in kids)
    assert group.alive_pids() == []


def test_kill_is_immediate_and_restart_appends_to_the_log(tmp_path):
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("p", PARENT)
        group.wait_for("p", lambda p: "ready" in p.log_text(), timeout=20)
        group.kill("p")
        assert not group["p"].alive()
        group.start("p", PARENT)
        group.wait_for("p", lambda p: p.log_text().count("ready") == 2, timeout=20)
        assert group["p"].log_text().count("==== start p") == 2


def test_wait_for_reports_an_early_exit_with_the_reason(tmp_path):
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("bad", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
        with pytest.raises(FedECGError, match=r"exited with code 3.*because: boom"):
            group.wait_for("bad", lambda p: False, timeout=20,
                           failure=lambda p: "because: " + p.log_tail(1))


def test_missing_executable_is_a_clear_error(tmp_path):
    with ProcessGroup(tmp_path / "logs") as group, pytest.raises(FedECGError, match="not found"):
        group.start("x", ["/nonexistent/flower-superlink"])


def test_free_port_is_bindable_and_closed():
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open("127.0.0.1", port)


def test_timestamped_logs_stamp_every_line_also_of_children(tmp_path):
    import re

    child = [sys.executable, "-c",
             "import subprocess,sys; print('parent', flush=True);"
             "subprocess.run([sys.executable,'-c','print(\"child\")'])"]
    with ProcessGroup(tmp_path / "logs", timestamps=True) as group:
        group.start("p", child)
        group.wait_for("p", lambda p: not p.alive(), timeout=30)
        group.stop("p")  # joins the copier: every line is in the log
        text = group["p"].log_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("====")]
    assert [line.split(" ", 1)[1] for line in lines] == ["parent", "child"]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} ", line) for line in lines)
