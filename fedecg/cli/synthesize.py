"""`fedecg synthesize`: generate personalised ECGs from a checkpoint (work in ``evaluation.synthesize``)."""

from __future__ import annotations

from pathlib import Path

import typer

from fedecg.rundir import RunLayout


def synthesize(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint (.pt) or a run directory (uses checkpoints/latest.pt)."
    ),
    n: int = typer.Option(16, "--n", help="Number of ECGs to generate."),
    out: Path = typer.Option(..., "--out", help="Output folder (PTB-XL layout + synthetic.npz + PNGs)."),
    labels: str = typer.Option(
        "", "--labels", help="Comma-separated SCP codes, e.g. NORM,IMI (same for all)."
    ),
    age: float | None = typer.Option(None, "--age", help="Age in years."),
    sex: str | None = typer.Option(None, "--sex", help="female|male (PTB-XL: 1 = female, 0 = male)."),
    height: float | None = typer.Option(None, "--height", help="Height in cm."),
    weight: float | None = typer.Option(None, "--weight", help="Weight in kg."),
    like_dataset: Path | None = typer.Option(
        None, "--like-dataset", help="Draw labels+demographics from this PTB-XL folder's rows."
    ),
    sampler: str = typer.Option(
        "ddim", "--sampler", help="ddim | ddpm | dpmpp2m | dpmpp2m-sde (DPM-Solver++(2M), deterministic / "
        "stochastic, second order: fewer steps; see docs/model.md, Fast samplers)."
    ),
    steps: int = typer.Option(
        50, "--steps", help="Denoiser calls of ddim / dpmpp2m* (dpmpp2m*: 2..T, e.g. 15); ddpm always uses all T."
    ),
    eta: float = typer.Option(1.0, "--eta", help="DDIM stochasticity: 1 = DDPM-like noise (fewer rhythm errors), "
                              "0 = deterministic."),
    guidance: float = typer.Option(
        1.0, "--guidance", help="Classifier-free guidance scale (1 = conditional)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise (and of --like-dataset draws)."),
    batch_size: int = typer.Option(16, "--batch-size", help="ECGs per sampling batch."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:i]."),
    no_pngs: bool = typer.Option(
        False, "--no-pngs", help="Skip the per-ECG PNGs (grid.png is still written)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Generate N ECGs for given labels/demographics (or a dataset's mix) and write them as WFDB + PNG."""
    from rich.progress import Progress

    from evaluation.synthesize import (
        SamplerSettings,
        conditions_like_dataset,
        explicit_conditions,
        generate,
        parse_sex,
        settings_dict,
        write_synthetic_dataset,
    )
    from fedecg.device import choose_device
    from fedecg.errors import FedECGError

    if sampler in ("dpmpp2m", "dpmpp2m-sde") and steps < 2:
        raise FedECGError(f"--steps must be >= 2 with --sampler {sampler}, got {steps}")
    ckpt = resolve_checkpoint(checkpoint)
    settings = SamplerSettings(
        sampler=sampler, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size, eta=eta
    )
    if like_dataset is not None:
        if labels or any(v is not None for v in (age, sex, height, weight)):
            raise FedECGError("--like-dataset cannot be combined with --labels/--age/--sex/--height/--weight")
        conditions = conditions_like_dataset(like_dataset, n, seed)
    else:
        conditions = explicit_conditions(n, labels.split(","), age, parse_sex(sex), height, weight)
    dev = choose_device(device)
    with Progress(transient=True) as bar:
        task = bar.add_task("sampling", total=n)
        signals, info = generate(
            ckpt, conditions, settings, dev, progress=lambda done, total: bar.update(task, completed=done)
        )
    provenance = {
        "checkpoint": str(ckpt),
        "round": info["round"],
        "sampler": settings_dict(settings),
        "like_dataset": str(like_dataset) if like_dataset else None,
        "device": str(dev),
    }
    write_synthetic_dataset(
        out, signals, conditions, info["label_codes"], provenance, pngs=not no_pngs, overwrite=overwrite
    )
    typer.echo(
        f"wrote {n} synthetic ECGs to {out} (records100/, ptbxl_database.csv, synthetic.npz, grid.png)"
    )


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/latest.pt``."""
    from fedecg.errors import FedECGError

    if path.is_dir():
        path = RunLayout(path).latest_checkpoint
    if not path.is_file():
        raise FedECGError(f"checkpoint {path}: not found")
    return path


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("synthesize")(synthesize)
