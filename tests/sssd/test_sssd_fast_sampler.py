"""DPM-Solver++(2M) in sssd/sampling.py against closed-form maths.

For Gaussian data x0 ~ N(mu, s^2 I) the optimal noise prediction is exact: x_t ~ N(a_t mu, v_t I) with
a_t = sqrt(abar_t), v_t = a_t^2 s^2 + 1 - abar_t, and eps*(x_t, t) = sqrt(1 - abar_t) (x_t - a_t mu) / v_t. The
probability-flow ODE keeps the standardised coordinate z = (x_t - a_t mu) / sqrt(v_t) fixed, so from x_T its
exact solution at step 0 is a_0 mu + sqrt(v_0) z; every sampler here ends with the same map from step 0 to the
clean end (x0 = D(x, 0)), so the exact endpoint is D of that state, and the remaining error is the solver's.
"""

import math

import pytest
import torch
from torch import nn

from fedecg.device import torch_threads
from sssd.config import model_preset
from sssd.diffusion import Schedule
from sssd.sampling import (
    SAMPLERS,
    _ddim_loop,
    ddim_timesteps,
    dpm_timesteps,
    dpmpp2m_coefficients,
    dpmpp2m_loop,
    sample,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def _gaussian(sched: Schedule, mu: torch.Tensor, s: torch.Tensor):
    """(eps oracle, exact ODE endpoint from x_T) for x0 ~ N(mu, diag(s^2)) (float64 maths)."""
    abar = sched.alpha_bars.double()

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        a, var = abar[t].sqrt(), abar[t] * s**2 + 1 - abar[t]
        return ((1 - abar[t]).sqrt() * (x.double() - a * mu) / var).float()

    def exact(x_T: torch.Tensor) -> torch.Tensor:
        a_T, v_T = abar[-1].sqrt(), abar[-1] * s**2 + 1 - abar[-1]
        z = (x_T.double() - a_T * mu) / v_T.sqrt()
        a0 = abar[0].sqrt()
        x0 = a0 * mu + (abar[0] * s**2 + 1 - abar[0]).sqrt() * z
        return (x0 - (1 - abar[0]).sqrt() * eps(x0.float(), 0).double()) / a0

    return eps, exact


@pytest.fixture(scope="module")
def problem():
    """8 channels with data scales from 0.05 to 1 (the ECG has both: smooth detail and large QRS)."""
    sched = Schedule.linear(200)
    mu = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).view(1, 8, 1)
    s = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0], dtype=torch.float64).view(1, 8, 1)
    eps, exact = _gaussian(sched, mu, s)
    x_T = torch.randn(64, 8, 32, generator=torch.Generator().manual_seed(0))
    return sched, eps, exact(x_T), x_T, mu, s


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean().sqrt())


def _errors(problem, k: int) -> tuple[float, float]:
    sched, eps, ref, x_T, _, _ = problem
    dpm = dpmpp2m_loop(x_T.clone(), sched, eps, k)
    ddim = _ddim_loop(x_T.clone(), sched, eps, k, 0.0, None, CPU)
    return _rms(dpm, ref), _rms(ddim, ref)


def test_twenty_steps_land_much_closer_to_the_exact_ode_solution_than_ddim(problem):
    dpm, ddim = _errors(problem, 20)
    assert dpm < ddim / 5, (dpm, ddim)
    assert dpm < 0.01


def test_error_falls_at_second_order_while_ddim_falls_at_first(problem):
    errs = {k: _errors(problem, k) for k in (10, 20, 40)}
    dpm_order = math.log2(errs[10][0] / errs[20][0]), math.log2(errs[20][0] / errs[40][0])
    ddim_order = math.log2(errs[10][1] / errs[20][1]), math.log2(errs[20][1] / errs[40][1])
    assert min(dpm_order) > 1.5, (errs, dpm_order)  # ~2 (second order), DDIM ~1
    assert all(0.6 < o < 1.4 for o in ddim_order), (errs, ddim_order)
    assert errs[40][0] < errs[20][0] < errs[10][0]


