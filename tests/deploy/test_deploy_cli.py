"""`fedecg deploy ...` commands: help, provisioning, split-sites, user errors as FedECGError."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.cli.deploy import fedecg_run_config
from fedecg.errors import FedECGError

runner = CliRunner()


@pytest.mark.parametrize("cmd", [["deploy"], ["deploy", "provision"], ["deploy", "split-sites"], ["deploy", "local"]])
def test_every_command_has_help(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0
    assert "Usage" in res.output


def test_provision_writes_bundles(tmp_path):
    out = tmp_path / "c"
    res = runner.invoke(app, ["deploy", "provision", str(out), "--sites", "a,b", "--superlink-host",
                              "fl.example.org", "--san", "10.0.0.9", "--port", "9443"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "consortium.json").read_text())
    assert manifest["superlink_address"] == "fl.example.org:9443"
    assert sorted(p.name for p in (out / "sites").iterdir()) == ["a", "b"]


def test_provision_bad_site_name_is_a_user_error(tmp_path):
    res = runner.invoke(app, ["deploy", "provision", str(tmp_path / "c"), "--sites", "Bad Site",
                              "--superlink-host", "x"])
    assert isinstance(res.exception, FedECGError)


def test_split_sites_command(demo_ptbxl, tmp_path):
    res = runner.invoke(app, ["deploy", "split-sites", str(demo_ptbxl), str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == [f"site-{i}" for i in range(4)]


def test_local_without_site_folders_is_a_user_error(tmp_path):
    res = runner.invoke(app, ["deploy", "local", str(tmp_path / "w"), "--smoke"])
    assert isinstance(res.exception, FedECGError)
    assert "no site folders" in str(res.exception)


def test_run_config_keeps_only_declared_keys(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.flwr.app.config]\nscenario = "a.yaml"\nrun-dir = ""\noverrides = ""\n')
    cfg = fedecg_run_config(tmp_path, "s.yaml", tmp_path / "run", ["rounds=2", "model=tiny"])
    assert cfg == {"run-dir": str((tmp_path / "run").resolve()), "scenario": "s.yaml",
                   "overrides": "rounds=2;model=tiny"}
    (tmp_path / "pyproject.toml").write_text('[tool.flwr.app.config]\nscenario = "a.yaml"\n')
    with pytest.raises(FedECGError, match="lacks"):
        fedecg_run_config(tmp_path, "", tmp_path / "run", ["rounds=2"])
