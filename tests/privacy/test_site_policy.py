"""A hospital's privacy is its own (privacy.policy, privacy.ledger.LedgerStore): the site's policy comes from its
node config, never from the server; forbidden requests are refused with the reason; the site's lifetime ledger
caps its ε across runs; a spend is recorded before training, so a crash cannot erase it. Tiny model, in process."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from client.app import app as client_app
from fedecg import protocol as P
from fedecg.config import ScenarioConfig
from fedecg.errors import FedECGError
from privacy.accounting import ledger_epsilon, lifetime_epsilon
from privacy.ledger import SITE_LEDGER_FILE, LedgerStore, LifetimeLedger
from privacy.policy import SitePolicy, decide, simulated_node_config
from ptbxl.constants import TRAIN_FOLDS
from ptbxl.partition import Manifest
from server.loop import ServerSettings, run_federation
from server.prepare import prepare_run
from simulations.inprocess import InProcessGrid
from simulations.runner import simulated_node_configs

BASE = {
    "name": "pol",
    "rounds": 1,
    "seed": 5,
    "partition": {"by": "site", "min_records": 1, "tail": "pool"},
    "model": {"preset": "tiny"},
    "train": {"local_steps": 2, "batch_size": 4, "lr": 0.001, "eval_batches": 1},
    "dp": {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0},
    "strategy": {"name": "fedavg", "min_train_nodes": 1, "min_available_nodes": 1},
    "output": {"synthesize": 0},
    "site_policy": {"max_epsilon_run": 100.0, "max_epsilon_lifetime": 1000.0},  # tiny sites: q up to 1
}
# a hospital's own, strict policy, as its SuperNode's --node-config would give it
STRICT = {"dp-required": True, "min-noise-multiplier": 0.8, "max-epsilon-run": 2.0, "max-epsilon-lifetime": 8.0,
          "delta": 1e-5, "privacy-unit": "patient", "max-local-steps": 50}


def _scenario(tmp_path, dataset, name, changes):
    scen = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        node = scen
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    scen["dataset"] = str(dataset)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scen))
    return path


def _prepare(tmp_path, dataset, name="run", **changes):
    rd = prepare_run(_scenario(tmp_path, dataset, name, changes), [], tmp_path / name, partition=True)
    return rd, len(Manifest.load(rd.manifest_path).clients)


def _run(rd, n, grid_cls=InProcessGrid, **grid_kw):
    if "node_config" not in grid_kw:
        configs = simulated_node_configs(rd)
        grid_kw["node_config"] = lambda i: configs[i]
    run_federation(grid_cls(client_app, n, **grid_kw),
                   ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True))


def _site_ledger(rd, site) -> LifetimeLedger:
    return LifetimeLedger.from_dict(json.loads((rd.path / "node-state" / site / SITE_LEDGER_FILE).read_text()))


# ---- the policy itself -----------------------------------------------------------------------------------


def test_policy_defaults_and_node_config_keys(tmp_path):
    d = SitePolicy()
    assert (d.dp_required, d.unit, d.delta, d.min_noise_multiplier) == (True, "patient", 1e-5, 0.5)
    assert (d.max_epsilon_run, d.max_epsilon_lifetime, d.max_local_steps, d.min_batch, d.max_batch) == \
        (10.0, 20.0, 200, 1, 1024)
    # inline keys as Flower parses --node-config (TOML-typed) or as strings
    p = SitePolicy.from_node_config({"data-dir": "/x", "dp-required": False, "min-noise-multiplier": "0.8",
                                     "max-epsilon-run": 4, "privacy-unit": "record", "delta": 1e-6})
    assert (p.dp_required, p.min_noise_multiplier, p.max_epsilon_run, p.unit, p.delta) == \
        (False, 0.8, 4.0, "record", 1e-6)
    # a policy file, inline keys win over it
    f = tmp_path / "policy.yaml"
    f.write_text("max_epsilon_lifetime: 8\nmax-local-steps: 50\nunit: record\nmax_batch: 128\n")
    p = SitePolicy.from_node_config({"privacy-policy": str(f), "max-local-steps": 20})
    assert (p.max_epsilon_lifetime, p.max_local_steps, p.unit, p.max_batch) == (8.0, 20, "record", 128)
    assert str(f) in p.source
    assert SitePolicy.from_mapping(p.to_node_config()) == p  # round trip through node-config keys
    with pytest.raises(FedECGError, match="unknown key 'max_epsilon_runs'"):
        SitePolicy.from_mapping({"max_epsilon_runs": 3})
    with pytest.raises(FedECGError, match="privacy-unit must be patient or record"):
        SitePolicy.from_node_config({"privacy-unit": "visit"})
    with pytest.raises(FedECGError, match="expected bool"):
        SitePolicy.from_node_config({"dp-required": "maybe"})
    with pytest.raises(FedECGError, match="not found"):
        SitePolicy.from_node_config({"privacy-policy": str(tmp_path / "missing.yaml")})


def test_fedecg_privacy_policy_shows_what_a_node_config_enforces():
    from fedecg.cli import app

    res = CliRunner().invoke(app, ["privacy", "policy", "--node-config",
                                   "data-dir='/d' dp-required=true max-epsilon-run=4 privacy-unit='patient' "
                                   "delta=1e-5", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["max_epsilon_run"] == 4.0 and out["dp_required"] is True and out["min_noise_multiplier"] == 0.5
    res = CliRunner().invoke(app, ["privacy", "policy", "--node-config", "max-epsilon-run=-1"])
    assert res.exit_code != 0 and "max-epsilon-run must be > 0" in str(res.exception)


def test_scenario_site_policy_builds_the_simulated_node_config_only():
    cfg = ScenarioConfig.from_dict({"site_policy": {"max_epsilon_run": 4, "sites": {"b": {"dp_required": False}}}})
    a = simulated_node_config(cfg.site_policy, "a", 0, 2)
    b = simulated_node_config(cfg.site_policy, "b", 1, 2)
    assert a["partition-id"] == 0 and a["max-epsilon-run"] == 4.0 and a["dp-required"] is True
    assert b["dp-required"] is False and b["max-epsilon-run"] == 4.0
    with pytest.raises(FedECGError, match="unknown key"):
        ScenarioConfig.from_dict({"site_policy": {"dp_requird": False}}).validate()


# ---- the decision, without training ----------------------------------------------------------------------


def _cfg(**changes) -> ScenarioConfig:
    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        section, name = key.split(".")
        data.setdefault(section, {})[name] = value
    return ScenarioConfig.from_dict(data).validate()


@pytest.mark.parametrize("changes, reason", [
    ({"dp.enabled": False}, "requires DP-SGD (dp-required=true); the server asked for dp.enabled=false"),
    ({"dp.noise_multiplier": 0.3}, "noise multiplier 0.3, below the site's min-noise-multiplier 0.8"),
    ({"dp.target_epsilon": 1e9}, "above the site's max-epsilon-run 2"),
    ({"dp.budget_epsilon": 1e9, "train.local_steps": 40}, "> the site's max-epsilon-run 2"),
    ({"dp.delta": 1e-3}, "delta=1.00e-03, above the site's delta 1.00e-05"),
    ({"dp.unit": "record"}, "privacy unit is patient"),
    ({"train.local_steps": 51}, "above the site's max-local-steps 50"),
    ({"train.batch_size": 2000}, "outside the site's allowed range 1-1024"),
])
def test_site_refuses_what_its_policy_forbids(changes, reason):
    policy = SitePolicy.from_node_config(STRICT)
    decision = decide(policy, _cfg(**changes), 20, LifetimeLedger(site="a"), "run-1")  # 20 patients: q = 0.2
    assert decision.refused and reason in decision.refusal


def test_site_plans_sigma_itself_and_never_below_its_minimum():
    from privacy.accounting import compute_epsilon, poisson_rate

    cfg = _cfg(**{"dp.target_epsilon": 1.5, "dp.noise_multiplier": 0.01})  # the server's sigma is ignored
    q = poisson_rate(200, 4)
    d = decide(SitePolicy.from_node_config(STRICT), cfg, 200, LifetimeLedger(site="a"), "run-1")
    assert not d.refused and d.noise_multiplier >= 0.8 and d.delta == 1e-5 and d.sample_rate == q
    assert compute_epsilon([(d.noise_multiplier, q, cfg.rounds * 2)], 1e-5) <= 1.5
    strict = SitePolicy.from_node_config({**STRICT, "min-noise-multiplier": 5.0})
    assert decide(strict, cfg, 200, LifetimeLedger(site="a"), "run-1").noise_multiplier == 5.0


# ---- federations: the server cannot talk a site out of its policy ----------------------------------------


class PermissiveServerGrid(InProcessGrid):
    """A server that also writes a permissive site policy into the run config it sends."""

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            rec = m.content.config_records[P.CONFIG]
            run = json.loads(str(rec[P.RUN_CONFIG_JSON]))
            run["site_policy"] = {"dp_required": False, "min_noise_multiplier": 0.0, "max_epsilon_run": 1e12,
                                  "max_epsilon_lifetime": 1e12, "delta": 0.5}
            rec[P.RUN_CONFIG_JSON] = json.dumps(run)
        return super().send_and_receive(messages, timeout=timeout)


@pytest.mark.parametrize("changes, reason", [
    ({"dp.enabled": False}, "requires DP-SGD"),
    ({"dp.noise_multiplier": 0.3}, "below the site's min-noise-multiplier 0.8"),
    ({"dp.noise_multiplier": 0.8, "dp.budget_epsilon": 1e9}, "> the site's max-epsilon-run 2"),
    ({"dp.delta": 1e-3}, "above the site's delta 1.00e-05"),
], ids=["dp-off", "sigma-0.3", "huge-budget", "larger-delta"])
def test_server_request_against_the_site_policy_is_refused(tmp_path, demo_ptbxl, changes, reason):
    rd, n = _prepare(tmp_path, demo_ptbxl, **changes, **{"site_policy.dp_required": False})
    sites = [c.client_id for c in Manifest.load(rd.manifest_path).clients]
    # the sites' own node config: the strict policy (the scenario's permissive site_policy is not theirs)
    _run(rd, n, PermissiveServerGrid, node_config=lambda i: {"partition-id": i, "num-partitions": n, **STRICT})

    row = rd.metrics()[0]
    assert row["server"]["accepted"] == 0
    for site in sites:
        m = row["sites"][site]
        assert m["status"] == "rejected" and m["reason"].startswith("refused: ") and reason in m["reason"], m
        ledger = _site_ledger(rd, site)
        assert not any(r.history for r in ledger.runs.values())  # nothing spent
        assert ledger.refusals[-1]["round"] == 1 and reason in ledger.refusals[-1]["reason"]  # logged locally
    assert json.loads(rd.ledger_path.read_text())["sites"] == {}
    assert rd.status()["rounds_without_update"] == [1]


def test_three_runs_exhaust_the_site_lifetime_budget(tmp_path, demo_ptbxl):
    from deploy.sites import split_sites
    from privacy.accounting import compute_epsilon, poisson_rate
    from ptbxl.layout import read_database

    folder = split_sites(demo_ptbxl, tmp_path / "sites")[0]  # one hospital's own PTB-XL folder
    meta = read_database(folder.path)
    n_patients = int(meta[meta["strat_fold"].isin(TRAIN_FOLDS)]["patient_id"].nunique())
    q = poisson_rate(n_patients, 4)
    eps = [compute_epsilon([(1.0, q, 2 * k)], 1e-5) for k in (1, 2, 3)]  # lifetime after 1, 2, 3 runs
    cap = (eps[1] + eps[2]) / 2
    node = {"data-dir": str(folder.path), "site-name": folder.client_id, "state-dir": str(tmp_path / "hospital"),
            **STRICT, "max-epsilon-run": 100.0, "max-epsilon-lifetime": cap}
    names = []
    for k in range(3):  # three runs, each under a new run name, against the same site
        rd, n = _prepare(tmp_path, folder.path, f"run{k}")
        assert n == 1
        _run(rd, n, node_config=lambda i: node)
        names.append(rd.run_name())
        status = [m["status"] for m in rd.metrics()[0]["sites"].values()]
        assert status == (["rejected"] if k == 2 else ["accepted"]), (k, rd.metrics()[0])

    reason = rd.metrics()[0]["sites"][folder.client_id]["reason"]
    assert "lifetime privacy budget spent" in reason and f"max-epsilon-lifetime {cap:g}" in reason
    store = LedgerStore(tmp_path / "hospital", folder.client_id)
    ledger = store.load()
    assert list(ledger.runs) == names[:2]  # one ledger for the site, a section per run
    assert ledger.refusals[-1]["run"] == names[2]
    assert lifetime_epsilon(ledger, 1e-5) == pytest.approx(eps[1]) and lifetime_epsilon(ledger, 1e-5) <= cap


def test_crash_after_recording_leaves_the_spend_recorded(tmp_path, demo_ptbxl, monkeypatch):
    import client.training as training
    from privacy.accounting import run_budget
    from privacy.ledger import load_ledger

    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=2)
    victim = Manifest.load(rd.manifest_path).clients[0].client_id
    real = training.train_local
    seen = {}

    def crashing(global_state, arrays, cfg, *, server_round, site, **kw):
        if site == victim and server_round == 1:
            # the spend is on disk before a single step is taken
            entry = _site_ledger(rd, victim).run(rd.run_name()).history[-1]
            seen.update(entry.to_site_dict())
            raise RuntimeError("killed while training")
        return real(global_state, arrays, cfg, server_round=server_round, site=site, **kw)

    monkeypatch.setattr(training, "train_local", crashing)
    _run(rd, n)

    assert seen["round"] == 1 and seen["state"] == "recorded" and seen["steps"] == 2
    first, second = rd.metrics()
    assert first["server"]["rejected"] == 1  # the site's error reply (the server may not know its name yet)
    assert first["sites"].get(victim, {}).get("status") != "accepted"
    run = _site_ledger(rd, victim).run(rd.run_name())
    assert [(e.round, e.state) for e in run.history] == [(1, "recorded"), (2, "trained")]
    assert second["sites"][victim]["epsilon"] == pytest.approx(ledger_epsilon(run), rel=1e-12)  # both rounds paid
    # the server never heard of round 1's spend: round 2's report fills the gap, ε is never the lower one
    history = json.loads(rd.ledger_path.read_text())["sites"][victim]["history"]
    assert [(h["round"], h.get("gap", False), h["steps"]) for h in history] == [(2, True, 2), (2, False, 2)]
    budget = run_budget(load_ledger(rd.path)).sites[victim]
    assert budget.reconciliation.status == "upper-bound" and budget.reconciliation.gap_steps == 2
    assert budget.epsilon == pytest.approx(ledger_epsilon(run), rel=1e-9)


# ---- a hospital's bundle passes its policy in --node-config ----------------------------------------------


def test_site_bundle_start_script_passes_the_policy_in_node_config(tmp_path, demo_ptbxl):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from flwr.common.config import parse_config_args

    from deploy.provision import ConsortiumSpec, provision_consortium

    cons = provision_consortium(tmp_path / "cons", ConsortiumSpec(sites=("site-a",), superlink_host="link.example"))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "flower-supernode").write_text("#!/usr/bin/env bash\nprintf '%s\\n' \"$@\"\n")
    (fake / "flower-supernode").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MAX_EPSILON_LIFETIME": "8", "MIN_NOISE_MULTIPLIER": "0.8"}  # e.g. set by the systemd unit
    script = str(cons.sites["site-a"].start_script)
    res = subprocess.run([script, str(demo_ptbxl)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    args = res.stdout.splitlines()
    node_config = parse_config_args([args[args.index("--node-config") + 1]])
    assert node_config["data-dir"] == str(demo_ptbxl.resolve()) and node_config["site-name"] == "site-a"
    policy = SitePolicy.from_node_config(node_config)
    assert (policy.max_epsilon_lifetime, policy.min_noise_multiplier, policy.dp_required, policy.unit,
            policy.delta, policy.max_epsilon_run) == (8.0, 0.8, True, "patient", 1e-5, 10.0)
    bad = subprocess.run([script, str(demo_ptbxl)], capture_output=True, text=True, timeout=300,
                         env={**env, "PRIVACY_UNIT": "visit"})
    assert bad.returncode == 2 and "invalid privacy policy" in bad.stderr and "--node-config" not in bad.stdout


# ---- privacy.spend: the ClientApp's privacy step, on its own ------------------------------------------------


def test_spend_is_on_disk_before_training_and_a_vanished_spend_stops_the_reply(tmp_path):
    from privacy.ledger import LedgerStore
    from privacy.spend import confirm_after_training, pay_before_training, refusal_metrics, spend_metrics

    cfg = _cfg(**{"dp.noise_multiplier": 1.0})
    policy = SitePolicy.from_node_config(STRICT)
    store = LedgerStore(tmp_path, "a")
    paid = pay_before_training(store, None, policy, cfg, 200, "run-1", 1, "a")
    assert paid.decision.private and paid.recorded is not None
    on_disk = LedgerStore(tmp_path, "a")  # a fresh reader sees the recorded spend before any training
    with on_disk.open() as ledger:
        assert [(e.round, e.state) for e in ledger.run("run-1").history] == [(1, "recorded")]
    ledger, entry = confirm_after_training(store, None, "run-1", paid, None, "a", 1)
    assert entry.state == "trained"
    m = spend_metrics(ledger, "run-1", entry)
    assert m["epsilon"] == pytest.approx(ledger_epsilon(ledger.run("run-1")), rel=1e-12) and m["epsilon"] > 0
    assert m["dp-noise-multiplier"] == paid.decision.noise_multiplier and m["dp-patient-level"] == 1.0

    paid2 = pay_before_training(store, None, policy, cfg, 200, "run-1", 2, "a")
    store.path.unlink()  # the ledger file disappears while the round trains
    with pytest.raises(FedECGError, match="vanished"):
        confirm_after_training(store, None, "run-1", paid2, None, "a", 2)

    refused = pay_before_training(LedgerStore(tmp_path / "b", "b"), None, policy,
                                  _cfg(**{"dp.noise_multiplier": 0.3}), 200, "run-1", 1, "b")
    assert refused.decision.refused and refused.recorded is None
    r = refusal_metrics(refused.ledger, "run-1", policy, True)
    assert r["num-examples"] == 0.0 and r["refused"] == 1.0 and r["epsilon"] == 0.0
    with pytest.raises(FedECGError, match="recorded no spend"):
        confirm_after_training(store, None, "run-1", refused, None, "b", 1)