def test_samples_have_the_data_distribution(problem):
    sched, eps, _, _, mu, s = problem
    x_T = torch.randn(2000, 8, 4, generator=torch.Generator().manual_seed(1))
    x = dpmpp2m_loop(x_T, sched, eps, 20).double()
    # x_T ~ N(0, I), not the model's q(x_T) = N(a_T mu, v_T): the ODE maps it to mu + s (x_T - a_T mu)/sqrt(v_T)
    abar_T = sched.alpha_bars.double()[-1]
    v_T = abar_T * s**2 + 1 - abar_T
    want_mean = (mu - s * abar_T.sqrt() * mu / v_T.sqrt()).view(8)
    want_std = (s / v_T.sqrt()).view(8)
    got_mean, got_std = x.mean(dim=(0, 2)), x.std(dim=(0, 2))
    assert torch.allclose(got_mean, want_mean, atol=0.03 * float(s.max()))
    assert torch.allclose(got_std, want_std, rtol=0.05)


def test_first_order_everywhere_is_ddim_eta0(problem):
    sched, eps, _, x_T, _, _ = problem
    # with two steps both are first order (no history at the first, h = inf at the last) on the same grid
    assert dpm_timesteps(sched, 2) == ddim_timesteps(sched.T, 2)
    a = dpmpp2m_loop(x_T.clone(), sched, eps, 2)
    b = _ddim_loop(x_T.clone(), sched, eps, 2, 0.0, None, CPU)
    assert torch.allclose(a, b, atol=1e-5)


def test_coefficients_follow_the_update_equations():
    sched = Schedule.linear(200)
    coefs = dpmpp2m_coefficients(sched, 10)
    grid = dpm_timesteps(sched, 10)[::-1]
    assert [c[0] for c in coefs] == grid
    assert coefs[0][3] is None and coefs[-1] == (0, 0.0, 1.0, None)  # first order at both ends
    abar = sched.alpha_bars.double()
    lam = [0.5 * math.log(float(abar[t] / (1 - abar[t]))) for t in grid]
    for i in range(1, len(grid) - 1):
        t, ratio, coef_d, r = coefs[i]
        h, h_prev = lam[i + 1] - lam[i], lam[i] - lam[i - 1]
        a_next, s_next, s_i = (float(abar[grid[i + 1]].sqrt()), float((1 - abar[grid[i + 1]]).sqrt()),
                               float((1 - abar[t]).sqrt()))
        assert math.isclose(ratio, s_next / s_i, rel_tol=1e-12)
        assert math.isclose(coef_d, a_next * (1 - math.exp(-h)), rel_tol=1e-12)
        assert math.isclose(r, h_prev / h, rel_tol=1e-12)


@pytest.mark.parametrize("steps", [2, 3, 5, 10, 20, 25, 50, 100, 199, 200])
def test_logsnr_grid_has_exactly_steps_distinct_steps_from_zero_to_T(steps):
    sched = Schedule.linear(200)
    grid = dpm_timesteps(sched, steps)
    assert len(grid) == steps and grid[0] == 0 and grid[-1] == 199
    assert all(a < b for a, b in zip(grid, grid[1:]))


