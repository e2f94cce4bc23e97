"""Benchmark the SSSD-MIDT denoiser on this machine: training step time, peak memory, sampling time.

One configuration per process, so peak resident memory (``ru_maxrss``) belongs to that configuration only:
``run_isolated(...)`` starts ``python -m bench.bench_model --json ...`` in a fresh subprocess.

Measured (batch B, 8 leads x 1000 samples, untrained weights, torch intra-op threads = ``threads``):
* ``train_step_s``: median wall time of ``repeats`` full steps (forward + backward + Adam) after
  ``warmup`` steps; ``train_step_cpu_s`` the matching process CPU time divided by the threads (on a
  shared, loaded CPU the wall time is inflated by other processes, the CPU time much less so);
* ``peak_mem_mb``: peak RSS of the process (model, optimiser, activations, allocator slack);
* with ``sample``: ``ddim50_s_per_ecg`` / ``ddpm200_s_per_ecg`` / ``fast_s_per_ecg``, wall time of one full
  sampling run at batch B divided by B (``fast`` = ``sssd.sampling.FAST_SAMPLER`` at its default
  ``FAST_STEPS``, both reported as ``fast_sampler`` / ``fast_steps``; with ``sample_steps`` = S > 0 one DDIM
  run of S steps is timed and all three are extrapolated linearly from its time per denoiser call, every
  sampler step being one call; ``sample_extrapolated`` says so); the ``*_cpu_s_per_ecg`` twins are process
  CPU time / threads.
* ``device``: ``cpu`` (default) or ``cuda[:i]`` (a clear FedECGError when CUDA is absent); on CUDA the clock is
  read after ``torch.cuda.synchronize()`` and ``cuda_peak_mem_mb`` is the allocator's peak.
* ``profile_train_step(...)`` (``--profile``): a ``torch.profiler`` table of one training step after warm-up,
  top ops by self CPU time.

Usage: ``python -m bench.bench_model --all`` (tiny, small, 4x256, paper), or ``fedecg bench model ...``.
Subprocesses get ``OMP_WAIT_POLICY=PASSIVE`` unless the caller set it (on a loaded machine spinning OpenMP
workers cost 3-5x in wall time); set it yourself when running one configuration directly.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from fedecg.device import choose_device
from fedecg.errors import FedECGError
from sssd.config import model_preset
from sssd.diffusion import Schedule
from sssd.losses import diffusion_loss
from sssd.model import SSSDDenoiser
from sssd.sampling import FAST_SAMPLER, FAST_STEPS, ddim_timesteps, resolve_precision
from sssd.sampling import sample as run_sampler  # measure() has a parameter named sample

CHECKPOINT_ABOVE_BLOCKS = 12

STANDARD_CONFIGS: tuple[dict[str, Any], ...] = (
    {"preset": "tiny"},
    {"preset": "small"},
    {"preset": "paper", "blocks": 4, "channels": 256},
    {"preset": "paper"},
)


def _model_config(preset: str | None, blocks: int | None, channels: int | None, overrides: dict | None):
    extra = dict(overrides or {})
    if blocks is not None:
        extra["num_blocks"] = blocks
        # activation checkpointing (on in the paper preset) only pays off for deep stacks
        extra.setdefault("checkpoint_blocks", blocks > CHECKPOINT_ABOVE_BLOCKS)
    if channels is not None:
        extra["res_channels"] = extra["skip_channels"] = channels
    return model_preset(resolve_preset(preset, blocks, channels), **extra)


def resolve_preset(preset: str | None, blocks: int | None, channels: int | None) -> str:
    """No preset: ``paper`` when blocks/channels are given (e.g. 4 x 256 = the paper layer), else ``tiny``."""
    if preset is not None:
        return preset
    return "paper" if blocks is not None or channels is not None else "tiny"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def measure(
    preset: str | None = None,
    blocks: int | None = None,
    channels: int | None = None,
    batch: int = 8,
    sample: bool = False,
    threads: int = 2,
    warmup: int = 1,
    repeats: int = 3,
    precision: str = "fp32",
    sample_precision: str | None = None,
    sample_steps: int = 0,
    overrides: dict | None = None,
    skip_train: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure one configuration in this process (see the module docstring for the fields)."""
    torch.set_num_threads(threads)
    dev = _device(device)
    cfg, model, sched, opt, g, (x, labels, demo, mask) = _setup(preset, blocks, channels, overrides, batch, dev)
    amp = precision == "bf16"
    walls, cpus = [], []
    for i in range(0 if skip_train else warmup + repeats):
        _sync(dev)
        w0, c0 = time.perf_counter(), time.process_time()
        _train_step(model, sched, opt, g, cfg, (x, labels, demo, mask), amp, dev)
        _sync(dev)
        if i >= warmup:
            walls.append(time.perf_counter() - w0)
            cpus.append((time.process_time() - c0) / threads)
    result: dict[str, Any] = {
        "preset": resolve_preset(preset, blocks, channels),
        "device": str(dev),
        "num_blocks": cfg.num_blocks,
        "res_channels": cfg.res_channels,
        "s4_state": cfg.s4_state,
        "batch": batch,
        "threads": threads,
        "precision": precision,
        "checkpoint_blocks": cfg.checkpoint_blocks,
        "params": sum(p.numel() for p in model.parameters()),
        "train_step_s": round(statistics.median(walls), 4) if walls else None,
        "train_step_cpu_s": round(statistics.median(cpus), 4) if cpus else None,
        "train_peak_mem_mb": round(_peak_mb(), 1),
    }
    if sample:
        del opt
        model.eval()
        sp = resolve_precision(sample_precision or "auto", dev)
        fast_steps = min(FAST_STEPS, cfg.T)
        result.update({"sample_precision": sp, "fast_sampler": FAST_SAMPLER, "fast_steps": fast_steps})

        def timed_run(sampler: str, steps: int) -> tuple[float, float]:
            _sync(dev)
            w0, c0 = time.perf_counter(), time.process_time()
            run_sampler(
                model,
                sched,
                labels,
                demo,
                mask,
                sampler=sampler,
                steps=steps,
                generator=torch.Generator().manual_seed(1),
                precision=sp,
            )
            _sync(dev)
            return time.perf_counter() - w0, (time.process_time() - c0) / threads

        if sample_steps > 0:  # time a short DDIM run; every sampler step is one denoiser call
            n_calls = len(ddim_timesteps(cfg.T, sample_steps))
            wall, cpu = (v / n_calls for v in timed_run("ddim", sample_steps))
            for name, calls in (("ddim50", len(ddim_timesteps(cfg.T, 50))), ("ddpm200", cfg.T),
                                ("fast", fast_steps)):
                result[f"{name}_s_per_ecg"] = round(wall * calls / batch, 4)
                result[f"{name}_cpu_s_per_ecg"] = round(cpu * calls / batch, 4)
        else:
            for name, sampler, steps in (("ddim50", "ddim", 50), ("ddpm200", "ddpm", cfg.T),
                                         ("fast", FAST_SAMPLER, fast_steps)):
                wall, cpu = timed_run(sampler, steps)
                result[f"{name}_s_per_ecg"] = round(wall / batch, 4)
                result[f"{name}_cpu_s_per_ecg"] = round(cpu / batch, 4)
        result["sample_extrapolated"] = sample_steps > 0
    result["peak_mem_mb"] = round(_peak_mb(), 1)
    if dev.type == "cuda":
        result["cuda_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return result


def _device(device: str):
    """torch.device for ``device`` (cpu, cuda, cuda:i); FedECGError in one line when CUDA is absent."""
    if device not in ("cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise FedECGError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    return choose_device(device)


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _setup(preset, blocks, channels, overrides, batch: int, dev):
    """Model, schedule, Adam, generator and a fixed batch (x, labels, demo, mask) on ``dev``."""
    cfg = _model_config(preset, blocks, channels, overrides)
    model = SSSDDenoiser(cfg).to(dev)
    sched = Schedule.from_config(cfg, dev)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    g = torch.Generator().manual_seed(0)  # CPU generator: draws are moved to ``dev`` (as in training)
    x = 0.3 * torch.randn(batch, cfg.in_channels, cfg.seq_len, generator=g)
    labels = (torch.rand(batch, cfg.num_labels, generator=g) < 0.05).float()
    demo, mask = (
        torch.randn(batch, cfg.num_demographics, generator=g),
        torch.ones(batch, cfg.num_demographics),
    )
    return cfg, model, sched, opt, g, tuple(v.to(dev) for v in (x, labels, demo, mask))


def _train_step(model, sched, opt, g, cfg, data, amp: bool, dev) -> None:
    """fwd + bwd + Adam; ``amp``: bf16 autocast (CPU and CUDA)."""
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        loss, _ = diffusion_loss(model, sched, *data, cfg.loss, g)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def profile_train_step(
    preset: str | None = None,
    blocks: int | None = None,
    channels: int | None = None,
    batch: int = 8,
    threads: int = 2,
    warmup: int = 1,
    precision: str = "fp32",
    overrides: dict | None = None,
    device: str = "cpu",
    row_limit: int = 25,
) -> str:
    """The torch.profiler table (top ``row_limit`` ops by self CPU time) of one training step after
    ``warmup`` untimed steps."""
    torch.set_num_threads(threads)
    dev = _device(device)
    cfg, model, sched, opt, g, data = _setup(preset, blocks, channels, overrides, batch, dev)
    amp = precision == "bf16"
    for _ in range(warmup):
        _train_step(model, sched, opt, g, cfg, data, amp, dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        _train_step(model, sched, opt, g, cfg, data, amp, dev)
        _sync(dev)
    head = (f"# one training step: {cfg.num_blocks} blocks x {cfg.res_channels} channels, batch {batch}, "
            f"{threads} threads, {precision}, {dev}")
    return head + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def run_isolated(**kwargs: Any) -> dict[str, Any]:
    """``measure(**kwargs)`` in a fresh Python process (separate peak memory); returns its JSON result."""
    cmd = [sys.executable, "-m", "bench.bench_model", "--json"]
    for key, value in kwargs.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        cmd += [flag] if value is True else [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    # passive OpenMP waiting: on a shared CPU, spinning worker threads made 2-thread steps 3-5x slower
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": str(kwargs.get("threads", 2))}
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--preset", choices=("tiny", "small", "paper"), help="default: paper with --blocks/--channels, else tiny"
    )
    p.add_argument("--blocks", type=int)
    p.add_argument("--channels", type=int)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sample", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--sample-precision", choices=("auto", "fp32", "bf16"), help="default: auto (as sample())")
    p.add_argument("--sample-steps", type=int, default=0)
    p.add_argument("--skip-train", action="store_true", help="only time sampling")
    p.add_argument("--overrides", type=json.loads, help="JSON dict of ModelConfig overrides")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one training step")
    p.add_argument("--json", action="store_true", help="print one JSON object (default when --all is not given)")
    p.add_argument("--all", action="store_true", help="tiny, small, 4x256 and paper, each in its own process")
    return p


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except FedECGError as exc:
        raise SystemExit(f"bench_model: {exc}") from None


def _main(argv: list[str] | None) -> None:
    args = vars(_parser().parse_args(argv))
    run_all, _, prof = args.pop("all"), args.pop("json"), args.pop("profile")
    if prof:
        keep = ("preset", "blocks", "channels", "batch", "threads", "warmup", "precision", "overrides", "device")
        print(profile_train_step(**{k: args[k] for k in keep}), flush=True)
        return
    if run_all:
        for spec in STANDARD_CONFIGS:
            kw = {**args, **spec}
            print(json.dumps(run_isolated(**kw)), flush=True)
        return
    print(json.dumps(measure(**args)), flush=True)


if __name__ == "__main__":
    main()
