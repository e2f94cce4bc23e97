import pytest
import torch

from fedecg.device import torch_threads
from sssd.config import model_preset
from sssd.diffusion import Schedule, posterior_mean, predict_x0, q_sample


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def test_linear_schedule_values():
    s = Schedule.from_config(model_preset("tiny"))
    assert s.T == 200
    assert torch.isclose(s.betas[0], torch.tensor(1e-4)) and torch.isclose(s.betas[-1], torch.tensor(0.02))
    assert torch.allclose(s.alpha_bars, torch.cumprod(1 - s.betas.double(), 0).float())
    assert s.alpha_bars_prev[0] == 1.0 and s.posterior_variance[0] == 0.0
    assert not isinstance(s, torch.nn.Module)


def test_q_sample_and_predict_x0_invert_each_other():
    s = Schedule.linear()
    x0, noise = torch.randn(4, 8, 50), torch.randn(4, 8, 50)
    t = torch.tensor([0, 10, 100, 199])
    xt = q_sample(s, x0, t, noise)
    assert torch.allclose(predict_x0(s, xt, t, noise), x0, atol=1e-4)
    abar = s.alpha_bars[199]
    assert torch.allclose(xt[3], abar.sqrt() * x0[3] + (1 - abar).sqrt() * noise[3])


def test_posterior_mean_matches_closed_form_with_true_x0():
    s = Schedule.linear()
    x0, noise = torch.randn(2, 8, 30), torch.randn(2, 8, 30)
    t = torch.tensor([5, 150])
    xt = q_sample(s, x0, t, noise)
    ab, abp, be, al = (Schedule.at(v.double(), t) for v in (s.alpha_bars, s.alpha_bars_prev, s.betas, s.alphas))
    mu = (abp.sqrt() * be / (1 - ab)) * x0.double() + (al.sqrt() * (1 - abp) / (1 - ab)) * xt.double()
    assert torch.allclose(posterior_mean(s, xt, t, noise).double(), mu, atol=1e-4)