def _diffusers_dpmpp2m(sched: Schedule, steps: int, algorithm_type: str):
    """diffusers' DPMSolverMultistepScheduler set up as our DPM-Solver++(2M) (same betas, midpoint 2nd order,
    first order on the last step, ends at sigma 0), on our log-SNR grid of ``steps`` steps; skips the test
    without diffusers."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=len(sched.betas), trained_betas=sched.betas.double().numpy(),
        algorithm_type=algorithm_type, solver_order=2, solver_type="midpoint", lower_order_final=True,
        final_sigmas_type="zero", prediction_type="epsilon")
    ref.set_timesteps(timesteps=dpm_timesteps(sched, steps)[::-1])
    return ref


def test_matches_diffusers_dpmsolver_multistep_scheduler(problem):
    sched, eps, _, x_T, _, _ = problem
    for k in (3, 10, 20):
        ref = _diffusers_dpmpp2m(sched, k, "dpmsolver++")
        x = x_T.clone()
        for t in ref.timesteps:
            x = ref.step(eps(x, int(t)), t, x).prev_sample
        assert torch.allclose(dpmpp2m_loop(x_T.clone(), sched, eps, k), x, atol=1e-5)


# ---- through sample(): a stand-in "model" whose output is the exact eps of conditional Gaussian data ----


class OracleNet(nn.Module):
    """eps*(x_t, t) for x0 ~ N(mu(labels), s^2): mu = 0.8 (label 0) - 0.4 (label 1); unknown labels -> 0."""

    def __init__(self, T: int = 200, seq_len: int = 200):
        super().__init__()
        self.cfg = model_preset("tiny", seq_len=seq_len, T=T)
        self.scale = nn.Parameter(torch.tensor(0.4))
        self.abar = Schedule.from_config(self.cfg).alpha_bars.double()
        self.calls = 0

    def forward(self, x, t, labels, demo, demo_mask):
        self.calls += 1
        abar = self.abar[t].view(-1, 1, 1)
        mu = (0.8 * labels[:, :1] - 0.4 * labels[:, 1:2]).double().view(-1, 1, 1)
        s = self.scale.double()
        var = abar * s**2 + 1 - abar
        return ((1 - abar).sqrt() * (x.double() - abar.sqrt() * mu) / var).float()


def _labels(b=4):
    labels = torch.zeros(b, 71)
    labels[: b // 2, 0] = 1
    labels[b // 2 :, 1] = 1
    return labels


def test_sample_shapes_determinism_and_calls():
    net = OracleNet()
    sched = Schedule.from_config(net.cfg)
    kw = dict(sampler="dpmpp2m", steps=12, precision="fp32")
    a = sample(net, sched, _labels(), generator=torch.Generator().manual_seed(5), **kw)
    assert net.calls == 12
    b = sample(net, sched, _labels(), generator=torch.Generator().manual_seed(5), **kw)
    c = sample(net, sched, _labels(), generator=torch.Generator().manual_seed(6), **kw)
    assert a.shape == (4, 12, 200) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert {"dpmpp2m", "dpmpp2m-sde"} <= set(SAMPLERS)


def test_sample_uses_guided_eps():
    net = OracleNet()
    sched = Schedule.from_config(net.cfg)
    labels = _labels()
    g = 2.5
    got = sample(net, sched, labels, sampler="dpmpp2m", steps=15, guidance=g, precision="fp32",
                 generator=torch.Generator().manual_seed(2), return_model_view=True)
    zero = torch.zeros_like(labels)

    def guided(x, t):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        e_c, e_u = net(x, tt, labels, None, None), net(x, tt, zero, None, None)
        return e_u + g * (e_c - e_u)

    x_T = torch.randn(4, 8, 200, generator=torch.Generator().manual_seed(2))
    want = dpmpp2m_loop(x_T, sched, guided, 15)
    assert torch.allclose(got, want, atol=1e-5)
    uncond = sample(net, sched, labels, sampler="dpmpp2m", steps=15, guidance=0.0, precision="fp32",
                    generator=torch.Generator().manual_seed(2))
    uncond2 = sample(net, sched, batch_size=4, sampler="dpmpp2m", steps=15, precision="fp32",
                     generator=torch.Generator().manual_seed(2))
    assert torch.allclose(uncond, uncond2, atol=1e-5)
    # the guided samples move away from the unconditional ones in the direction of the label means
    cond = sample(net, sched, labels, sampler="dpmpp2m", steps=15, precision="fp32",
                  generator=torch.Generator().manual_seed(2), return_model_view=True)
    assert (got[:2].mean() - cond[:2].mean()) > 0 > (got[2:].mean() - cond[2:].mean())


@pytest.mark.parametrize("steps", [0, 1, 201, -3, 2.5, True, "20"])
def test_refuses_bad_step_counts(steps):
    net = OracleNet()
    sched = Schedule.from_config(net.cfg)
    with pytest.raises(ValueError, match=r"dpmpp2m needs an integer number of steps in 2\.\.200"):
        sample(net, sched, batch_size=1, sampler="dpmpp2m", steps=steps)
    assert net.calls == 0


def test_unknown_sampler_names_the_choices():
    net = OracleNet()
    with pytest.raises(ValueError, match="ddpm, ddim, dpmpp2m, dpmpp2m-sde"):
        sample(net, Schedule.from_config(net.cfg), batch_size=1, sampler="unipc")


def test_a_real_denoiser_samples_with_dpmpp2m():
    from sssd.model import SSSDDenoiser

    cfg = model_preset("tiny", seq_len=200, T=50)
    m = SSSDDenoiser(cfg)
    with torch.no_grad():
        m.zero_conv.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
    x = sample(m, Schedule.from_config(cfg), _labels(2), sampler="dpmpp2m", steps=5,
               generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 12, 200) and torch.isfinite(x).all()


def test_logsnr_steps_beat_evenly_spaced_steps(problem):
    """Why ``dpm_timesteps``: on DDIM's evenly spaced steps the last lambda jump is huge and 2M loses its edge."""
    sched, eps, ref, x_T, _, _ = problem
    for k in (10, 20):
        logsnr = _rms(dpmpp2m_loop(x_T.clone(), sched, eps, k), ref)
        even = _rms(dpmpp2m_loop(x_T.clone(), sched, eps, k, timesteps=ddim_timesteps(sched.T, k)), ref)
        ddim = _rms(_ddim_loop(x_T.clone(), sched, eps, k, 0.0, None, CPU), ref)
        assert logsnr < even / 3, (k, logsnr, even)
        assert even > ddim / 2, (k, even, ddim)  # evenly spaced 2M is no real gain over DDIM


