"""The import graph: the thin ClientApp stays light, and every room imports cleanly on its own.

In deployment a fresh ``flwr-clientapp`` process imports ``client.app`` for every message (and hands train and
evaluate to the resident site worker), so that import must not pull torch, opacus or pandas. Each check runs in
a fresh interpreter: this test process has long since imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pandas", "opacus")


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_thin_clientapp_import_pulls_no_torch_pandas_or_opacus():
    out = _fresh(f"import client.app, sys, json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    assert json.loads(out) == []


def test_every_room_imports():
    out = _fresh("import ptbxl.dataset, sssd.sampling, evaluation.report, pretraining.train, privacy.pipeline, "
                 "experiments.ablation, experiments.canary; print('ok')")
    assert out == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("room", ["ptbxl", "sssd", "evaluation", "pretraining", "privacy", "experiments"])
def test_each_rooms_modules_import_alone(room):
    """Every module of the room imports in a fresh interpreter of its own (module-level imports expose cycles)."""
    names = sorted(p.stem for p in (ROOT / room).glob("*.py") if p.stem != "__init__")
    code = ("import subprocess, sys\n"
            f"bad = [m for m in {names!r} if subprocess.run([sys.executable, '-c', 'import {room}.' + m]).returncode]\n"
            "print(bad)")
    assert _fresh(code) == "[]"
