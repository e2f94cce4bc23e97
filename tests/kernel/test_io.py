"""Atomic writes: all-or-nothing, and the permissions a plain open() would give (or the ones asked for)."""

from __future__ import annotations

import os
import stat

import pytest

from fedecg.io import append_jsonl, atomic_open, atomic_write_bytes, atomic_write_json, read_jsonl


def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("{half")
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_permissions_follow_umask_or_explicit_request(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "report.json", {})
        atomic_write_bytes(tmp_path / "key", b"secret", perms=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600


def test_jsonl_reader_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"round": 1})
    append_jsonl(path, {"round": 2})
    with open(path, "a") as fh:
        fh.write('{"round": 3, "si')
    assert [r["round"] for r in read_jsonl(path)] == [1, 2]


def test_killed_run_reads_as_interrupted_and_its_temporaries_are_removed(tmp_path):
    import json
    import subprocess
    import sys

    from server.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    (rd.path / "checkpoints").mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    rd.write_status("running", round=2)
    st = json.loads((rd.path / "status.json").read_text())
    (rd.path / "status.json").write_text(json.dumps({**st, "pid": child.pid}))  # as if the child wrote it
    assert rd.status()["status"] == "running"
    child.kill()
    child.wait()
    assert rd.status()["status"] == "interrupted"
    assert json.loads((rd.path / "status.json").read_text())["status"] == "interrupted"
    for p in (rd.path / ".metrics.jsonl.abc.tmp", rd.path / "checkpoints" / ".round-0003.pt.x.tmp"):
        p.write_text("half")
    keep = rd.path / "metrics.jsonl"
    keep.write_text("{}\n")
    assert len(rd.remove_stale_temporaries()) == 2 and keep.exists()
    assert not list(rd.path.rglob("*.tmp"))
