"""Federations that start from a pretrained base (scenario ``init``) and the server-side EMA of the global model.

In process (simulations.inprocess), tiny preset, no DP: the base reaches the sites in round 1, base.json and
the checkpoints record it, a base of another architecture is refused clearly, the EMA follows its rule exactly,
and a resumed run with EMA equals an uninterrupted one bit for bit (without re-reading the base)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
import yaml

from client.app import app as client_app
from fedecg import protocol as P
from fedecg.config import ScenarioConfig, load_scenario
from fedecg.device import torch_threads
from fedecg.errors import FedECGError
from fedecg.wire import from_record, is_packed
from ptbxl.partition import Manifest
from server.ema import ema_decay_at, update_ema
from server.loop import ServerSettings, run_federation
from server.prepare import PreparedRun, prepare_run
from simulations.inprocess import InProcessGrid
from simulations.runner import simulated_node_configs
from sssd import pretrained
from sssd.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from sssd.config import model_preset
from sssd.model import SSSDDenoiser

SCENARIO = {
    "name": "t",
    "rounds": 2,
    "seed": 3,
    "partition": {"by": "site", "min_records": 1, "tail": "pool"},
    "model": {"preset": "tiny"},
    "train": {"local_steps": 1, "batch_size": 4, "lr": 0.001, "eval_batches": 1},
    "dp": {"enabled": False},
    "strategy": {"name": "fedavg", "min_train_nodes": 1, "min_available_nodes": 1, "ema_decay": 0.9},
    "output": {"synthesize": 0},
    "site_policy": {"dp_required": False},  # the simulated sites allow training without DP-SGD
}
CARD = {"name": "test-base", "preset": "tiny", "data": "none (random perturbation)", "license": "CC0"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def make_base(path, preset="tiny", with_ema=True, card=CARD, **overrides):
    """A base checkpoint whose weights are far from a fresh init (+ a model card); returns its weights as
    the federation must use them (the EMA state when present)."""
    cfg = model_preset(preset, **overrides)
    model = SSSDDenoiser(cfg)
    g = torch.Generator().manual_seed(11)
    sd = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    ema = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in sd.items()} if with_ema else None
    save_checkpoint(path, {"round": 40, "model_config": cfg.to_dict(), "state_dict": sd, "ema_state_dict": ema})
    if card is not None:
        pretrained.card_path(path).write_text(json.dumps(card))
    return {k: v.numpy() for k, v in (ema if with_ema else sd).items()}


def _prepare(tmp_path, dataset, name="run", **changes):
    scen = json.loads(json.dumps(SCENARIO))
    for key, value in changes.items():
        node = scen
        *parts, last = key.split(".")
        for p in parts:
            node = node.setdefault(p, {})
        node[last] = value
    scen["dataset"] = str(dataset)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scen))
    rd = prepare_run(path, [], tmp_path / name, partition=True)
    return rd, len(Manifest.load(rd.manifest_path).clients)


class RecordingGrid(InProcessGrid):
    """Keeps every message the server sent."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent.extend(messages)
        return super().send_and_receive(messages, timeout=timeout)


def _run(rd, n, grid_cls=InProcessGrid, **grid_kw):
    configs = simulated_node_configs(rd)  # each simulated node's own config (its site policy)
    grid = grid_cls(client_app, n, node_config=lambda i: configs[i], **grid_kw)
    run_federation(grid, ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True))
    return grid


def _sd(path, key="state_dict"):
    ckpt = load_checkpoint(path)
    return None if ckpt[key] is None else {k: v.numpy() for k, v in ckpt[key].items()}


# ---- the EMA rule ---------------------------------------------------------------------------------------


def test_ema_update_rule_on_a_hand_computed_two_round_example():
    assert ema_decay_at(0.9, 1) == pytest.approx(2 / 11) and ema_decay_at(0.9, 2) == pytest.approx(3 / 12)
    assert ema_decay_at(0.9, 100) == 0.9 and ema_decay_at(0.0, 5) == 0.0
    init = {"w": np.array([1.0, -2.0], dtype=np.float32)}
    g1 = {"w": np.array([3.0, 0.0], dtype=np.float32)}
    g2 = {"w": np.array([-1.0, 4.0], dtype=np.float32)}

    e1 = update_ema(init, g1, 0.9, 1)  # d = 2/11: [2/11 + 27/11, -4/11]
    e2 = update_ema(e1, g2, 0.9, 2)  # d = 1/4: e1/4 - [3/4, -3]

    np.testing.assert_allclose(e1["w"], [29 / 11, -4 / 11], rtol=1e-6)
    np.testing.assert_allclose(e2["w"], [29 / 44 - 3 / 4, -1 / 11 + 3], rtol=1e-6)
    assert e1["w"].dtype == e2["w"].dtype == np.float32
    assert init["w"].tolist() == [1.0, -2.0]  # inputs untouched
    d = np.float32(0.25)  # the float32 arithmetic, exactly
    assert np.array_equal(e2["w"], d * e1["w"] + (np.float32(1) - d) * g2["w"])
    late = update_ema(init, g1, 0.5, 50)  # past the warm-up the configured decay applies
    np.testing.assert_allclose(late["w"], [2.0, -1.0])


