import math

import pytest
import torch

from fedecg.device import torch_threads
from sssd.config import model_preset
from sssd.diffusion import Schedule
from sssd.losses import condition_dropout, diffusion_loss, log_mel, mel_loss
from sssd.model import SSSDDenoiser


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def _sines(n=4, length=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / 100.0
    f = 0.8 + 1.5 * torch.rand(n, 8, 1, generator=g)
    ph = 6.28 * torch.rand(n, 8, 1, generator=g)
    return 0.5 * torch.sin(2 * math.pi * f * t + ph)


def test_log_mel_shape():
    cfg = model_preset("tiny")
    out = log_mel(torch.randn(2, 8, 1000), cfg.loss)
    assert out.shape == (2, 8, cfg.mel_n_mels, 1000 // cfg.mel_hop + 1)


def test_mel_loss_zero_for_identical_and_grows_with_distortion():
    cfg = model_preset("tiny").loss
    x = _sines()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    assert mel_loss(x, x, cfg).item() == 0.0
    losses = [mel_loss(x + s * noise, x, cfg).item() for s in (0.01, 0.1, 0.5)]
    assert 0 < losses[0] < losses[1] < losses[2]
    per_ex = mel_loss(x + 0.1 * noise, x, cfg, reduction="none")
    assert per_ex.shape == (4,) and torch.isclose(per_ex.mean(), torch.tensor(losses[1]), atol=1e-5)


def test_condition_dropout_rates():
    cfg = model_preset("tiny", label_drop_prob=0.3, demo_drop_prob=0.2, demo_field_drop_prob=0.0)
    labels, mask = torch.ones(4000, 71), torch.ones(4000, 4)
    lab, m = condition_dropout(labels, mask, cfg.loss, torch.Generator().manual_seed(0))
    dropped_labels = (lab.sum(1) == 0).float().mean().item()
    dropped_demo = (m.sum(1) == 0).float().mean().item()
    assert abs(dropped_labels - 0.3) < 0.03 and abs(dropped_demo - 0.2) < 0.03
    assert set(m.sum(1).unique().tolist()) <= {0.0, 4.0}


def test_diffusion_loss_is_seeded_and_per_example():
    cfg = model_preset("tiny")
    model, sched = SSSDDenoiser(cfg), Schedule.from_config(cfg)
    x, labels, demo, mask = _sines(), torch.zeros(4, 71), torch.zeros(4, 4), torch.ones(4, 4)
    a, parts = diffusion_loss(model, sched, x, labels, demo, mask, cfg.loss, torch.Generator().manual_seed(3))
    b, _ = diffusion_loss(model, sched, x, labels, demo, mask, cfg.loss, torch.Generator().manual_seed(3))
    per_ex, _ = diffusion_loss(
        model, sched, x, labels, demo, mask, cfg.loss, torch.Generator().manual_seed(3), reduction="none"
    )
    assert a.item() == b.item() and per_ex.shape == (4,)
    assert torch.isclose(per_ex.mean(), a)
    assert set(parts) == {"eps_mse", "mel", "loss"}
    # zero-initialised model predicts eps_hat = 0: the eps term is the mean squared noise (about 1)
    assert 0.8 < parts["eps_mse"] < 1.2


def test_mel_term_weighting_and_lambda_zero():
    cfg0 = model_preset("tiny", mel_lambda=0.0)
    model, sched = SSSDDenoiser(cfg0), Schedule.from_config(cfg0)
    x = _sines()
    args = (x, torch.zeros(4, 71), torch.zeros(4, 4), torch.ones(4, 4))
    t = torch.tensor([0, 50, 100, 199])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    plain, parts0 = diffusion_loss(model, sched, *args, cfg0.loss, reduction="none", t=t, noise=noise)
    assert "mel" not in parts0
    cfg1 = model_preset("tiny", mel_lambda=1.0, mel_timestep_weight="none")
    both, _ = diffusion_loss(model, sched, *args, cfg1.loss, reduction="none", t=t, noise=noise)
    cfgw = model_preset("tiny", mel_lambda=1.0, mel_timestep_weight="abar")
    weighted, _ = diffusion_loss(model, sched, *args, cfgw.loss, reduction="none", t=t, noise=noise)
    mel = both - plain
    assert torch.all(mel > 0)
    assert torch.allclose(weighted - plain, sched.alpha_bars[t] * mel, atol=1e-5)


def _overfit(x, steps=60, seed=0, lr=1e-2):
    cfg = model_preset("tiny", seq_len=x.shape[-1], label_drop_prob=0.0, demo_drop_prob=0.0, demo_field_drop_prob=0.0)
    torch.manual_seed(seed)
    model, sched = SSSDDenoiser(cfg), Schedule.from_config(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    args = (torch.zeros(n, 71), torch.zeros(n, 4), torch.ones(n, 4))
    t = torch.arange(n) * (cfg.T // n) + 5  # fixed evaluation steps and noise
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(99))
    model.eval()
    before, _ = diffusion_loss(model, sched, x, *args, cfg.loss, t=t, noise=noise)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = diffusion_loss(model, sched, x, *args, cfg.loss, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after, _ = diffusion_loss(model, sched, x, *args, cfg.loss, t=t, noise=noise)
    return before.item(), after.item()


def test_loss_decreases_when_overfitting_sines():
    before, after = _overfit(_sines(length=500))
    assert after < 0.75 * before


@pytest.mark.real_data
def test_loss_decreases_when_overfitting_real_records(ptbxl_dir):
    import pandas as pd
    import wfdb

    meta = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    sigs = []
    for name in meta["filename_lr"].iloc[:4]:
        sig, fields = wfdb.rdsamp(str(ptbxl_dir / name))
        leads = [fields["sig_name"].index(n) for n in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
        sigs.append(torch.tensor(sig[:500, leads].T, dtype=torch.float32))
    x = torch.nan_to_num(torch.stack(sigs))
    before, after = _overfit(x)
    assert after < 0.75 * before
