"""`fedecg pretrain`: central pretraining of the base federations start from (work in ``pretraining.train``)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_cmd)


def pretrain_cmd(
    dataset: str = typer.Option("demo", "--dataset", help="demo (the built-in synthetic corpus, no download) "
                                "or a PTB-XL-layout folder (its folds 1-8 train, 9-10 are the realism reference)."),
    preset: str = typer.Option("small", "--preset", help="Model preset: tiny | small | paper."),
    out: Path = typer.Option(..., "--out", help="The base checkpoint to write (model card and loss curve beside it)."),
    steps: int = typer.Option(0, "--steps", help="Optimizer steps (or give --minutes)."),
    minutes: float = typer.Option(0.0, "--minutes", help="Train for about this many minutes of wall time."),
    batch: int = typer.Option(16, "--batch", help="Records per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (warm-up, then cosine decay)."),
    warmup: int = typer.Option(100, "--warmup", help="Warm-up steps."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="EMA decay of the weights (0 = off)."),
    records: int = typer.Option(16_000, "--records", help="Size of the synthetic corpus (--dataset demo)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, batches and diffusion noise."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CPUs with native bf16, fp16 AMP on "
                                  "CUDA) | fp32 | bf16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:i]."),
    threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch's default)."),
    save_every: int = typer.Option(200, "--save-every", help="Checkpoint the training state every N steps."),
    eval_samples: int = typer.Option(32, "--eval-samples", help="ECGs sampled for the model card's realism "
                                     "metrics (0 = skip)."),
    sampler_steps: int = typer.Option(50, "--sampler-steps", help="DDIM steps for those samples."),
    sampler_eta: float = typer.Option(1.0, "--sampler-eta", help="DDIM eta for those samples (1 = stochastic)."),
    set_: list[str] = typer.Option([], "--set", help="Model field override key=value (e.g. mel_lambda=0)."),
    init: str = typer.Option("", "--init", help="Start from this base's (EMA) weights (a checkpoint path or "
                             "builtin:<name>) instead of a fresh initialisation: a further pretraining phase."),
    evaluate_only: bool = typer.Option(False, "--evaluate-only", help="Only recompute the realism block of OUT's "
                                       "model card (with --eval-samples / --sampler-steps / --sampler-eta)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the training state next to OUT "
                                "(<stem>.train-state)."),
) -> None:
    """Pretrain the SSSD-MIDT denoiser centrally on public data, with EMA; writes a base + model card."""
    import yaml

    from fedecg.errors import FedECGError
    from pretraining.train import PretrainSettings, card_paths, pretrain

    overrides = {}
    for item in set_:
        if "=" not in item:
            raise FedECGError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        overrides[k.strip()] = yaml.safe_load(v)
    settings = PretrainSettings(out=str(out), dataset=dataset, preset=preset, model_overrides=overrides,
                                corpus_records=records, steps=steps, minutes=minutes, batch_size=batch, lr=lr,
                                warmup_steps=warmup, ema_decay=ema_decay, seed=seed, precision=precision,
                                device=device, threads=threads, save_every=save_every, eval_samples=eval_samples,
                                sampler_steps=sampler_steps, sampler_eta=sampler_eta, resume=resume, init=init)
    if evaluate_only:
        from pretraining.train import reevaluate

        card = reevaluate(settings.__class__(**{**settings.__dict__, "steps": max(settings.steps, 1)}))
    else:
        card = pretrain(settings)
    jpath, mpath = card_paths(out)
    t = card["training"]
    typer.echo(f"base: {out} ({t['steps']} steps, {t['wall_seconds'] / 60:.1f} min); model card: {mpath}, {jpath}")
    if "realism" in card:
        from evaluation.realism import format_realism

        typer.echo(format_realism(card["realism"]["metrics"]))
