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
