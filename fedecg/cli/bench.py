"""`fedecg bench ...`: performance measurements (work done in ``bench/``)."""

from __future__ import annotations

import json

import typer

from fedecg.errors import FedECGError

bench_app = typer.Typer(help="Benchmarks: denoiser training step, memory and sampling speed.", no_args_is_help=True)


@bench_app.command("model")
def model(
    preset: str = typer.Option(
        None,
        "--preset",
        help="Model preset: tiny, small or paper [default: paper with --blocks/--channels, else tiny].",
    ),
    blocks: int = typer.Option(None, "--blocks", help="Override the number of residual blocks."),
    channels: int = typer.Option(None, "--channels", help="Override residual (and skip) channels."),
    batch: int = typer.Option(8, "--batch", help="Batch size (ECGs per step / per sampling run)."),
    sample: bool = typer.Option(
        False, "--sample", help="Also time DDIM-50, DDPM-200 and the fast sampler (DPM-Solver++(2M)) sampling."
    ),
    threads: int = typer.Option(2, "--threads", help="torch intra-op threads."),
    precision: str = typer.Option("fp32", "--precision", help="Training step precision: fp32 or bf16 autocast."),
    sample_precision: str = typer.Option(
        None, "--sample-precision", help="Sampling precision: auto (default, as sample()), fp32 or bf16."
    ),
    sample_steps: int = typer.Option(
        0, "--sample-steps", help="Time only this many denoiser steps and extrapolate (0 = full runs)."
    ),
    repeats: int = typer.Option(3, "--repeats", help="Timed training steps (median reported)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up steps."),
    skip_train: bool = typer.Option(False, "--skip-train", help="Only time sampling (train_step_s = null)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (CUDA: synchronised timings)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Time one training step (fwd+bwd+Adam, 8 leads x 1000 samples), peak memory and sampling per ECG.

    The measurement runs in a fresh Python process so its peak resident memory is its own."""
    from bench.bench_model import run_isolated

    if preset is not None and preset not in ("tiny", "small", "paper"):
        raise FedECGError(f"--preset must be tiny, small or paper, got {preset!r}")
    for name, value in (("--precision", precision), ("--sample-precision", sample_precision)):
        if value is not None and value not in ("fp32", "bf16", "auto"):
            raise FedECGError(f"{name} must be fp32 or bf16 (or auto for sampling), got {value!r}")
    if batch < 1 or threads < 1 or repeats < 1 or warmup < 0 or sample_steps < 0:
        raise FedECGError("--batch, --threads and --repeats must be >= 1, --warmup and --sample-steps >= 0")
    from bench.bench_model import _device

    _device(device)  # one-line FedECGError for a bad device or a CUDA device on a machine without CUDA
    try:
        result = run_isolated(
            preset=preset,
            blocks=blocks,
            channels=channels,
            batch=batch,
            sample=sample,
            threads=threads,
            precision=precision,
            sample_precision=sample_precision,
            sample_steps=sample_steps,
            repeats=repeats,
            warmup=warmup,
            skip_train=skip_train,
            device=device,
        )
    except RuntimeError as exc:
        raise FedECGError(f"benchmark failed: {str(exc).splitlines()[0]}") from exc
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:>22}: {value}")


def register(app: typer.Typer) -> None:
    """Add ``fedecg bench`` to the root app."""
    app.add_typer(bench_app, name="bench")
