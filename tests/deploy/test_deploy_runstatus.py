"""deploy.runstatus and the coordinator's run-app.sh: a run that did not complete is an error (exit non-zero),
with what failed, although `flwr run` itself exits 0 once the run is submitted."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.provision import ConsortiumSpec, provision_consortium
from deploy.runstatus import describe_status_file, main, read_status_file, run_dir_from_flwr_options, verdict


def _status(run_dir: Path, **st) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "status.json").write_text(json.dumps(st))
    return run_dir


def test_status_file_states_are_told_apart(tmp_path):
    assert read_status_file(tmp_path / "none") == {"status": "missing"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "status.json").write_text("{not json")
    assert read_status_file(tmp_path / "bad")["status"] == "unreadable"
    ok, line = describe_status_file(_status(tmp_path / "ok", status="completed", round=3))
    assert ok and "completed, 3 rounds" in line
    ok, line = describe_status_file(_status(tmp_path / "f", status="failed", round=1,
                                            error="FedECGError: only 1 site connected"))
    assert not ok and "FAILED after round 1: FedECGError: only 1 site connected" in line
    ok, line = describe_status_file(_status(tmp_path / "r", status="running", round=2))
    assert not ok and "still 'running' at round 2" in line
    ok, line = describe_status_file(tmp_path / "none")
    assert not ok and "no status.json" in line


def test_verdict_needs_every_source_to_say_completed(tmp_path):
    done = _status(tmp_path / "done", status="completed", round=2)
    failed = _status(tmp_path / "failed", status="failed", round=0, error="boom")
    assert verdict("finished:completed", done, 7).ok
    assert not verdict("finished:failed", done, 7).ok
    assert not verdict("finished:completed", failed, 7).ok  # the SuperLink alone is not trusted
    v = verdict("finished:failed", failed, 7)
    assert "run 7: finished:failed (SuperLink)" in v.text() and "boom" in v.text()
    assert verdict("finished:completed", None, 7).ok
    assert not verdict(None, None).ok


def test_run_dir_is_found_in_flwr_run_options(tmp_path):
    inline = ['--run-config', 'scenario="s.yaml" run-dir="/srv/runs/a b" mode="deployment"']
    assert run_dir_from_flwr_options(inline) == Path("/srv/runs/a b")
    toml = tmp_path / "rc.toml"
    toml.write_text('"run-dir" = "/srv/runs/from-file"\n')
    assert run_dir_from_flwr_options(["-c", str(toml)]) == Path("/srv/runs/from-file")
    assert run_dir_from_flwr_options([f"--run-config=run-dir='{tmp_path}'"]) == tmp_path
    assert run_dir_from_flwr_options(["--stream"]) is None
    assert run_dir_from_flwr_options(inline + ["-c", 'run-dir="/last"']) == Path("/last")
    assert run_dir_from_flwr_options(["-c", "run-dir=[not toml"]) is None


def test_main_exit_codes(tmp_path, capsys, monkeypatch):
    failed = _status(tmp_path / "run", status="failed", round=1, error="RuntimeError: x")
    assert main(["check", "--run-dir", str(failed)]) == 1
    assert "RUN DID NOT COMPLETE" in capsys.readouterr().err
    _status(tmp_path / "run", status="completed", round=2)
    assert main(["check", "--", "--run-config", f'run-dir="{failed}"']) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO('noise\n{"success": true, "run-id": 99}\n'))
    assert main(["run-id"]) == 0 and capsys.readouterr().out.strip() == "99"
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO('{"success": false, "error-message": "no"}\n'))
    assert main(["run-id"]) == 1


FAKE_FLWR = """#!/usr/bin/env bash
# stands in for the Flower CLI: `flwr run` submits run 42, `flwr log` prints a line, `flwr ls` says $FAKE_STATUS
case "$1" in
  run) echo '{"success": true, "run-id": 42}' ;;
  log) echo "fake log of run $2" ;;
  ls) printf '{"success": true, "runs": [{"run-id": 42, "status": "%s"}]}\\n' "$FAKE_STATUS" ;;
  *) exit 3 ;;
esac
"""


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory) -> Path:
    cons = provision_consortium(tmp_path_factory.mktemp("c") / "consortium",
                                ConsortiumSpec(sites=("site-a",), superlink_host="127.0.0.1"))
    return cons.coordinator


def _run_app(coordinator: Path, tmp_path: Path, flower_status: str, run_dir: Path) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "flwr").write_text(FAKE_FLWR)
    (fake / "flwr").chmod((fake / "flwr").stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "FAKE_STATUS": flower_status,
           "FEDECG_PYTHON": sys.executable}
    return subprocess.run([str(coordinator / "run-app.sh"), str(tmp_path), "--run-config", f'run-dir="{run_dir}"'],
                          capture_output=True, text=True, env=env, timeout=120)


def test_run_app_script_exits_non_zero_unless_the_run_completed(coordinator, tmp_path):
    done = _status(tmp_path / "done", status="completed", round=2)
    res = _run_app(coordinator, tmp_path, "finished:completed", done)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "fake log of run 42" in res.stdout and "run completed" in res.stdout
    failed = _status(tmp_path / "failed", status="failed", round=1, error="FedECGError: too few sites")
    res = _run_app(coordinator, tmp_path, "finished:failed", failed)
    assert res.returncode == 1
    assert "finished:failed" in res.stderr and "FedECGError: too few sites" in res.stderr
    # the SuperLink says completed but the ServerApp's run directory says otherwise: still a failure
    res = _run_app(coordinator, tmp_path, "finished:completed", _status(tmp_path / "r", status="running", round=1))
    assert res.returncode == 1 and "still 'running'" in res.stderr
