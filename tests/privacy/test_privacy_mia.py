"""privacy.mia: denoising-error scores are reproducible and separate memorised records; ROC metrics."""

import numpy as np
import pytest
import torch

from fedecg.errors import FedECGError
from privacy.mia import MIAConfig, attack_metrics, denoising_errors


def test_attack_metrics_perfect_and_chance():
    perfect = attack_metrics(np.array([5.0, 6, 7, 8]), np.array([0.0, 1, 2, 3]))
    assert perfect["auc"] == 1.0 and perfect["tpr_at_fpr"]["0.01"] == 1.0
    rng = np.random.default_rng(0)
    chance = attack_metrics(rng.normal(size=2000), rng.normal(size=2000))
    assert abs(chance["auc"] - 0.5) < 0.03
    assert chance["tpr_at_fpr"]["0.01"] < 0.03
    assert chance["fpr_resolution"] == pytest.approx(1 / 2000)


def test_attack_metrics_known_auc():
    # members {2, 4}, non-members {1, 3}: pairs won 3 of 4 → AUC 0.75
    out = attack_metrics(np.array([2.0, 4.0]), np.array([1.0, 3.0]))
    assert out["auc"] == pytest.approx(0.75)
    assert out["tpr_at_fpr"]["0.01"] == pytest.approx(0.5)  # threshold above 3 catches 4 only


def test_attack_metrics_needs_both_groups():
    with pytest.raises(FedECGError):
        attack_metrics(np.array([]), np.array([1.0]))


@pytest.fixture(scope="module")
def tiny():
    from sssd.config import model_preset
    from sssd.diffusion import Schedule
    from sssd.model import SSSDDenoiser

    cfg = model_preset("tiny", seq_len=64, mel_lambda=0.0)
    torch.manual_seed(0)
    return SSSDDenoiser(cfg), Schedule.from_config(cfg), cfg


def _inputs(cfg, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, cfg.seq_len)).astype(np.float32)
    return (
        x,
        np.zeros((n, cfg.num_labels), np.float32),
        np.zeros((n, 4), np.float32),
        np.zeros((n, 4), np.float32),
    )


def test_denoising_errors_are_reproducible_and_batch_independent(tiny):
    model, sched, cfg = tiny
    inp = _inputs(cfg, 6, 0)
    a = denoising_errors(model, sched, cfg, *inp, MIAConfig(timesteps=(5, 50), n_noise=1, batch_size=6))
    b = denoising_errors(model, sched, cfg, *inp, MIAConfig(timesteps=(5, 50), n_noise=1, batch_size=6))
    np.testing.assert_allclose(a, b)
    assert a.shape == (6,) and np.all(a > 0)


class _MemorisingDenoiser(torch.nn.Module):
    """Predicts ε as if x0 were the member nearest to x_t: exact for members, wrong for anyone else."""

    def __init__(self, members: np.ndarray, schedule):
        super().__init__()
        self.members = torch.from_numpy(members)
        self.abar = schedule.alpha_bars
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t, labels, demo, demo_mask):
        a = self.abar[t].reshape(-1, 1, 1)
        cand = a.sqrt()[:, None] * self.members[None]  # (B, M, C, L)
        nearest = ((x_t[:, None] - cand) ** 2).flatten(2).sum(-1).argmin(1)
        x0 = self.members[nearest]
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def test_memorised_records_score_as_members(tiny):
    _, sched, cfg = tiny
    members, holdout = _inputs(cfg, 12, 1), _inputs(cfg, 12, 2)
    net = _MemorisingDenoiser(members[0], sched)
    mcfg = MIAConfig(timesteps=(5, 20), n_noise=1)
    e_m = denoising_errors(net, sched, cfg, *members, mcfg)
    e_h = denoising_errors(net, sched, cfg, *holdout, mcfg)
    assert e_m.max() < 1e-6 < e_h.min()
    assert attack_metrics(-e_m, -e_h)["auc"] == 1.0
