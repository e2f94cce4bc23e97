"""deploy.local against real flower-superlink / flower-supernode processes on 127.0.0.1 (TLS + node auth).

These use the smoke app (deploy.smoke), so they test the deployment itself, independent of the fedecg apps:
refusals (unregistered key, wrong CA), a SuperNode killed mid-round (the round completes with the others, the
site rejoins after a restart), and that nothing the launcher started outlives it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deploy.local import LocalDeployment, explain_supernode_failure, run_local, write_run_config
from deploy.pki import make_ca
from deploy.processes import pid_alive
from deploy.provision import ConsortiumSpec, provision_consortium
from deploy.smoke import write_smoke_app
from fedecg.errors import FedECGError

SITES = ("site-a", "site-b", "site-c")


@pytest.fixture(scope="module")
def cons(tmp_path_factory):
    return provision_consortium(tmp_path_factory.mktemp("c") / "consortium",
                                ConsortiumSpec(sites=SITES, superlink_host="127.0.0.1"))


@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    out = {}
    for k, site in enumerate(SITES):
        (root / site).mkdir()
        rows = "".join(f"{100 * k + i}\n" for i in range(k + 2))  # site-a 2 rows, site-b 3, site-c 4
        (root / site / "ptbxl_database.csv").write_text("ecg_id\n" + rows)
        out[site] = root / site
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _by_site(row: dict) -> dict[str, dict]:
    return {Path(r["data_dir"]).name: r for r in row["replies"]}


@pytest.mark.deploy
def test_unregistered_key_and_wrong_ca_are_refused_with_a_clear_message(cons, site_data, tmp_path):
    wrong_ca = tmp_path / "other-ca.crt"
    wrong_ca.write_bytes(make_ca("not the consortium").cert_pem)
    with LocalDeployment(cons, tmp_path / "work", site_data) as dep:
        dep.start_superlink()
        dep.register_sites(["site-a"])
        with pytest.raises(FedECGError, match="public key is not registered"):
            dep.start_supernode("site-b")
        with pytest.raises(FedECGError, match="TLS refused"):
            dep.start_supernode("site-a", root_certificates=wrong_ca, max_retries=1)
        dep.start_supernode("site-a")  # the right CA and a registered key are accepted
        assert dep.procs["supernode-site-a"].alive()
        superlink_log = dep.procs["superlink"].log_text()
        started = dep.procs.alive_pids()
    assert "No SuperNode found with the given public key" in superlink_log
    assert started and not any(pid_alive(p) for p in started)


@pytest.mark.deploy
def test_supernode_killed_mid_round_round_completes_and_site_rejoins(cons, site_data, tmp_path):
    app = write_smoke_app(tmp_path / "app")
    out = tmp_path / "smoke.jsonl"
    with LocalDeployment(cons, tmp_path / "work", site_data) as dep:
        dep.start()
        mark = dep.log_offset("supernode-site-c")
        run_id = dep.submit_run(app, {"rounds": 5, "min-nodes": 2, "sleep": 3.0, "round-timeout": 150.0,
                                      "out": str(out)})
        dep.wait_for_log("supernode-site-c", "Start `flwr-clientapp` process", after=mark, timeout=120)
        dep.kill_supernode("site-c")  # mid-round: its ClientApp is sleeping inside round 1
        # a crashed node's key is accepted again once the SuperLink marks it offline (~60 s in Flower 1.41)
        dep.restart_after_crash("site-c")
        result = dep.wait_for_run(run_id, timeout=400)
        started = dep.procs.alive_pids()
    rows = _rows(out)
    assert result.ok, result
    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5]
    first, last = _by_site(rows[0]), _by_site(rows[-1])
    assert set(first) == {"site-a", "site-b"}  # round 1 completed without the killed site
    assert set(last) == set(SITES)  # the restarted site is back for the last round
    assert {s: r["n_records"] for s, r in last.items()} == {"site-a": 2, "site-b": 3, "site-c": 4}
    assert last["site-a"]["calls"] == 5
    # Flower 1.41 keeps a SuperNode's context.state in memory only: a restarted SuperNode starts empty,
    # so the site's counter restarted (the fedecg client keeps its privacy ledger in a node-local file too).
    assert last["site-c"]["calls"] < len(rows) - 1
    assert not any(pid_alive(p) for p in started)


@pytest.mark.deploy
def test_a_failed_run_is_reported_as_an_error_not_success(cons, site_data, tmp_path):
    # `flwr run` itself exits 0 for a run that fails later; run_local must not.
    app = write_smoke_app(tmp_path / "app")
    with pytest.raises(FedECGError, match="finished:failed"):
        run_local(cons, tmp_path / "work", {"site-a": site_data["site-a"]}, app,
                  {"rounds": 1, "min-nodes": 5, "wait-timeout": 2.0, "out": str(tmp_path / "smoke.jsonl")},
                  timeout=180)
    result = json.loads((tmp_path / "work" / "result.json").read_text())
    assert result["status"] == "finished:failed"


def test_refusal_reasons_are_told_apart_with_the_superlink_log():
    node = "ERROR: Exit Code: 305\n[code: 2004] Failed to activate SuperNode.\n"
    unknown = "exception: No SuperNode found with the given public key"
    assert "not registered" in explain_supernode_failure(node, unknown)
    assert "still marked online" in explain_supernode_failure(
        node, "exception: SuperNode with node ID 12 could not be activated.")
    assert "TLS refused" in explain_supernode_failure("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert explain_supernode_failure("all good") == ""


def test_run_config_file_is_valid_toml(tmp_path):
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    path = write_run_config(tmp_path / "rc.toml", {"run-dir": "/tmp/a b/'q'", "rounds": 2, "dp": True, "lr": 0.5})
    assert tomllib.loads(path.read_text()) == {"run-dir": "/tmp/a b/'q'", "rounds": 2, "dp": True, "lr": 0.5}


def test_site_folder_without_ptbxl_table_is_refused(cons, tmp_path):
    with pytest.raises(FedECGError, match="no ptbxl_database.csv"):
        LocalDeployment(cons, tmp_path / "w", {"site-a": tmp_path})
    with pytest.raises(FedECGError, match="not in the consortium"):
        LocalDeployment(cons, tmp_path / "w", {"elsewhere": tmp_path})
