"""`fedecg audit RUN_DIR ...`: memorization audit + membership inference + ε table → audit.json, report.html;
`fedecg audit-canary ...`: the one-run empirical DP audit with canaries (a separate command because a
positional RUN_DIR and a sub-command cannot share `fedecg audit`)."""

from __future__ import annotations

from pathlib import Path

import typer


def audit(
    run_dir: Path = typer.Argument(
        ..., help="Run directory (manifest.json, checkpoints/, privacy_ledger.json)."
    ),
    holdout: Path = typer.Option(
        None,
        "--holdout",
        help="PTB-XL-layout holdout folder (default: the manifest's test fold of the run's dataset).",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder for audit.json and report.html."),
    synthetic: Path = typer.Option(
        None,
        "--synthetic",
        help="Synthetic ECGs (.npz or PTB-XL-layout folder) instead of sampling from the latest checkpoint.",
    ),
    n: int = typer.Option(200, "--n", help="Synthetic ECGs to sample from the checkpoint."),
    n_mia: int = typer.Option(
        200, "--n-mia", help="Members and non-members scored by the membership attack."
    ),
    steps: int = typer.Option(50, "--steps", help="DDIM steps when sampling."),
    shift_tolerant: bool = typer.Option(
        False, "--shift-tolerant", help="Shift-tolerant distance (±max-lag)."
    ),
    max_lag: int = typer.Option(10, "--max-lag", help="Lag window in samples for --shift-tolerant."),
    near_copy_ratio: float = typer.Option(1 / 3, "--near-copy-ratio", help="NNDR threshold of a near-copy."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:i]."),
) -> None:
    """Audit a run: DCR train vs holdout, NNDR, near-copies, membership inference, ε table, verdict."""
    from fedecg.device import choose_device
    from privacy.audit import AuditConfig
    from privacy.pipeline import AuditRunConfig, run_audit

    cfg = AuditRunConfig(
        n_synthetic=n,
        n_mia=n_mia,
        sampling_steps=steps,
        seed=seed,
        audit=AuditConfig(
            near_copy_ratio=near_copy_ratio, shift_tolerant=shift_tolerant, max_lag=max_lag, seed=seed
        ),
    )
    result = run_audit(run_dir, out, holdout, synthetic, cfg, choose_device(device))
    v = result["verdict"]
    typer.echo(f"verdict: {v['overall']} — {v['summary']}")
    for c in v["checks"]:
        typer.echo(f"  [{c['level']}] {c['check']}: {c['text']}")
    typer.echo(f"wrote {out / 'audit.json'} and {out / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add `fedecg audit` and `fedecg audit-canary`."""
    app.command("audit")(audit)
