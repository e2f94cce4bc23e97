"""The same code on CUDA: one tiny training step (bf16 autocast) and one sampling call per sampler.

Marked ``cuda``; skipped with a reason on machines without a CUDA device (the default here)."""

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (torch.cuda)"),
]


def test_train_step_and_sampling_on_cuda():
    from fedecg.device import autocast, choose_device
    from sssd.config import model_preset
    from sssd.diffusion import Schedule
    from sssd.losses import diffusion_loss
    from sssd.model import SSSDDenoiser
    from sssd.sampling import sample

    dev = choose_device("cuda")
    cfg = model_preset("tiny", seq_len=200, T=50)
    model = SSSDDenoiser(cfg).to(dev)
    sched = Schedule.from_config(cfg, dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = (0.3 * torch.randn(4, cfg.in_channels, cfg.seq_len, generator=g)).pin_memory().to(dev, non_blocking=True)
    labels = torch.zeros(4, cfg.num_labels, device=dev)
    demo, mask = torch.zeros(4, cfg.num_demographics, device=dev), torch.ones(4, cfg.num_demographics, device=dev)
    before = [p.detach().clone() for p in model.parameters()]
    with autocast(dev, dtype=torch.bfloat16):
        loss, _ = diffusion_loss(model, sched, x, labels, demo, mask, cfg.loss, g)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss.device.type == "cuda"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    for sampler in ("ddpm", "ddim", "dpmpp2m"):
        out = sample(model, sched, labels[:2], demo[:2], mask[:2], sampler=sampler, steps=5, guidance=2.0,
                     generator=torch.Generator().manual_seed(1))
        assert out.shape == (2, 12, cfg.seq_len) and out.device.type == "cuda" and torch.isfinite(out).all()
    # seeded: the same ECGs twice from a CPU generator
    a = sample(model, sched, batch_size=2, sampler="dpmpp2m", steps=5, generator=torch.Generator().manual_seed(3))
    b = sample(model, sched, batch_size=2, sampler="dpmpp2m", steps=5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b)