# ---- config -------------------------------------------------------------------------------------------


def test_init_and_ema_decay_are_validated_with_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", tmp_path / "builtin")
    (tmp_path / "builtin").mkdir()
    make_base(tmp_path / "builtin" / "alpha.pt")
    make_base(tmp_path / "builtin" / "beta.pt", card=None)
    assert pretrained.builtin_names() == ["alpha", "beta"]
    assert pretrained.resolve_init("builtin:beta") == tmp_path / "builtin" / "beta.pt"
    assert pretrained.resolve_init("none") is None
    assert ScenarioConfig().init == "none" and ScenarioConfig().strategy.ema_decay == 0.9

    with pytest.raises(FedECGError, match="unknown built-in base 'gamma'; available: builtin:alpha, builtin:beta"):
        ScenarioConfig(init="builtin:gamma").validate()
    missing = tmp_path / "nope.pt"
    with pytest.raises(FedECGError, match=f"base checkpoint {missing} not found"):
        ScenarioConfig(init=str(missing)).validate()
    ScenarioConfig(init=str(missing)).validate(check_files=False)  # a resumed run / a site: no file needed
    for bad in (1.0, -0.1):
        cfg = ScenarioConfig.from_dict({"strategy": {"ema_decay": bad}})
        with pytest.raises(FedECGError, match=r"strategy.ema_decay must be in \[0, 1\)"):
            cfg.validate()
    assert ScenarioConfig.from_dict({"strategy": {"ema_decay": 0}}).validate().strategy.ema_decay == 0.0

    # relative paths in a scenario resolve against its folder first, then the working directory
    folder = tmp_path / "scen"
    folder.mkdir()
    make_base(folder / "mine.pt")
    (folder / "s.yaml").write_text(yaml.safe_dump({"dataset": "demo", "init": "mine.pt"}))
    assert load_scenario(folder / "s.yaml").init == str((folder / "mine.pt").resolve())
    monkeypatch.chdir(tmp_path)
    assert load_scenario(folder / "s.yaml", ["init=builtin/alpha.pt"]).init == str(
        (tmp_path / "builtin" / "alpha.pt").resolve())
    assert load_scenario(folder / "s.yaml", ["init=builtin:alpha", "ema_decay=0.5"]).strategy.ema_decay == 0.5
    with pytest.raises(FedECGError, match="not found"):
        load_scenario(folder / "s.yaml", ["init=elsewhere.pt"])


def test_load_base_reads_weights_card_and_hash(tmp_path):
    want = make_base(tmp_path / "b.pt")
    base = pretrained.load_base(str(tmp_path / "b.pt"), model_preset("tiny", mel_lambda=0.0))  # loss may differ

    import hashlib

    assert base.sha256 == hashlib.sha256((tmp_path / "b.pt").read_bytes()).hexdigest()
    assert base.card == CARD and base.weights == "ema" and base.model_config["num_blocks"] == 2
    assert base.state.keys() == want.keys() and all(np.array_equal(base.state[k], want[k]) for k in want)
    plain = make_base(tmp_path / "p.pt", with_ema=False, card=None)
    base = pretrained.load_base(str(tmp_path / "p.pt"))
    assert base.card == {} and base.weights == "state_dict"
    assert all(np.array_equal(base.state[k], plain[k]) for k in plain)


def test_a_base_of_another_architecture_is_refused_naming_presets_and_fields(tmp_path, demo_ptbxl):
    make_base(tmp_path / "small.pt", preset="small", card=None)
    with pytest.raises(FedECGError, match=r"is a 'small' model, the scenario's model is 'tiny'.*num_blocks 6 vs 2"):
        pretrained.load_base(str(tmp_path / "small.pt"), model_preset("tiny"))
    make_base(tmp_path / "wide.pt", card={"model": {"preset": "tiny"}}, res_channels=8, skip_channels=8)
    with pytest.raises(FedECGError, match=r"is a 'custom' \(its card says 'tiny'\) model.*res_channels 8 vs 16"):
        _prepare(tmp_path, demo_ptbxl, "mismatch", init=str(tmp_path / "wide.pt"))
    assert not (tmp_path / "mismatch").exists()  # refused before a run directory was made


# ---- federations ----------------------------------------------------------------------------------------


