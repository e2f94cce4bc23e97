"""fedecg's rooms are top-level packages with generic names; a foreign package of the same name is refused in
one line before any command runs (fedecg.rooms)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedecg.errors import FedECGError
from fedecg.rooms import ROOMS, check_rooms

ROOT = Path(__file__).resolve().parents[2]


def test_every_room_of_this_checkout_carries_the_marker():
    check_rooms()  # raises if any room is missing or foreign
    assert set(ROOMS) == {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"fedecg", "tests"}


def test_a_package_without_the_marker_is_named(tmp_path, monkeypatch):
    (tmp_path / "fakeroom").mkdir()
    (tmp_path / "fakeroom" / "__init__.py").write_text('"""another distribution\'s package"""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FedECGError, match=r"fakeroom: .*fakeroom.* is another distribution's package"):
        check_rooms(("client", "fakeroom"))
    with pytest.raises(FedECGError, match="nosuchroom: cannot be imported"):
        check_rooms(("nosuchroom",))


def test_a_plain_folder_named_like_a_room_does_not_shadow_it(tmp_path):
    (tmp_path / "ptbxl" / "records100").mkdir(parents=True)  # a data folder called ptbxl, no __init__.py
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "fedecg", "data", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_the_cli_refuses_a_shadowed_room_in_one_line(tmp_path):
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "__init__.py").write_text('"""someone else\'s client"""\n')
    # `python -m` puts the working directory first on sys.path: a folder named like a room there shadows it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "fedecg", "--help"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "client:" in res.stderr and "another distribution's package" in res.stderr
    assert "Traceback" not in res.stderr
