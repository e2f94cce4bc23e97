"""DP-SGD on this machine: the cost of a private training step against the plain one, and how far bf16 autocast
moves the per-sample gradients that Opacus clips.

Two measurements, numbers only (nothing is asserted):

1. **Step time** (``dp_step_s`` vs ``plain_step_s``, median wall time of ``repeats`` steps after ``warmup``, plus
   CPU seconds per thread): the same model, batch and precision as ``fedecg bench model``; the private step is
   Opacus' ``make_private`` (per-sample gradients through our registered S4D rule, per-sample clipping, Gaussian
   noise) exactly as the sites train, with a fixed logical batch (no Poisson draw, so both steps see B examples).
2. **bf16 per-sample gradient error**: one batch, the same (t, noise) draws, per-sample gradients once under fp32
   and once under bf16 autocast (the S4 FFTs stay fp32 in both). Reported: the relative L2 error of each
   example's flattened gradient (median / max), the ratio of per-example norms (what decides the clipping factor),
   the relative error of the clipped sum at clip C = the fp32 median norm, and that error as a fraction of the
   norm of the Gaussian noise DP-SGD adds to the same sum (sigma C sqrt(d), sigma = 1): a fraction far below 1
   means the precision error is buried in the privacy noise. The guarantee itself does not depend on precision:
   clipping and noise act on whatever per-sample gradients were computed.

    python bench/bench_dp_step.py [--preset small | --blocks 4 --channels 256] [--batch 8] [--threads 2]
        [--precision fp32,bf16] [--init builtin:dipole-small] [--dataset DIR] [--json]

``--init`` loads trained weights (the built-in base; it must match the model) so that the gradients are those of
a fine-tuning run, not of a fresh network; ``--dataset`` takes the first B records of a PTB-XL-layout folder
instead of random ECG-shaped noise. The last line with --json is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == "__main__":  # before torch loads (below): libgomp reads OMP_WAIT_POLICY only then
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from opacus import GradSampleModule, PrivacyEngine  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from bench.bench_model import _model_config, _setup, _train_step, resolve_preset  # noqa: E402
from ptbxl.dataset import load_arrays  # noqa: E402
from sssd.checkpoint import build_model  # noqa: E402
from sssd.dp import average_draws, register_grad_samplers  # noqa: E402
from sssd.losses import diffusion_loss  # noqa: E402
from sssd.pretrained import load_base  # noqa: E402


def _batch_from(dataset: str | None, batch: int, default):
    """(x, labels, demo, mask) of the first ``batch`` records of ``dataset`` (float32 tensors), or ``default``."""
    if not dataset:
        return default
    arrays = load_arrays(dataset).subset(range(batch))
    return tuple(torch.tensor(np.asarray(a[:batch]), dtype=torch.float32)
                 for a in (arrays.x, arrays.labels, arrays.demo, arrays.demo_mask))


def _load_init(model, init: str | None, cfg):
    """(model, description): ``model`` itself, or the base ``init`` names built by the one model builder."""
    if not init:
        return model, "random"
    base = load_base(init, cfg)
    return build_model(cfg, base.state), f"{init} ({base.weights})"


def _private(model, batch: int, data, lr: float = 2e-4, sigma: float = 1.0, clip: float = 1.0):
    """(GradSampleModule, DPOptimizer) over a loader that yields ``data`` as one batch of ``batch``."""
    register_grad_samplers()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(*data), batch_size=batch)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(secure_mode=False)
        gsm, dp_opt, _ = engine.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=sigma,
                                             max_grad_norm=clip, poisson_sampling=False)
    return gsm, dp_opt


def _dp_train_step(model, sched, opt, g, cfg, data, amp: bool, batch: int) -> None:
    """What a site's DP step does: loss (bf16 autocast if ``amp``), backward, per-sample gradients to float32
    (``sssd.dp.average_draws``, K = 1), clip + noise + Adam (the DPOptimizer)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        loss, _ = diffusion_loss(model, sched, *data, cfg.loss, g)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    average_draws(model, batch, 1)
    opt.step()