def test_init_from_a_base_reaches_the_sites_and_is_recorded(tmp_path, demo_ptbxl):
    want = make_base(tmp_path / "base.pt")
    rd, n = _prepare(tmp_path, demo_ptbxl, init="base.pt", rounds=1)  # relative to the scenario's folder

    grid = _run(rd, n, RecordingGrid)

    round1 = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(round1) == n
    for msg in round1:
        assert is_packed(msg.content.array_records[P.ARRAYS])  # the wire form: a few objects, not one per tensor
        got = from_record(msg.content.array_records[P.ARRAYS])
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
        sent_cfg = json.loads(msg.content.config_records[P.CONFIG][P.RUN_CONFIG_JSON])
        assert sent_cfg["init"] == "none"  # the server's base path is not the sites' business
    fresh = SSSDDenoiser(model_preset("tiny")).state_dict()
    assert not np.allclose(fresh["init_conv.weight"].numpy(), want["init_conv.weight"])

    import hashlib

    record = json.loads(rd.base_path.read_text())
    sha = hashlib.sha256((tmp_path / "base.pt").read_bytes()).hexdigest()
    where = str((tmp_path / "base.pt").resolve())
    assert record == {"init": where, "path": where, "sha256": sha, "weights": "ema", "card": CARD}
    ckpt = load_checkpoint(rd.checkpoints / "latest.pt")
    assert ckpt["base"] == {"init": where, "sha256": sha}
    assert ckpt["ema_state_dict"] is not None
    model, _ = model_from_checkpoint(ckpt)  # synthesis and the audit build the EMA weights
    built = model.state_dict()["init_conv.weight"].numpy()
    assert np.array_equal(built, ckpt["ema_state_dict"]["init_conv.weight"].numpy())


def test_checkpoint_ema_matches_a_recomputation_from_the_round_checkpoints(tmp_path, demo_ptbxl):
    base = make_base(tmp_path / "base.pt")
    rd, n = _prepare(tmp_path, demo_ptbxl, init=str(tmp_path / "base.pt"), rounds=3)

    _run(rd, n)

    ema = {k: v.copy() for k, v in base.items()}
    for r in (1, 2, 3):
        glob = _sd(rd.checkpoint_path(r))
        d = np.float32(min(0.9, (1 + r) / (10 + r)))
        ema = {k: d * ema[k] + (np.float32(1) - d) * glob[k] for k in ema}
        saved = _sd(rd.checkpoint_path(r), "ema_state_dict")
        assert all(np.array_equal(saved[k], ema[k]) for k in ema), r
    final = _sd(rd.checkpoints / "latest.pt")
    assert not all(np.array_equal(final[k], ema[k]) for k in ema)  # the EMA is not the global model


def test_ema_decay_zero_keeps_no_ema_and_init_none_records_no_base(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=1, **{"strategy.ema_decay": 0.0})

    _run(rd, n)

    ckpt = load_checkpoint(rd.checkpoints / "latest.pt")
    assert ckpt["ema_state_dict"] is None and ckpt["base"] == {"init": "none", "sha256": None}
    assert not rd.base_path.exists()


class _Crash(Exception):
    pass


def test_resume_with_ema_equals_uninterrupted_run_without_rereading_the_base(tmp_path, demo_ptbxl, caplog):
    make_base(tmp_path / "base.pt")
    rd_a, n = _prepare(tmp_path, demo_ptbxl, "a", init=str(tmp_path / "base.pt"), rounds=3)
    shutil.copytree(rd_a.path, tmp_path / "b")
    rd_b = PreparedRun(tmp_path / "b")
    _run(rd_a, n)

    calls = {"n": 0}

    def crash_in_round_2(nid, reply):
        calls["n"] += 1
        if calls["n"] > 2 * n:  # round 1 = n train + n evaluate replies
            raise _Crash("server killed")
        return reply

    with pytest.raises(_Crash):
        _run(rd_b, n, tamper=crash_in_round_2)
    assert rd_b.completed_rounds() == [1]

    original = (tmp_path / "base.pt").read_bytes()
    (tmp_path / "base.pt").write_bytes(original + b"\0")  # the base changed since the run started
    with pytest.raises(FedECGError, match="changed since this run started"):
        _run(rd_b, n)
    assert rd_b.status()["status"] == "failed"

    (tmp_path / "base.pt").unlink()  # gone: resuming needs only the checkpoint
    with caplog.at_level(logging.WARNING, logger="server.loop"):
        _run(rd_b, n)
    assert any("is gone" in r.getMessage() for r in caplog.records)

    for key in ("state_dict", "ema_state_dict"):
        a, b = _sd(rd_a.checkpoints / "latest.pt", key), _sd(rd_b.checkpoints / "latest.pt", key)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), key
    assert load_checkpoint(rd_b.checkpoints / "latest.pt")["base"] == load_checkpoint(
        rd_a.checkpoints / "latest.pt")["base"]
    assert [r["round"] for r in rd_b.metrics()] == [1, 2, 3]
