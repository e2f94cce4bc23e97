"""The server round loop + client app end to end, in process (simulations.inprocess: no Ray, no network).

Covers: per-round checkpoints and metrics, cumulative per-site epsilon, exact resume after an interruption,
rejection of tampered replies, the egress allow-list on every outgoing message, and budget refusal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from flwr.app import Array, ArrayRecord, Message

from client.app import app as client_app
from fedecg import protocol as P
from fedecg.wire import LAYOUT, from_record, is_packed, layout_of
from privacy.accounting import compute_epsilon, poisson_rate
from ptbxl.partition import Manifest
from server.loop import ServerSettings, run_federation
from server.prepare import prepare_run
from simulations.inprocess import InProcessGrid
from simulations.runner import simulated_node_configs

BASE = {
    "name": "t",
    "rounds": 2,
    "seed": 7,
    "partition": {"by": "site", "min_records": 1, "tail": "pool"},
    "model": {"preset": "tiny"},
    "train": {"local_steps": 2, "batch_size": 4, "lr": 0.001, "eval_batches": 1},
    "dp": {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0},
    "strategy": {"name": "fedavg", "min_train_nodes": 1, "min_available_nodes": 1},
    "output": {"synthesize": 0},
    # the simulated sites' own policy: the tiny demo sites (a few patients, q up to 1) spend epsilon ~7 per round
    # at sigma 1, past the default caps (10 per run, 20 lifetime)
    "site_policy": {"max_epsilon_run": 100.0, "max_epsilon_lifetime": 1000.0},
}


def _prepare(tmp_path, dataset, name="run", **changes):
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
    rd = prepare_run(path, [], tmp_path / name, partition=True)
    n = len(Manifest.load(rd.manifest_path).clients)
    return rd, n


def _run(rd, n, **grid_kw):
    configs = simulated_node_configs(rd)  # each simulated node's own config (its site policy), as the runner does
    grid_kw.setdefault("node_config", lambda i: configs[i])
    settings = ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True)
    return run_federation(InProcessGrid(client_app, n, **grid_kw), settings)


def test_dp_run_writes_checkpoint_per_round_and_epsilon_accumulates(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl)

    _run(rd, n)

    rows = rd.metrics()
    assert [r["round"] for r in rows] == [1, 2]
    assert rd.completed_rounds() == [1, 2]
    assert rd.status()["status"] == "completed"
    for m in rows[0]["sites"].values():  # the loss parts are reported, not zeros
        assert m["eps-loss"] > 0 and m["mel-loss"] > 0
    validated = [m for m in rows[0]["sites"].values() if "val-loss" in m]  # sites with fold-9 records
    assert validated and all(m["val-eps-loss"] > 0 for m in validated)
    for site in rows[0]["sites"]:
        eps = [r["sites"][site]["epsilon"] for r in rows]
        assert all(b > a > 0 for a, b in zip(eps, eps[1:])), (site, eps)
    ledger = json.loads(rd.ledger_path.read_text())
    assert set(ledger["sites"]) == set(rows[0]["sites"])
    first = next(iter(ledger["sites"].values()))
    assert [h["round"] for h in first["history"]] == [1, 2]
    assert all(h["steps"] == 2 for h in first["history"])


def _final_weights(rd):
    from sssd.checkpoint import load_checkpoint

    return {k: v.numpy() for k, v in load_checkpoint(rd.checkpoints / "latest.pt")["state_dict"].items()}


class _Crash(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, demo_ptbxl):
    # FedAdam + DP-SGD: server-side moments and every random draw must be restored exactly
    rd_a, n = _prepare(tmp_path, demo_ptbxl, "a", **{"strategy.name": "fedadam"})
    shutil.copytree(rd_a.path, tmp_path / "b")
    from server.prepare import PreparedRun

    rd_b = PreparedRun(tmp_path / "b")
    _run(rd_a, n)

    calls = {"n": 0}

    def crash_in_round_2(nid, reply):
        calls["n"] += 1
        if calls["n"] > 2 * n:  # round 1 = n train + n evaluate replies; die inside round 2
            raise _Crash("server killed")
        return reply

    with pytest.raises(_Crash):
        _run(rd_b, n, tamper=crash_in_round_2)
    assert rd_b.completed_rounds() == [1]
    assert rd_b.status()["status"] == "failed"

    _run(rd_b, n)  # a fresh grid: restarted server and client processes

    a, b = _final_weights(rd_a), _final_weights(rd_b)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["round"] for r in rd_b.metrics()] == [1, 2]
    for site in rd_b.metrics()[0]["sites"]:  # the restarted sites' ledgers continued
        eps = [r["sites"][site]["epsilon"] for r in rd_b.metrics()]
        assert eps[1] > eps[0]


def test_tampered_replies_are_rejected_and_round_completes(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=1, **{"dp.enabled": False, "site_policy.dp_required": False})
    assert n >= 4

    def tamper(nid, reply):
        if reply.has_error() or P.ARRAYS not in reply.content.array_records:
            return reply
        arrays = {k: a.copy() for k, a in from_record(reply.content.array_records[P.ARRAYS]).items()}
        name = next(iter(arrays))
        if nid == 1:
            arrays[name] = np.zeros(arrays[name].shape + (2,), dtype=np.float32)
        elif nid == 2:
            arrays[name].flat[0] = np.nan
        elif nid == 3:
            arrays[name] = arrays[name] + 1e6
        else:
            return reply
        reply.content[P.ARRAYS] = ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
        return reply

    final = _run(rd, n, tamper=tamper)

    row = rd.metrics()[0]
    reasons = sorted(m.get("reason", "") for m in row["sites"].values() if m["status"] == "rejected")
    assert len(reasons) == 3
    assert any("wrong shape" in r for r in reasons)
    assert any("non-finite" in r for r in reasons)
    assert any("update norm" in r for r in reasons)
    assert row["server"]["accepted"] == n - 3
    assert all(np.all(np.isfinite(v)) for v in final.values())
    assert rd.status()["status"] == "completed"


def test_every_outgoing_message_carries_only_parameters_and_aggregate_metrics(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=2)
    outgoing: list[Message] = []

    final = _run(rd, n, outgoing=outgoing)

    assert len(outgoing) == 2 * 2 * n  # train + evaluate, every node, every round
    param_bytes = sum(v.nbytes for v in final.values())
    for msg in outgoing:
        assert not msg.has_error()
        content = msg.content
        assert set(content.keys()) <= {P.ARRAYS, P.METRICS, P.SITE_INFO}
        for name, value in content.metric_records[P.METRICS].items():
            assert name in P.ALLOWED_METRICS
            assert isinstance(value, float)
        if P.ARRAYS in content.array_records:
            arrays = content.array_records[P.ARRAYS]  # packed: the layout and the parameters' bytes, nothing else
            assert is_packed(arrays) and list(layout_of(arrays)) == list(final.keys())
            assert sum(a.numpy().nbytes for k, a in arrays.items() if k != LAYOUT) == param_bytes
        assert set(content.config_records[P.SITE_INFO].keys()) <= {"site", "status", "message", P.LEDGER_DIGEST}


def test_site_refuses_to_train_once_budget_is_spent(tmp_path, demo_ptbxl):
    record = {"dp.unit": "record", "site_policy.unit": "record"}  # the sites' own policy accounts per record too
    rd, n = _prepare(tmp_path, demo_ptbxl, "probe", **record)
    one_round = []  # each site's epsilon after one round: (sigma 0.8, q, 2 steps) at the sites' delta 1e-5
    for client in Manifest.load(rd.manifest_path).clients:
        n_train = len(client.train)
        one_round.append(compute_epsilon([(0.8, poisson_rate(n_train, 4), 2)], 1e-5))
    budget = max(one_round) * 1.05  # every site affords round 1, the hungriest cannot afford round 2
    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=2, **{"dp.budget_epsilon": budget, "dp.noise_multiplier": 0.8,
                                                         **record})

    _run(rd, n)

    first, second = rd.metrics()
    assert all(m["status"] == "accepted" for m in first["sites"].values())
    refused = [m for m in second["sites"].values() if m["status"] == "rejected"]
    assert refused and all("privacy budget spent" in m["reason"] for m in refused)
    ledger = json.loads(rd.ledger_path.read_text())
    assert set(ledger["sites"]) == set(first["sites"])
    for site in ledger["sites"].values():  # what was spent stays within budget
        hist = [(h["noise_multiplier"], h["sample_rate"], h["steps"]) for h in site["history"]]
        assert compute_epsilon(hist, site["delta"]) <= budget + 0.011


def test_client_level_dp_is_accounted_apart_from_record_level(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=1, **{"dp.enabled": False, "site_policy.dp_required": False,
                                                          "strategy.client_dp": True,
                                                          "strategy.client_dp_noise": 1.0,
                                                          "strategy.client_dp_clip": 5.0})

    final = _run(rd, n)

    ledger = json.loads(rd.ledger_path.read_text())
    assert ledger["sites"] == {}  # no record-level DP in this run
    cl = ledger["client_level"]
    assert cl["n_records"] == n and cl["history"][0]["noise_multiplier"] == 1.0
    assert all(np.all(np.isfinite(v)) for v in final.values())
    from privacy.ledger import load_ledger

    assert load_ledger(rd.path).client_level is not None  # the privacy module reads it


def test_finished_run_leaves_ecgs_curves_and_budget_table(tmp_path, demo_ptbxl):
    from simulations.finish import finish_run

    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=1,
                     output={"synthesize": 3, "sampler": "ddim", "sampler_steps": 3})
    _run(rd, n)

    report = finish_run(rd.path)

    assert (rd.path / "synthetic" / "grid.png").stat().st_size > 10_000
    assert len(list((rd.path / "synthetic" / "records100").rglob("*.hea"))) == 3
    assert (rd.path / "training_curves.png").exists() and (rd.path / "epsilon_over_rounds.png").exists()
    budget = json.loads((rd.path / "privacy_budget.json").read_text())
    assert set(budget["sites"]) == set(rd.metrics()[0]["sites"])
    assert "released model" in report and (rd.path / "summary.txt").read_text().strip() == report
    fidelity = json.loads((rd.path / "fidelity.json").read_text())  # the realism contract of `fedecg demo`
    for key in ("beat_rate", "inter_lead_correlation_error", "hf_power_ratio", "amplitude_ratio"):
        assert isinstance(fidelity[key], float)
    assert fidelity["passed"] is False  # one round of a tiny model from scratch draws noise, and says so
    assert "training records" in fidelity["reference"] and (rd.path / "fidelity.png").exists()
    with np.load(rd.path / "synthetic" / "synthetic.npz") as z:
        assert z["signals"].shape == (3, 12, 1000)


def test_ledger_records_the_sampling_rate_opacus_used():
    assert poisson_rate(27, 8) == 0.25  # 4 batches, not 8/27
    assert poisson_rate(64, 8) == 8 / 64
    assert poisson_rate(5, 8) == 1.0


def test_evaluate_with_train_sends_one_message_per_round_and_keeps_the_rows(tmp_path, demo_ptbxl):
    """strategy.evaluate with-train: train messages of rounds ≥ 2 ask for the incoming model's validation loss,
    only the last round has evaluate messages, and RunDir.metrics() gives the rows separate evaluation gives:
    round r's val-* are those of round r's model, identical numbers (validation is seeded per site)."""
    rows = {}
    for mode in ("separate", "with-train"):
        rd, n = _prepare(tmp_path, demo_ptbxl, mode, rounds=3, **{"strategy.evaluate": mode})
        outgoing: list[Message] = []
        _run(rd, n, outgoing=outgoing)
        kinds = [m.metadata.message_type for m in outgoing]
        assert kinds.count("train") == 3 * n
        assert kinds.count("evaluate") == (3 * n if mode == "separate" else n)
        rows[mode] = rd.metrics()
        raw = [json.loads(line) for line in rd.metrics_path.read_text().splitlines()]
        assert sum("evaluation" in line for line in raw) == (0 if mode == "separate" else 2)
    for a, b in zip(rows["separate"], rows["with-train"], strict=True):
        assert a["round"] == b["round"] and a["sites"].keys() == b["sites"].keys()
        assert b["server"]["val-loss"] == pytest.approx(a["server"]["val-loss"], rel=1e-5)
        for site, m in a["sites"].items():
            assert b["sites"][site]["train-loss"] == pytest.approx(m["train-loss"], rel=1e-5)
            for key in ("val-loss", "val-eps-loss", "val-examples"):
                assert (key in m) == (key in b["sites"][site]), (site, key)
                if key in m:
                    assert b["sites"][site][key] == pytest.approx(m[key], rel=1e-5), (site, key)
