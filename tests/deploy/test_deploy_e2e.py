"""End to end with the real fedecg apps: a 3-site consortium on 127.0.0.1 (TLS + node authentication), real
PTB-XL split by recording site, the ServerApp/ClientApp from this project, processes cleaned up.

Slow (minutes: every round starts a ClientApp process per site and message). Marked ``deploy`` and
``real_data``; `.ci/run` runs them with PTBXL_DIR set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deploy.local import LocalDeployment
from deploy.processes import pid_alive
from deploy.provision import CONNECTION_NAME, ConsortiumSpec, provision_consortium
from deploy.sites import split_sites

pytestmark = [pytest.mark.deploy, pytest.mark.real_data]

PROJECT = Path(__file__).resolve().parents[2]
SITES = ("site-0", "site-1", "site-3")  # site-2 (17 records) is left out: a 3-site consortium


def write_scenario(path: Path, dataset: Path, rounds: int, min_nodes: int) -> Path:
    """A tiny scenario: the server partitions ``dataset`` by site with sites < 20 records dropped, which leaves
    exactly the three sites started here; tiny model, 2 DP-SGD steps per round, no synthesis at the end."""
    path.write_text(f"""name: deploy-e2e
dataset: {dataset}
rounds: {rounds}
seed: 0
partition: {{by: site, min_records: 20, tail: drop}}
model: {{preset: tiny}}
train: {{local_steps: 2, batch_size: 8, lr: 0.001, threads: 1}}
dp: {{enabled: true, noise_multiplier: 1.0, max_grad_norm: 1.0}}
strategy: {{name: fedavg, min_train_nodes: {min_nodes}, min_available_nodes: {min_nodes}, min_replies: {min_nodes},
           round_timeout_s: 600}}
output: {{synthesize: 0}}
""")
    return path


@pytest.fixture(scope="module")
def site_folders(ptbxl_dir, tmp_path_factory) -> dict[str, Path]:
    folders = split_sites(ptbxl_dir, tmp_path_factory.mktemp("split") / "sites")
    return {f.client_id: f.path for f in folders if f.client_id in SITES}


@pytest.fixture()
def cons(tmp_path):
    return provision_consortium(tmp_path / "consortium", ConsortiumSpec(sites=SITES, superlink_host="127.0.0.1"))


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_three_sites_two_rounds_over_tls_with_node_auth(ptbxl_dir, site_folders, cons, tmp_path):
    scenario = write_scenario(tmp_path / "scenario.yaml", ptbxl_dir, rounds=2, min_nodes=3)
    run_dir = tmp_path / "run"
    with LocalDeployment(cons, tmp_path / "work", site_folders) as dep:
        dep.start()
        run_id = dep.submit_run(PROJECT, {"scenario": str(scenario), "run-dir": str(run_dir)})
        result = dep.wait_for_run(run_id, timeout=1500)
        superlink_log = dep.procs["superlink"].log_text()
        started = dep.procs.alive_pids()
    assert result.ok, (result.status, result.log_path.read_text()[-2000:])
    rows = _metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2]
    assert all(set(r["sites"]) == set(SITES) for r in rows)
    assert all(r["server"]["accepted"] == 3 for r in rows)
    assert (run_dir / "checkpoints" / "round-0002.pt").is_file()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert "https://127.0.0.1" in superlink_log  # the SuperLink served TLS only
    assert started and not any(pid_alive(p) for p in started)


def test_killed_site_round_completes_and_site_rejoins_with_its_ledger(ptbxl_dir, site_folders, cons, tmp_path):
    scenario = write_scenario(tmp_path / "scenario.yaml", ptbxl_dir, rounds=4, min_nodes=2)
    run_dir = tmp_path / "run"
    victim = "site-3"
    with LocalDeployment(cons, tmp_path / "work", site_folders) as dep:
        dep.start()
        name = f"supernode-{victim}"
        run_id = dep.submit_run(PROJECT, {"scenario": str(scenario), "run-dir": str(run_dir)})
        mark = dep.log_offset(name)
        # round 1 (train + evaluate) finishes; the victim is killed as it starts training in round 2
        dep.wait_for_log(name, "Receiving: train message", after=mark, count=2, timeout=900)
        dep.kill_supernode(victim)
        dep.restart_after_crash(victim)
        result = dep.wait_for_run(run_id, timeout=2400)
        started = dep.procs.alive_pids()
    assert result.ok, (result.status, result.log_path.read_text()[-2000:])
    rows = _metrics(run_dir)
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert victim in rows[0]["sites"]
    # round 2 went on without it; the SuperLink's "node unavailable" reply is attributed to the victim itself
    assert rows[1]["server"]["accepted"] == 2
    assert victim not in rows[1]["sites"] or rows[1]["sites"][victim]["status"] == "rejected"
    assert not any(site.startswith("node-") for r in rows for site in r["sites"])
    assert victim in rows[-1]["sites"]  # back after the restart
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())["sites"][victim]["history"]
    rounds = [h["round"] for h in ledger]
    assert rounds[0] == 1 and rounds[-1] == 4
    # the site's epsilon kept growing across the restart: its node-local ledger file continued
    assert ledger[-1]["epsilon"] > ledger[0]["epsilon"]
    run_name = json.loads((run_dir / "run.json").read_text())["run_name"]
    local = json.loads((site_folders[victim] / ".fedecg" / "privacy-ledger.json").read_text())["runs"][run_name]
    # the site's own lifetime ledger agrees with the server: every round the server heard of was paid, and the
    # server accounts every step the site paid (a spend recorded just before the kill arrives as a gap entry)
    paid = [e["round"] for e in local["entries"]]
    heard = [h["round"] for h in ledger if not h.get("gap")]
    assert [r for r in paid if r in heard] == heard
    assert sum(e["steps"] for e in local["entries"]) == sum(h["steps"] for h in ledger)
    assert not any(pid_alive(p) for p in started)


def test_superlink_killed_run_resumes_from_last_checkpoint(ptbxl_dir, site_folders, cons, tmp_path):
    scenario = write_scenario(tmp_path / "scenario.yaml", ptbxl_dir, rounds=2, min_nodes=3)
    run_dir = tmp_path / "run"
    first_ckpt = run_dir / "checkpoints" / "round-0001.pt"
    with LocalDeployment(cons, tmp_path / "work", site_folders) as dep:
        dep.start()
        run_id = dep.submit_run(PROJECT, {"scenario": str(scenario), "run-dir": str(run_dir)})
        deadline = time.monotonic() + 900
        while not first_ckpt.exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert first_ckpt.exists(), "round 1 never checkpointed"
        dep.kill_superlink()  # coordinator crash: SuperLink, its SuperExec and the running ServerApp die
        saved = first_ckpt.read_bytes()
        assert not (run_dir / "checkpoints" / "round-0002.pt").exists()
        dep.start_superlink()  # same port and database: registrations survive, SuperNodes reconnect
        dep.flwr("stop", str(run_id), CONNECTION_NAME, check=False)  # the orphaned run record
        resumed = dep.submit_run(PROJECT, {"run-dir": str(run_dir)})  # same run dir, no overrides → resume
        result = dep.wait_for_run(resumed, timeout=1500)
        started = dep.procs.alive_pids()
    assert result.ok, (result.status, result.log_path.read_text()[-2000:])
    assert [r["round"] for r in _metrics(run_dir)] == [1, 2]  # nothing lost, nothing repeated
    assert first_ckpt.read_bytes() == saved  # round 1 was not redone
    assert (run_dir / "checkpoints" / "round-0002.pt").is_file()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert not any(pid_alive(p) for p in started)
