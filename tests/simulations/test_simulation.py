"""`fedecg simulate` in Flower's Simulation Engine (Ray): real runs, so marked slow (CI runs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITES = ROOT / "tests" / "data" / "tiny-sites.yaml"  # the tiny federation; the product scenario fine-tunes the base


def _fedecg(*args: str, env_extra: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "fedecg", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _eps_by_site(run_dir: Path) -> dict[str, list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    out: dict[str, list[float]] = {}
    for row in rows:
        for site, m in row["sites"].items():
            out.setdefault(site, []).append(m.get("epsilon"))
    return out


def test_simulate_rejects_bad_overrides_with_one_line(tmp_path):
    res = _fedecg("simulate", str(SITES), "--run-dir", str(tmp_path / "r"), "--set", "rounds=zero")
    assert res.returncode == 2
    assert "rounds: expected int, got 'zero'" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_simulate_demo_data_with_dp_in_ray(tmp_path, demo_ptbxl):
    run = tmp_path / "run"
    res = _fedecg("simulate", str(SITES), "--run-dir", str(run), "--set", f"dataset={demo_ptbxl}",
                  "--set", "rounds=2", "--set", "dp=true", "--set", "local_steps=2",
                  "--set", "partition.min_records=1",
                  # tiny test sites spend ~7 per round: these simulated sites accept a larger budget than the default
                  "--set", "site_policy.max_epsilon_run=1000", "--set", "site_policy.max_epsilon_lifetime=1000")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").glob("round-*.pt")) == ["round-0001.pt", "round-0002.pt"]
    eps = _eps_by_site(run)
    assert len(eps) == 4
    assert all(e[1] > e[0] > 0 for e in eps.values()), eps
    # the one deprecation line Flower prints for run_simulation is dropped (docs/ARCHITECTURE.md says why)
    assert "run_simulation` function is deprecated" not in res.stderr + res.stdout


def test_the_simulator_runs_the_deployment_serverapp_with_bound_settings(monkeypatch):
    """simulations.runner hands Flower server.app.app itself; run_simulation gives it an empty run config, so the
    settings the harness prepared are bound for the run (and only one binding at a time)."""
    from fedecg.errors import FedECGError
    from server import app as server_app
    from server.loop import ServerSettings

    seen = []
    monkeypatch.setattr(server_app, "run_federation", lambda grid, settings: seen.append(settings))
    monkeypatch.setattr(server_app, "settings_from_run_config", lambda rc: ("from run config", rc))
    bound = ServerSettings(run_dir="/nowhere", run_name="x", simulation=True)

    class _Ctx:
        run_config = {"run-dir": "/elsewhere"}

    with server_app.bound_settings(bound):
        server_app.main(None, _Ctx())
        with pytest.raises(FedECGError, match="already running"):
            with server_app.bound_settings(bound):
                pass
    server_app.main(None, _Ctx())
    assert seen == [bound, ("from run config", {"run-dir": "/elsewhere"})]


@pytest.mark.slow
def test_simulate_exits_nonzero_when_every_site_fails(tmp_path, demo_ptbxl):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (sites fail by asking for it)")
    res = _fedecg("simulate", str(SITES), "--run-dir", str(tmp_path / "run"), "--set", f"dataset={demo_ptbxl}",
                  "--set", "rounds=1", "--set", "train.device=cuda")
    assert res.returncode != 0
    assert "CUDA is not available" in res.stderr


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("dp", [False, True])
def test_simulate_real_ptbxl_by_site(tmp_path, ptbxl_dir, dp):
    run = tmp_path / "run"
    res = _fedecg("simulate", str(SITES), "--run-dir", str(run), "--set", f"dataset={ptbxl_dir}",
                  "--set", "rounds=2", "--set", f"dp={str(dp).lower()}", "--set", "local_steps=2",
                  "--set", f"site_policy.dp_required={str(dp).lower()}")  # the sites agree to what runs
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert sorted(str(c["site"]) for c in manifest["clients"]) == ["0", "1", "2", "3"]
    assert len(list((run / "checkpoints").glob("round-*.pt"))) == 2
    eps = _eps_by_site(run)
    assert len(eps) == 4
    if dp:
        assert all(e[1] > e[0] > 0 for e in eps.values()), eps
    else:
        assert all(e == [None, None] for e in eps.values())