def time_steps(preset, blocks, channels, batch: int, threads: int, precision: str, warmup: int, repeats: int,
               dataset: str | None = None) -> dict[str, Any]:
    """Median wall / CPU-per-thread seconds of the plain and the DP-SGD step (same model size, batch, precision)."""
    torch.set_num_threads(threads)
    dev = torch.device("cpu")
    amp = precision == "bf16"
    out: dict[str, Any] = {}
    for kind in ("plain", "dp"):
        cfg, model, sched, opt, g, data = _setup(preset, blocks, channels, {"checkpoint_blocks": False}, batch, dev)
        data = _batch_from(dataset, batch, data)
        if kind == "dp":
            model, opt = _private(model, batch, data)
        walls, cpus = [], []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for i in range(warmup + repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                if kind == "dp":
                    _dp_train_step(model, sched, opt, g, cfg, data, amp, batch)
                else:
                    _train_step(model, sched, opt, g, cfg, data, amp, dev)
                if i >= warmup:
                    walls.append(time.perf_counter() - w0)
                    cpus.append((time.process_time() - c0) / threads)
        out[f"{kind}_step_s"] = round(statistics.median(walls), 4)
        out[f"{kind}_step_cpu_s"] = round(statistics.median(cpus), 4)
    out["dp_over_plain"] = round(out["dp_step_s"] / out["plain_step_s"], 3)
    out["dp_over_plain_cpu"] = round(out["dp_step_cpu_s"] / out["plain_step_cpu_s"], 3)
    return out


def per_sample_gradients(model, sched, cfg, data, t, noise, amp: bool):
    """Per-example gradients (B x d, float32) of the diffusion loss under Opacus' hooks, with fixed (t, noise)."""
    register_grad_samplers()
    gsm = GradSampleModule(model, loss_reduction="mean")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss, _ = diffusion_loss(gsm, sched, *data, cfg.loss, t=t, noise=noise, cond_dropout=False)
        loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([p.grad_sample.detach().float().reshape(p.grad_sample.shape[0], -1) for p in params], dim=1)
    for p in params:
        p.grad_sample = None
        p.grad = None
    gsm._close()
    return flat


def gradient_error(preset, blocks, channels, batch: int, threads: int, init: str | None, dataset: str | None,
                   seed: int = 0) -> dict[str, Any]:
    """fp32 vs bf16-autocast per-sample gradients of one batch (see the module docstring)."""
    torch.set_num_threads(threads)
    cfg, model, sched, _, g, data = _setup(preset, blocks, channels, {"checkpoint_blocks": False}, batch,
                                           torch.device("cpu"))
    model, weights = _load_init(model, init, cfg)
    data = _batch_from(dataset, batch, data)
    if weights == "random":  # a fresh network's zero output layer gives mostly zero gradients: perturb it
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "zero_conv" in name:
                    p.normal_(0, 0.05, generator=g)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, sched.T, (batch,), generator=gen)
    noise = torch.randn(data[0].shape, generator=gen)
    g32 = per_sample_gradients(model, sched, cfg, data, t, noise, amp=False)
    g16 = per_sample_gradients(model, sched, cfg, data, t, noise, amp=True)
    n32, n16 = g32.norm(dim=1), g16.norm(dim=1)
    rel = (g16 - g32).norm(dim=1) / n32.clamp_min(1e-30)
    clip = float(n32.median())

    def clipped_sum(gr, norms):
        return (gr * (clip / norms.clamp_min(1e-30)).clamp(max=1.0)[:, None]).sum(0)

    s32, s16 = clipped_sum(g32, n32), clipped_sum(g16, n16)
    d = g32.shape[1]
    noise_norm = 1.0 * clip * d ** 0.5  # E||N(0, (sigma C)^2 I_d)|| ~ sigma C sqrt(d), sigma = 1
    diff = float((s16 - s32).norm())
    return {"weights": weights, "data": dataset or "random ECG-shaped noise", "params": d,
            "per_sample_rel_err_median": float(rel.median()), "per_sample_rel_err_max": float(rel.max()),
            "norm_ratio_min": float((n16 / n32).min()), "norm_ratio_max": float((n16 / n32).max()),
            "clip_at_fp32_median_norm": clip,
            "clipped_sum_rel_err": diff / max(float(s32.norm()), 1e-30),
            "clipped_sum_err_over_noise_norm": diff / noise_norm}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="tiny, small or paper (default: small, or paper with --blocks)")
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32,bf16", help="step-time precisions, comma-separated")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--init", default=None, help="weights for the gradient-error study, e.g. builtin:dipole-small")
    ap.add_argument("--dataset", default=None, help="PTB-XL-layout folder: use its first --batch records")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    preset = args.preset or ("small" if args.blocks is None and args.channels is None else None)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        raise SystemExit(f"bench_dp_step: --precision takes fp32 and/or bf16, got {', '.join(bad)}")
    if args.dataset and not (Path(args.dataset) / "ptbxl_database.csv").is_file():
        raise SystemExit(f"bench_dp_step: --dataset {args.dataset} has no ptbxl_database.csv")
    cfg = _model_config(preset, args.blocks, args.channels, None)
    doc: dict[str, Any] = {"benchmark": "dp_step", "preset": resolve_preset(preset, args.blocks, args.channels),
                           "num_blocks": cfg.num_blocks, "res_channels": cfg.res_channels, "batch": args.batch,
                           "threads": args.threads, "machine": {"platform": platform.platform(),
                                                                "cpu_count": os.cpu_count()}}
    t0 = time.perf_counter()
    if not args.skip_timing:
        doc["timing"] = {p: time_steps(preset, args.blocks, args.channels, args.batch, args.threads, p, args.warmup,
                                       args.repeats, args.dataset) for p in precisions}
        for p, r in doc["timing"].items():
            print(f"{p}: plain {r['plain_step_s']:.2f} s ({r['plain_step_cpu_s']:.2f} CPU-s/thread), DP-SGD "
                  f"{r['dp_step_s']:.2f} s ({r['dp_step_cpu_s']:.2f}): DP / plain = {r['dp_over_plain']:.2f} wall, "
                  f"{r['dp_over_plain_cpu']:.2f} CPU", flush=True)
    err = gradient_error(preset, args.blocks, args.channels, args.batch, args.threads, args.init, args.dataset)
    doc["bf16_grad_error"] = err
    print(f"bf16 vs fp32 per-sample gradients ({err['weights']}, {err['params']} parameters): relative L2 error "
          f"median {err['per_sample_rel_err_median']:.2e}, max {err['per_sample_rel_err_max']:.2e}; norm ratio "
          f"{err['norm_ratio_min']:.4f}-{err['norm_ratio_max']:.4f}; clipped sum {err['clipped_sum_rel_err']:.2e} "
          f"relative, {err['clipped_sum_err_over_noise_norm']:.2e} of the DP noise norm (sigma 1)")
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(doc))


if __name__ == "__main__":
    main()