# ---- the SDE variant ----


def test_sde_first_order_is_ddim_eta1_with_the_same_noise(problem):
    sched, eps, _, x_T, _, _ = problem
    a = dpmpp2m_loop(x_T.clone(), sched, eps, 2, sde=True, generator=torch.Generator().manual_seed(5))
    b = _ddim_loop(x_T.clone(), sched, eps, 2, 1.0, torch.Generator().manual_seed(5), CPU)
    assert torch.allclose(a, b, atol=1e-5)


def test_sde_samples_the_data_distribution_where_ddim_eta1_underdisperses(problem):
    """From x_T ~ q(x_T) the exact reverse SDE gives exactly N(mu, s^2): compare per-channel mean and std."""
    sched, eps, _, _, mu, s = problem
    abar_T = sched.alpha_bars.double()[-1]
    gen = torch.Generator().manual_seed(3)
    n = torch.randn(4000, 8, 2, generator=gen, dtype=torch.float64)
    x_T = (abar_T.sqrt() * mu + (abar_T * s**2 + 1 - abar_T).sqrt() * n).float()
    sde = dpmpp2m_loop(x_T.clone(), sched, eps, 20, sde=True, generator=torch.Generator().manual_seed(4)).double()
    ddim1 = _ddim_loop(x_T.clone(), sched, eps, 20, 1.0, torch.Generator().manual_seed(4), CPU).double()
    ratio_sde = sde.std(dim=(0, 2)) / s.view(8)
    ratio_ddim = ddim1.std(dim=(0, 2)) / s.view(8)
    assert ((ratio_sde - 1).abs() < 0.05).all(), ratio_sde
    assert torch.allclose(sde.mean(dim=(0, 2)), mu.view(8), atol=0.02)
    assert ratio_ddim[0] < 0.8, ratio_ddim  # 20 DDIM eta=1 steps smooth away the small-variance detail


def test_sde_is_seeded_through_sample():
    net = OracleNet()
    sched = Schedule.from_config(net.cfg)
    kw = dict(sampler="dpmpp2m-sde", steps=8, precision="fp32")
    a = sample(net, sched, _labels(), generator=torch.Generator().manual_seed(5), **kw)
    b = sample(net, sched, _labels(), generator=torch.Generator().manual_seed(5), **kw)
    ode = sample(net, sched, _labels(), generator=torch.Generator().manual_seed(5), **{**kw, "sampler": "dpmpp2m"})
    assert torch.equal(a, b) and not torch.allclose(a, ode) and net.calls == 24
    with pytest.raises(ValueError, match="dpmpp2m-sde needs an integer number of steps"):
        sample(net, sched, batch_size=1, sampler="dpmpp2m-sde", steps=1)


def test_sde_matches_diffusers(problem):
    sched, eps, _, x_T, _, _ = problem
    for k in (3, 10, 20):
        ref = _diffusers_dpmpp2m(sched, k, "sde-dpmsolver++")
        gen, x = torch.Generator().manual_seed(9), x_T.clone()
        for t in ref.timesteps:  # our noise order: one z per step, drawn before the next step
            x = ref.step(eps(x, int(t)), t, x, variance_noise=torch.randn(x.shape, generator=gen)).prev_sample
        ours = dpmpp2m_loop(x_T.clone(), sched, eps, k, sde=True, generator=torch.Generator().manual_seed(9))
        assert torch.allclose(ours, x, atol=1e-5)
