"""Issue contract on the real subset: a DP run defaults to the patient as the privacy unit, `fedecg privacy budget
--json` states the unit at the top level and per site, `--set dp.unit=record` works, and `fedecg privacy plan
--json` prints exactly the sampling rate and sigma each site's ledger records in the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "tiny-sites.yaml"
ROUNDS, LOCAL_STEPS, BATCH, TARGET = 2, 2, 8, 4.0


def _fedecg(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "fedecg", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


def _dp_run(tmp_path: Path, dataset: Path, *extra: str) -> tuple[Path, dict]:
    run = tmp_path / "run"
    sets = [f"dataset={dataset}", f"rounds={ROUNDS}", f"train.local_steps={LOCAL_STEPS}",
            f"train.batch_size={BATCH}", "dp.enabled=true", f"dp.target_epsilon={TARGET}", "dp.delta=1e-5",
            "output.synthesize=0", *extra]
    res = _fedecg("simulate", str(SCENARIO), "--engine", "inprocess", "--no-finish", "--run-dir", str(run),
                  *[a for s in sets for a in ("--set", s)])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    budget = _fedecg("privacy", "budget", str(run), "--json")
    assert budget.returncode == 0, budget.stderr
    return run, json.loads(budget.stdout)


def _site_units(run: Path) -> dict[str, int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {s: int(m["dp-units"]) for s, m in rows[-1]["sites"].items() if "dp-units" in m}


def test_patient_unit_by_default_and_plan_matches_the_ledger(tmp_path, ptbxl_dir):
    run, budget = _dp_run(tmp_path, ptbxl_dir)
    assert budget["unit"] == "patient"
    units = _site_units(run)
    assert units and set(units) <= set(budget["sites"])
    for site, n in units.items():
        row = budget["sites"][site]
        assert row["unit"] == "patient"
        plan = _fedecg("privacy", "plan", "--target-epsilon", str(TARGET), "--delta", "1e-5", "--rounds", str(ROUNDS),
                       "--local-steps", str(LOCAL_STEPS), "--records", str(n), "--batch", str(BATCH), "--json")
        assert plan.returncode == 0, plan.stderr
        planned = json.loads(plan.stdout)["sites"]["0"]
        assert planned["sample_rate"] == row["sample_rate"]  # identical, not approximately equal
        assert planned["noise_multiplier"] == row["noise_multiplier"]
        assert row["epsilon"] <= TARGET * (1 + 1e-9)


def test_record_unit_is_accepted(tmp_path, ptbxl_dir):
    _, budget = _dp_run(tmp_path, ptbxl_dir, "dp.unit=record", "site_policy.unit=record")
    assert budget["unit"] == "record"
    assert budget["sites"] and all(row["unit"] == "record" for row in budget["sites"].values())


@pytest.mark.parametrize("bad", ["--min-noise-multiplier=-1", "--min-noise-multiplier=nan"])
def test_plan_refuses_a_bad_floor(bad):
    res = _fedecg("privacy", "plan", "--target-epsilon", "4", "--rounds", "1", "--local-steps", "1",
                  "--records", "10", "--batch", "2", bad)
    assert res.returncode != 0 and "--min-noise-multiplier" in (res.stdout + res.stderr)
