"""Resume refuses a config.yaml that differs from the checkpoint's run_config (issue 16, part 8)."""

from __future__ import annotations

import json

import pytest
import yaml

from fedecg.errors import FedECGError

SCENARIO = {
    "name": "r", "rounds": 2, "seed": 3, "partition": {"by": "site", "min_records": 1, "tail": "pool"},
    "model": "tiny", "train": {"local_steps": 1, "batch_size": 4, "eval_batches": 1},
    "strategy": {"min_train_nodes": 1, "min_available_nodes": 1}, "output": {"synthesize": 0},
    "site_policy": {"dp_required": False},  # the sites' own policy: no DP-SGD needed here
}


class _Crash(Exception):
    pass


def _interrupted_run(tmp_path, dataset):
    """A 2-round run whose server died in round 2 (round 1 checkpointed)."""
    from client.app import app as client_app
    from ptbxl.partition import Manifest
    from server.loop import ServerSettings, run_federation
    from server.prepare import prepare_run
    from simulations.inprocess import InProcessGrid
    from simulations.runner import simulated_node_configs

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**SCENARIO, "dataset": str(dataset)}))
    rd = prepare_run(path, [], tmp_path / "run", partition=True)
    n = len(Manifest.load(rd.manifest_path).clients)
    configs = simulated_node_configs(rd)  # each simulated node's own config (its site policy), as the runner does
    calls = {"n": 0}

    def crash(nid, reply):
        calls["n"] += 1
        if calls["n"] > 2 * n:
            raise _Crash("server killed")
        return reply

    settings = ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True)
    with pytest.raises(_Crash):
        run_federation(InProcessGrid(client_app, n, tamper=crash, node_config=lambda i: configs[i]), settings)
    assert rd.completed_rounds() == [1]
    return rd, lambda: run_federation(InProcessGrid(client_app, n, node_config=lambda i: configs[i]), settings)


def test_resume_refuses_an_edited_config_and_names_the_keys(tmp_path, demo_ptbxl):
    rd, resume = _interrupted_run(tmp_path, demo_ptbxl)
    original = rd.config_path.read_text()
    edited = yaml.safe_load(original)
    edited["train"]["lr"] = 0.01
    edited["strategy"]["robust"] = "median"
    rd.config_path.write_text(yaml.safe_dump(edited, sort_keys=False))

    with pytest.raises(FedECGError) as err:
        resume()
    msg = str(err.value)
    assert "differs from the checkpoint of round 1 in 2 key(s)" in msg
    assert "strategy.robust: 'none' in the checkpoint, 'median' in config.yaml" in msg
    assert "train.lr: 0.0002 in the checkpoint, 0.01 in config.yaml" in msg
    assert rd.status()["status"] == "failed" and "train.lr" in rd.status()["error"]
    assert rd.completed_rounds() == [1]  # nothing trained under the edited config

    rd.config_path.write_text(original)  # the same run again: resumes
    resume()
    assert rd.completed_rounds() == [1, 2] and rd.status()["status"] == "completed"


def test_keys_added_after_the_checkpoint_compare_as_their_defaults(tmp_path, demo_ptbxl):
    from sssd.checkpoint import load_checkpoint, save_checkpoint

    rd, resume = _interrupted_run(tmp_path, demo_ptbxl)
    path = rd.checkpoint_path(1)
    ckpt = load_checkpoint(path)
    for key in ("robust", "relative_norm_factor", "max_examples"):  # as written before these keys existed
        del ckpt["run_config"]["strategy"][key]
    save_checkpoint(path, ckpt)
    resume()
    assert rd.status()["status"] == "completed"
    assert json.loads(json.dumps(rd.metrics()[-1]["round"])) == 2
