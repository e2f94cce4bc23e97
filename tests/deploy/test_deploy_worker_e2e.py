"""The resident site worker in a real deployment: 3 sites on 127.0.0.1 (TLS + node auth), real PTB-XL split by
site, the fedecg apps as they are (the ClientApp forwards to the site's worker). A worker SIGKILLed mid-round:
that site's reply fails cleanly (a sanitized site error), the round completes with the others, the supervisor
restarts the worker and the site rejoins with its ledger.

Slow (minutes). Marked ``deploy`` and ``real_data``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deploy.local import LocalDeployment
from deploy.processes import pid_alive
from deploy.provision import ConsortiumSpec, provision_consortium
from deploy.sites import split_sites
from tests.deploy.test_deploy_e2e import SITES, write_scenario

pytestmark = [pytest.mark.deploy, pytest.mark.real_data]

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site_folders(ptbxl_dir, tmp_path_factory) -> dict[str, Path]:
    folders = split_sites(ptbxl_dir, tmp_path_factory.mktemp("split") / "sites")
    return {f.client_id: f.path for f in folders if f.client_id in SITES}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_worker_killed_mid_round_site_fails_cleanly_and_rejoins(ptbxl_dir, site_folders, tmp_path):
    cons = provision_consortium(tmp_path / "consortium", ConsortiumSpec(sites=SITES, superlink_host="127.0.0.1"))
    scenario = write_scenario(tmp_path / "scenario.yaml", ptbxl_dir, rounds=3, min_nodes=2)
    run_dir = tmp_path / "run"
    victim = "site-3"
    # in-memory SuperLink state: no restart here, and no SQLite write lock on a saturated machine
    with LocalDeployment(cons, tmp_path / "work", site_folders, workers=True, database="memory") as dep:
        dep.start()
        first_pid = dep.worker_health(victim)["pid"]
        run_id = dep.submit_run(PROJECT, {"scenario": str(scenario), "run-dir": str(run_dir)})
        deadline = time.monotonic() + 900
        while dep.worker_health(victim)["served"]["train"] < 1:  # round 1 trained through the worker
            assert time.monotonic() < deadline, "the worker never served round 1"
            time.sleep(1)
        while not (h := dep.worker_health(victim))["busy"] or h["served"]["train"] < 1 or \
                h["served"]["evaluate"] < 1:  # busy again after round 1's evaluation: round 2 training
            assert time.monotonic() < deadline, "the worker never started round 2"
            time.sleep(0.1)
        killed = dep.kill_worker(victim)
        result = dep.wait_for_run(run_id, timeout=1500)
        after = dep.worker_health(victim)
        worker_log = (tmp_path / "work" / "logs" / f"worker-{victim}.log").read_text()
        supernode_log = dep.procs[f"supernode-{victim}"].log_text()
        started = dep.procs.alive_pids()
    assert result.ok, (result.status, result.log_path.read_text()[-2000:])
    assert killed == first_pid and after["pid"] != first_pid  # restarted by its supervisor
    assert "restarting" in worker_log
    assert "site worker unavailable for train" in supernode_log  # the thin ClientApp failed cleanly
    rows = _metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[0]["server"]["accepted"] == 3
    assert rows[1]["server"]["accepted"] == 2
    assert victim not in rows[1]["sites"] or rows[1]["sites"][victim]["status"] == "rejected"
    assert rows[2]["sites"][victim]["status"] == "accepted"  # back in round 3
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())["sites"][victim]["history"]
    assert ledger[-1]["round"] == 3 and ledger[-1]["epsilon"] > ledger[0]["epsilon"]
    assert not any(pid_alive(p) for p in started)
