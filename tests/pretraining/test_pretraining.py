"""Central pretraining (``fedecg pretrain``, pretraining.train / pretraining.corpus), tiny preset, tiny corpora.

Resume after an interruption is bit-exact (weights, EMA, loss history); the LR schedule and the EMA rule are
exactly as documented, in the functions and along a real training trajectory; the base loads as a
federation's ``init`` and its model card records where it came from (sha256 of the file, a command that
reproduces the settings); the synthetic corpus is seeded and disjoint from the demo dataset; the CLI fails
with one readable line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import pretraining.train as pt
from fedecg.errors import FedECGError
from pretraining.corpus import PRETRAIN_CORPUS_SEED, synthetic_corpus
from sssd.checkpoint import load_checkpoint, model_from_checkpoint
from sssd.config import model_preset
from sssd.model import SSSDDenoiser


def _settings(out: Path, **kw) -> pt.PretrainSettings:
    base = dict(out=str(out), preset="tiny", corpus_records=40, steps=8, batch_size=4, warmup_steps=2,
                save_every=4, log_every=2, eval_samples=0, progress=False, threads=1)
    base.update(kw)
    return pt.PretrainSettings(**base)


def _history(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _capture_states(monkeypatch, sink: list, stop_after: int | None = None):
    """Wrap ``_save_state``: record (step, params, ema) at every save; raise KeyboardInterrupt right after
    the save at step ``stop_after`` (an interrupted run whose last state file is that step's)."""
    real = pt._save_state

    def wrapper(*args, **kwargs):
        real(*args, **kwargs)
        model, ema, step = args[1], args[2], args[6]
        sink.append((step, {k: p.detach().clone() for k, p in model.named_parameters()},
                     [e.detach().clone() for e in ema]))
        if stop_after is not None and step == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(pt, "_save_state", wrapper)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step tiny pretraining (fp32, a model override) with the training state saved after every step."""
    out = tmp_path_factory.mktemp("pretrain") / "base.pt"
    s = _settings(out, steps=3, save_every=1, log_every=1, precision="fp32",
                  model_overrides={"mel_lambda": 0.05})
    snaps: list = []
    with pytest.MonkeyPatch.context() as mp:
        _capture_states(mp, snaps)
        card = pt.pretrain(s)
    return s, card, snaps


# ---- 1. resume --------------------------------------------------------------------------------------------


def test_resume_after_interruption_is_bit_exact(tmp_path, monkeypatch):
    # log_every 3 does not divide save_every 4: the step-6 log row mixes losses from before and after the
    # interruption, so the resumed history only matches if the partial log window survives the restart.
    kw = dict(steps=8, save_every=4, log_every=3)
    a = _settings(tmp_path / "a" / "base.pt", **kw)
    card_a = pt.pretrain(a)

    b = _settings(tmp_path / "b" / "base.pt", **kw)
    with monkeypatch.context() as mp:
        saved: list = []
        _capture_states(mp, saved, stop_after=4)
        with pytest.raises(KeyboardInterrupt):
            pt.pretrain(b)
        assert [st for st, _, _ in saved] == [4]
    assert not Path(b.out).exists()  # interrupted between the state save and the base save of step 4
    card_b = pt.pretrain(dataclasses.replace(b, resume=True))

    ck_a, ck_b = load_checkpoint(a.out), load_checkpoint(b.out)
    assert ck_a["pretrain_step"] == ck_b["pretrain_step"] == 8
    for which in ("state_dict", "ema_state_dict"):
        assert ck_a[which].keys() == ck_b[which].keys()
        for k in ck_a[which]:
            assert torch.equal(ck_a[which][k], ck_b[which][k]), f"{which}[{k}] differs after resume"
    st_a = torch.load(pt.state_path(a.out), weights_only=True)
    st_b = torch.load(pt.state_path(b.out), weights_only=True)
    for ea, eb in zip(st_a["ema"], st_b["ema"], strict=True):
        assert torch.equal(ea, eb)
    assert torch.equal(st_a["data_gen"], st_b["data_gen"]) and torch.equal(st_a["loss_gen"], st_b["loss_gen"])
    assert [r["step"] for r in st_a["history"]] == [3, 6, 8]
    assert _history(st_a["history"]) == _history(st_b["history"])
    assert card_a["training"]["final_loss"]["loss"] == card_b["training"]["final_loss"]["loss"]
    assert card_b["training"]["steps"] == 8


def test_resume_refuses_missing_state_and_other_model(tmp_path):
    s = _settings(tmp_path / "base.pt", steps=2, save_every=1, resume=True)
    with pytest.raises(FedECGError, match="no training state"):
        pt.pretrain(s)
    pt.pretrain(dataclasses.replace(s, resume=False))
    with pytest.raises(FedECGError, match="another model config"):
        pt.pretrain(dataclasses.replace(s, model_overrides={"res_channels": 8}))


# ---- 2. learning-rate schedule ----------------------------------------------------------------------------


def test_lr_schedule_warmup_then_cosine():
    s = pt.PretrainSettings(out="x.pt", steps=50, lr=2e-3, warmup_steps=10, min_lr_ratio=0.1)
    total = 50
    lrs = [pt.lr_at(i, total, s) for i in range(total)]
    for i in range(10):  # linear warm-up: lr·(i+1)/W
        assert lrs[i] == pytest.approx(2e-3 * (i + 1) / 10, rel=1e-12)
    assert lrs[9] == pytest.approx(2e-3, rel=1e-12)  # peak at the end of warm-up
    assert lrs[10] == pytest.approx(2e-3, rel=1e-12)  # cosine starts at the peak
    assert pt.lr_at(total, total, s) == pytest.approx(2e-4, rel=1e-12)  # min_lr_ratio·lr at the end
    after = lrs[10:] + [pt.lr_at(total, total, s)]
    assert all(x >= y for x, y in zip(after, after[1:], strict=False))
    assert after[0] > after[-1]
    mid = 10 + 20  # half-way through the cosine: (min + max) / 2
    assert lrs[mid] == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5), rel=1e-12)
    assert all(2e-4 - 1e-15 <= x <= 2e-3 + 1e-15 for x in lrs)
    # no warm-up: the first step already has the peak lr
    s0 = dataclasses.replace(s, warmup_steps=0)
    assert pt.lr_at(0, total, s0) == pytest.approx(2e-3, rel=1e-12)
    assert pt.lr_at(25, total, s0) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))


def test_training_uses_the_schedule(trained):
    s, card, _ = trained
    st = torch.load(pt.state_path(s.out), weights_only=True)
    # the lr of the last param group is that of the last step (index 2 of 3)
    assert st["optimizer"]["param_groups"][0]["lr"] == pytest.approx(pt.lr_at(2, 3, s), rel=1e-12)
    assert [r["lr"] for r in st["history"]] == pytest.approx([pt.lr_at(i, 3, s) for i in range(3)], rel=1e-12)


# ---- 3. EMA ----------------------------------------------------------------------------------------------


def test_ema_decay_and_update_rule():
    assert pt.ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert pt.ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert pt.ema_decay_at(8, 0.999) == pytest.approx(0.5)
    assert pt.ema_decay_at(100_000, 0.999) == 0.999
    assert pt.ema_decay_at(5, 0.0) == 0.0
    ema = [torch.tensor([1.0, 2.0]), torch.tensor([[-4.0]])]
    params = [torch.tensor([3.0, 6.0]), torch.tensor([[8.0]])]
    pt.ema_update(ema, params, 0.75)  # 0.75·ema + 0.25·θ, exact in binary floating point
    assert torch.equal(ema[0], torch.tensor([1.5, 3.0]))
    assert torch.equal(ema[1], torch.tensor([[-1.0]]))
    assert torch.equal(params[0], torch.tensor([3.0, 6.0]))  # θ untouched
    pt.ema_update(ema, params, 0.0)
    assert torch.equal(ema[0], params[0]) and torch.equal(ema[1], params[1])


def test_ema_follows_the_rule_along_training(trained):
    s, _, snaps = trained
    assert [st for st, _, _ in snaps] == [1, 2, 3]
    cfg = model_preset(s.preset, **s.model_overrides).replace(init_seed=s.seed)
    ema = [p.detach().clone() for p in SSSDDenoiser(cfg).parameters()]  # the EMA starts at the init weights
    for step, params, got in snaps:
        pt.ema_update(ema, list(params.values()), pt.ema_decay_at(step, s.ema_decay))
        for e, g in zip(ema, got, strict=True):
            assert torch.equal(e, g), f"EMA after step {step} is not d·ema + (1 − d)·θ"
    ck = load_checkpoint(s.out)
    final_params, final_ema = snaps[-1][1], snaps[-1][2]
    for (k, p), e in zip(final_params.items(), final_ema, strict=True):
        assert torch.equal(ck["state_dict"][k], p) and torch.equal(ck["ema_state_dict"][k], e)
    assert ck["ema_state_dict"].keys() == ck["state_dict"].keys()
    assert any(not torch.equal(ck["ema_state_dict"][k], ck["state_dict"][k]) for k in ck["state_dict"])


def test_saved_base_keeps_buffers_in_the_ema_state(tmp_path):
    # the tiny denoiser has no buffers; give it one to check that non-parameter keys are copied unchanged
    cfg = model_preset("tiny")
    model = SSSDDenoiser(cfg)
    model.register_buffer("running_stat", torch.arange(3.0))
    ema = [p.detach() + 1.0 for p in model.parameters()]
    _, corpus = synthetic_corpus(1, 5)
    out = tmp_path / "b.pt"
    pt._save_base(out, model, ema, cfg, 7, _settings(out), corpus)
    ck = load_checkpoint(out)
    assert ck["pretrain_step"] == 7 and ck["ema_state_dict"].keys() == ck["state_dict"].keys()
    assert torch.equal(ck["ema_state_dict"]["running_stat"], torch.arange(3.0))
    assert torch.equal(ck["state_dict"]["running_stat"], torch.arange(3.0))
    for (k, p), e in zip(model.named_parameters(), ema, strict=True):
        assert torch.equal(ck["state_dict"][k], p.detach()) and torch.equal(ck["ema_state_dict"][k], e)


# ---- 4. the base and its model card -------------------------------------------------------------------------


def test_base_loads_for_federations_and_card_records_provenance(trained):
    from sssd.pretrained import file_sha256, load_base

    s, card, _ = trained
    out = Path(s.out)
    cfg = model_preset(s.preset, **s.model_overrides)
    base = load_base(str(out), model_config=cfg)
    assert base.weights == "ema"
    model, mcfg = model_from_checkpoint(load_checkpoint(out), "cpu", ema=True)
    assert mcfg.to_dict() == cfg.to_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), base.state[k])

    jpath, mpath = pt.card_paths(out)
    on_disk = json.loads(jpath.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(card)) == base.card
    assert on_disk["format"] == pt.CARD_FORMAT and on_disk["weights"] == out.name
    assert on_disk["sha256"] == file_sha256(out) == base.sha256
    data = on_disk["data"]
    assert data["source"] == "synthetic" and data["n_records"] == 40
    assert data["generator_seed"] == PRETRAIN_CORPUS_SEED
    t = on_disk["training"]
    assert t["steps"] == 3 and t["batch_size"] == 4 and t["seed"] == 0 and t["precision"] == "fp32"
    assert t["records_seen"] == 12 and t["wall_seconds"] >= 0
    assert t["final_loss"]["step"] == 3 and np.isfinite(t["final_loss"]["loss"])
    m = on_disk["machine"]
    assert m["cpu_count"] >= 1 and m["torch"] == torch.__version__ and m["python"]
    assert on_disk["model"]["preset"] == "tiny" and on_disk["model"]["parameters"] == sum(
        p.numel() for p in model.parameters())
    assert on_disk["command"].startswith("fedecg pretrain ")
    assert "realism" not in on_disk
    md = mpath.read_text(encoding="utf-8")
    assert "# Model card: base" in md and "3 steps" in md and on_disk["command"] in md
    # the loss curve
    rows = [json.loads(line) for line in out.with_name("base.loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert out.with_name("base.loss.png").is_file()


def test_card_command_reproduces_the_settings(trained, monkeypatch):
    from fedecg.cli import app

    s, card, _ = trained
    captured = []

    def fake(settings):
        captured.append(settings)
        return {"training": {"steps": settings.steps, "wall_seconds": 0.0}}

    monkeypatch.setattr(pt, "pretrain", fake)
    argv = shlex.split(card["command"])
    assert argv[:2] == ["fedecg", "pretrain"]
    res = CliRunner().invoke(app, argv[1:])
    assert res.exit_code == 0, res.output
    (got,) = captured
    fields = ("out", "dataset", "preset", "model_overrides", "corpus_records", "steps", "minutes", "batch_size",
              "lr", "warmup_steps", "ema_decay", "seed", "precision", "eval_samples", "sampler_steps")
    assert {f: getattr(got, f) for f in fields} == {f: getattr(s, f) for f in fields}


def test_card_realism_block(tmp_path):
    s = _settings(tmp_path / "base.pt", corpus_records=60, steps=4, eval_samples=4, sampler_steps=3)
    card = pt.pretrain(s)
    r = card["realism"]
    assert r["n_synthetic"] == 4 and r["sampler"] == "ddim-3 eta 1" and "disjoint" in r["reference"]
    assert isinstance(r["metrics"], dict) and r["metrics"]
    assert json.loads(pt.card_paths(s.out)[0].read_text())["realism"]["metrics"].keys() == r["metrics"].keys()
    assert "## Realism of its samples" in pt.card_paths(s.out)[1].read_text()
    with np.load(Path(s.out).with_name("base.samples.npz")) as z:
        assert z["signals"].shape == (4, 12, 1000) and np.isfinite(z["signals"]).all()


# ---- 5. the corpus -------------------------------------------------------------------------------------------


def test_synthetic_corpus_is_seeded():
    a, ia = synthetic_corpus(12, 7)
    b, ib = synthetic_corpus(12, 7)
    c, _ = synthetic_corpus(12, 8)
    assert a.x.shape == (12, 8, 1000) and a.x.dtype == np.float32 and np.isfinite(a.x).all()
    for f in ("x", "labels", "demo", "demo_mask", "ecg_ids"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert ia == ib and ia.seed == 7 and ia.n_records == 12
    assert not np.array_equal(a.x, c.x)
    assert float(np.abs(a.x - c.x).max()) > 0.1
    with pytest.raises(FedECGError):
        synthetic_corpus(0)


def _rms_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    fx, fy = x.reshape(len(x), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)
    d2 = (fx**2).sum(1)[:, None] + (fy**2).sum(1)[None, :] - 2 * fx @ fy.T
    return np.sqrt(np.maximum(d2, 0.0) / fx.shape[1])


def test_corpus_is_disjoint_from_the_demo_dataset():
    from ptbxl.demo import demo_metadata, synthesize_records
    from ptbxl.signals import model_view

    assert PRETRAIN_CORPUS_SEED != 0
    assert pt.PretrainSettings(out="x.pt").corpus_seed == PRETRAIN_CORPUS_SEED
    n = 36
    meta = demo_metadata(n, 4, np.random.default_rng(0))  # what make_demo_dataset(seed=0) generates
    demo = np.stack([model_view(lo12) for _, lo12 in synthesize_records(meta, 0, high_rate=False)])
    corpus, _ = synthetic_corpus(n)
    # same ecg_ids 1..n in both: records drawn from seed [seed, ecg_id] would coincide if the seeds did
    assert set(corpus.ecg_ids.tolist()) == set(meta["ecg_id"].tolist())
    d = _rms_distances(corpus.x, demo)
    assert d.min() > 0.02, f"a corpus ECG is within {d.min():.4f} mV RMS of a demo ECG"
    # the distance has teeth: two draws of the demo generator agree with themselves
    assert np.allclose(np.diag(_rms_distances(demo, demo)), 0.0, atol=1e-6)


# ---- 6. CLI --------------------------------------------------------------------------------------------------


def test_cli_help():
    from fedecg.cli import app

    res = CliRunner().invoke(app, ["pretrain", "--help"])
    assert res.exit_code == 0, res.output
    for opt in ("--out", "--steps", "--minutes", "--resume", "--ema-decay", "--dataset"):
        assert opt in res.output


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "give --steps N or --minutes M"),
    (["--steps", "2", "--dataset", "{tmp}/no-such-folder"], "dataset folder not found"),
])
def test_cli_bad_options_fail_with_one_line(tmp_path, args, message):
    exe = Path(sys.executable).with_name("fedecg")
    if not exe.is_file():
        pytest.skip(f"{exe} not installed")
    argv = [str(exe), "pretrain", "--preset", "tiny", "--out", str(tmp_path / "b.pt")]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: pretrain: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "b.pt").exists()


def test_a_further_phase_starts_from_the_base_weights(trained, tmp_path):
    """--init: a second pretraining phase starts from the base's EMA weights (not a fresh initialisation)."""
    from sssd.pretrained import load_base

    s, _, _ = trained
    base = load_base(s.out)
    card = pt.pretrain(_settings(tmp_path / "phase2.pt", steps=1, lr=1e-12, warmup_steps=0, init=s.out))
    after = load_checkpoint(tmp_path / "phase2.pt")["state_dict"]
    for k, v in base.state.items():
        np.testing.assert_allclose(after[k].numpy(), v, atol=1e-6)
    assert card["training"]["initialised_from"]["sha256"] == base.sha256
    assert f"--init {s.out}" in card["command"]
