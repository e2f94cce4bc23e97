"""One Opacus DP-SGD step on the tiny denoiser: per-sample gradients for every parameter."""

import warnings

import pytest
import torch

from fedecg.device import torch_threads
from sssd.config import model_preset
from sssd.diffusion import Schedule
from sssd.losses import diffusion_loss
from sssd.model import SSSDDenoiser, unwrap

opacus = pytest.importorskip("opacus")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def _data(n=4, length=200):
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(
        torch.randn(n, 8, length, generator=g), torch.zeros(n, 71), torch.zeros(n, 4), torch.ones(n, 4)
    )


@pytest.mark.parametrize("checkpoint_blocks", [False, True])
def test_private_step_has_per_sample_grads_and_plain_state_dict(checkpoint_blocks):
    from opacus import PrivacyEngine

    from sssd.dp import register_grad_samplers

    register_grad_samplers()
    # activation checkpointing must switch itself off under Opacus (its hooks cannot follow re-runs)
    cfg = model_preset("tiny", seq_len=200, checkpoint_blocks=checkpoint_blocks)
    model, sched = SSSDDenoiser(cfg), Schedule.from_config(cfg)
    keys = list(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = torch.utils.data.DataLoader(_data(), batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pmodel, popt, ploader = PrivacyEngine().make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=0.5,
            max_grad_norm=1.0,
            poisson_sampling=False,
        )
        x, labels, demo, mask = next(iter(ploader))
        loss, _ = diffusion_loss(pmodel, sched, x, labels, demo, mask, cfg.loss, torch.Generator().manual_seed(1))
        loss.backward()
    for name, p in pmodel.named_parameters():
        assert p.grad_sample is not None, name
        assert p.grad_sample.shape == (4, *p.shape), name
    popt.step()
    plain = unwrap(pmodel)
    assert plain is model
    assert list(pmodel._module.state_dict()) == keys and list(plain.state_dict()) == keys
    after = plain.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in keys)


def _per_sample_grads(force_functorch: bool) -> dict[str, torch.Tensor]:
    from opacus.grad_sample import GradSampleModule

    from sssd.dp import register_grad_samplers

    register_grad_samplers()
    cfg = model_preset("tiny", seq_len=100)
    model = SSSDDenoiser(cfg)
    with torch.no_grad():
        model.zero_conv.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    gsm = GradSampleModule(model, force_functorch=force_functorch)
    x, labels, demo, mask = _data(3, 100).tensors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = gsm(x, torch.tensor([1, 50, 150]), labels, demo, mask)
        out.pow(2).sum().backward()
    return {n: p.grad_sample.clone() for n, p in gsm.named_parameters()}


def test_registered_s4_sampler_agrees_with_functorch():
    exact = _per_sample_grads(force_functorch=False)
    reference = _per_sample_grads(force_functorch=True)
    s4_keys = [k for k in exact if ".conv." in k and "s4_" in k]
    assert len(s4_keys) == 2 * 2 * 5  # 2 blocks x 2 S4 layers x (log_dt, log_A_real, A_imag, C, D)
    for k in exact:
        assert torch.allclose(exact[k], reference[k], atol=1e-5, rtol=1e-3), k
