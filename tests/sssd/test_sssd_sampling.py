import pytest
import torch

from fedecg.device import torch_threads
from ptbxl.signals import derive_12_leads
from sssd.config import model_preset
from sssd.diffusion import Schedule
from sssd.model import SSSDDenoiser
from sssd.sampling import ddim_timesteps, resolve_precision
from sssd.sampling import sample as sample_any_precision


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def sample(*args, **kwargs):
    """Exact comparisons in these tests need fp32 (the default "auto" is bf16 on CPUs with native bf16)."""
    return sample_any_precision(*args, **{"precision": "fp32", **kwargs})


@pytest.fixture(scope="module")
def model():
    cfg = model_preset("tiny", seq_len=200, T=50, data_scale=0.5)
    m = SSSDDenoiser(cfg)
    with torch.no_grad():  # non-trivial predictions (a fresh model outputs exact zeros)
        m.zero_conv.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
    return m


def _cond(b=3):
    labels = torch.zeros(b, 71)
    labels[:, 5] = 1
    return labels, torch.zeros(b, 4), torch.tensor([[1.0, 1.0, 0.0, 0.0]] * b)


def test_ddim_timesteps():
    assert ddim_timesteps(200, 50)[0] == 0 and ddim_timesteps(200, 50)[-1] == 199
    assert len(ddim_timesteps(200, 50)) == 50
    assert ddim_timesteps(200, 500) == list(range(200))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_shape_units_and_same_seed_same_samples(model, sampler):
    sched = Schedule.from_config(model.cfg)
    kw = dict(sampler=sampler, steps=10, eta=0.5)
    a = sample(model, sched, *_cond(), generator=torch.Generator().manual_seed(7), **kw)
    b = sample(model, sched, *_cond(), generator=torch.Generator().manual_seed(7), **kw)
    c = sample(model, sched, *_cond(), generator=torch.Generator().manual_seed(8), **kw)
    assert a.shape == (3, 12, 200) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    x8 = sample(model, sched, *_cond(), generator=torch.Generator().manual_seed(7), return_model_view=True, **kw)
    assert torch.allclose(derive_12_leads(x8), a)


def test_ddim_with_all_steps_and_eta_one_equals_ddpm(model):
    sched = Schedule.from_config(model.cfg)
    ddpm = sample(model, sched, *_cond(), sampler="ddpm", generator=torch.Generator().manual_seed(3))
    ddim = sample(
        model,
        sched,
        *_cond(),
        sampler="ddim",
        steps=sched.T,
        eta=1.0,
        generator=torch.Generator().manual_seed(3),
    )
    ddim_eta0 = sample(
        model,
        sched,
        *_cond(),
        sampler="ddim",
        steps=sched.T,
        eta=0.0,
        generator=torch.Generator().manual_seed(3),
    )
    scale = ddpm.abs().max()
    assert torch.allclose(ddim, ddpm, atol=1e-4 * scale, rtol=1e-4)
    assert not torch.allclose(ddim_eta0, ddpm, atol=1e-2 * scale)


def test_guidance_and_partial_conditioning(model):
    sched = Schedule.from_config(model.cfg)
    labels, demo, mask = _cond()
    kw = dict(sampler="ddim", steps=5)
    cond = sample(model, sched, labels, demo, mask, generator=torch.Generator().manual_seed(1), **kw)
    guided = sample(model, sched, labels, demo, mask, guidance=3.0, generator=torch.Generator().manual_seed(1), **kw)
    uncond_g0 = sample(model, sched, labels, demo, mask, guidance=0.0, generator=torch.Generator().manual_seed(1), **kw)
    uncond = sample(model, sched, batch_size=3, generator=torch.Generator().manual_seed(1), **kw)
    assert not torch.allclose(cond, guided)
    assert torch.allclose(uncond_g0, uncond, atol=1e-5)


def test_bf16_precision_is_close_to_fp32(model):
    sched = Schedule.from_config(model.cfg)
    kw = dict(sampler="ddim", steps=5, generator=None)
    a = sample(model, sched, *_cond(), precision="fp32", **{**kw, "generator": torch.Generator().manual_seed(2)})
    b = sample(model, sched, *_cond(), precision="bf16", **{**kw, "generator": torch.Generator().manual_seed(2)})
    rel = (a - b).norm() / a.norm()
    assert rel < 0.05


def test_sampling_restores_training_mode(model):
    model.train()
    sample(model, Schedule.from_config(model.cfg), batch_size=1, steps=2, generator=torch.Generator())
    assert model.training


def test_resolve_precision():
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(ValueError):
        resolve_precision("fp8", torch.device("cpu"))
