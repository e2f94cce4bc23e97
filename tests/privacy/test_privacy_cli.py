"""`fedecg privacy budget|plan`: contract JSON, table, plot, user errors."""

import json

import pytest
from typer.testing import CliRunner

from fedecg.cli import app

runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path):
    sites = {
        str(s): {
            "n_records": 100,
            "delta": 1e-4,
            "max_grad_norm": 1.0,
            "accountant": "rdp",
            "history": [
                {"round": r, "noise_multiplier": 1.0 + s, "sample_rate": 0.1, "steps": 5, "epsilon": None}
                for r in (1, 2)
            ],
        }
        for s in range(2)
    }
    (tmp_path / "privacy_ledger.json").write_text(
        json.dumps({"delta_policy": None, "client_level": None, "sites": sites})
    )
    return tmp_path


def test_budget_json_has_contract_fields(run_dir):
    res = runner.invoke(app, ["privacy", "budget", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for site in ("0", "1"):
        row = out["sites"][site]
        assert {"epsilon", "delta", "steps", "noise_multiplier", "sample_rate"} <= set(row)
        assert row["steps"] == 10 and row["delta"] == 1e-4
    assert out["sites"]["0"]["epsilon"] > out["sites"]["1"]["epsilon"] > 0
    assert out["release"]["epsilon"] == out["sites"]["0"]["epsilon"]


def test_budget_table_and_plot(run_dir):
    res = runner.invoke(app, ["privacy", "budget", str(run_dir), "--plot"])
    assert res.exit_code == 0, res.output
    assert "released model" in res.output
    png = run_dir / "privacy_budget.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_budget_on_folder_without_ledger_is_a_user_error(tmp_path):
    res = runner.invoke(app, ["privacy", "budget", str(tmp_path)])
    assert res.exit_code != 0
    assert "privacy ledger not found" in str(res.exception)


def test_plan_gives_more_noise_to_smaller_sites():
    res = runner.invoke(
        app,
        [
            "privacy",
            "plan",
            "--target-epsilon",
            "4",
            "--delta",
            "1e-5",
            "--rounds",
            "5",
            "--local-steps",
            "10",
            "--records",
            "100",
            "--records",
            "400",
            "--batch",
            "20",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    sites = json.loads(res.output)["sites"]
    assert sites["0"]["sample_rate"] == pytest.approx(0.2)
    assert sites["0"]["noise_multiplier"] > sites["1"]["noise_multiplier"] > 0


def test_budget_lists_clients_without_dp_as_non_private(run_dir):
    (run_dir / "manifest.json").write_text(json.dumps({"clients": [{"client_id": c} for c in ("0", "1", "2")]}))
    res = runner.invoke(app, ["privacy", "budget", str(run_dir), "--json"])
    out = json.loads(res.output)
    assert out["non_private_sites"] == ["2"] and out["release"]["epsilon"] == "inf"
    table = runner.invoke(app, ["privacy", "budget", str(run_dir)])
    assert "no DP" in table.output
