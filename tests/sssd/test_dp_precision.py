"""DP-SGD under bf16 autocast: the per-sample gradients Opacus clips are float32, so a clipped gradient's norm
is at most max_grad_norm (to float32 rounding) and the accounted sensitivity holds."""

from __future__ import annotations

import warnings

import pytest
import torch


def _per_sample_grads(seed: int, batch: int = 1):
    from opacus import GradSampleModule

    from bench.bench_model import _setup
    from sssd.dp import register_grad_samplers
    from sssd.losses import diffusion_loss

    register_grad_samplers()
    cfg, model, sched, _, g, data = _setup("tiny", None, None, None, batch, torch.device("cpu"))
    w = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a non-zero output layer (gradients reach every block), different per seed
        for name, p in model.named_parameters():
            if "zero_conv" in name:
                p.normal_(0, 0.1, generator=w)
    gsm = GradSampleModule(model, loss_reduction="mean")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = diffusion_loss(gsm, sched, *data, cfg.loss, g)
        loss.backward()
    return gsm


def test_bf16_autocast_leaves_bf16_grad_samples_that_average_draws_makes_float32():
    from sssd.dp import average_draws

    gsm = _per_sample_grads(0, batch=2)
    dtypes = {p.grad_sample.dtype for p in gsm.parameters() if p.requires_grad}
    assert torch.bfloat16 in dtypes  # what Opacus hands over under autocast (the reason for the cast)
    average_draws(gsm, 2, 1)
    assert {p.grad_sample.dtype for p in gsm.parameters() if p.requires_grad} == {torch.float32}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clipped_gradient_norm_never_exceeds_max_grad_norm_under_bf16(seed):
    """One example (B = 1): Opacus' clipped sum is that example's clipped gradient; with the float32 cast its norm
    is <= C (1 + 1e-6) for a clip far below the raw norm (left in bf16 it came out at C x 1.0002 here)."""
    from opacus.optimizers import DPOptimizer

    from sssd.dp import average_draws

    gsm = _per_sample_grads(seed)
    average_draws(gsm, 1, 1)
    params = [p for p in gsm.parameters() if p.requires_grad]
    raw = torch.cat([p.grad_sample.reshape(-1) for p in params]).norm()
    clip = float(raw) / 7.0
    opt = DPOptimizer(torch.optim.SGD(params, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
                      expected_batch_size=1)
    opt.clip_and_accumulate()
    clipped = torch.cat([p.summed_grad.reshape(-1) for p in params])
    assert clipped.dtype == torch.float32
    assert float(clipped.norm()) <= clip * (1 + 1e-6)
    assert float(clipped.norm()) >= clip * (1 - 1e-4)  # it was clipped, not zeroed


def test_bench_dp_step_reports_timing_and_gradient_error(capsys):
    import json
    import math

    from bench.bench_dp_step import main

    main(["--preset", "tiny", "--batch", "4", "--precision", "bf16", "--warmup", "0", "--repeats", "1", "--json"])
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    t = doc["timing"]["bf16"]
    assert t["dp_step_s"] > 0 and t["plain_step_s"] > 0 and t["dp_over_plain"] == pytest.approx(
        t["dp_step_s"] / t["plain_step_s"], rel=1e-2)
    err = doc["bf16_grad_error"]
    assert 0 < err["per_sample_rel_err_median"] <= err["per_sample_rel_err_max"] < 1
    assert math.isfinite(err["clipped_sum_err_over_noise_norm"])
    with pytest.raises(SystemExit, match="fp16"):
        main(["--precision", "fp16"])
