"""`fedecg audit RUN_DIR ...`: memorization audit + membership inference + ε table → audit.json, report.html;
`fedecg audit-canary ...`: the one-run empirical DP audit with canaries (a separate command because a
positional RUN_DIR and a sub-command cannot share `fedecg audit`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fedecg.rundir import RunLayout


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
    base_max_records: int = typer.Option(
        4000,
        "--base-max-records",
        help="Runs started from a pretrained base (RUN_DIR/base.json): compare the synthetic ECGs with at most "
        "this many of the base's public training records (a synthetic corpus is regenerated, ≈ 25 ms/record; "
        "the report says when capped; 0 = do not compare).",
    ),
) -> None:
    """Audit a run: DCR train vs holdout, NNDR, near-copies, membership inference, ε table, verdict; a run
    started from a pretrained base also gets its public training records reported apart (`base_corpus`)."""
    from fedecg.device import choose_device
    from privacy.audit import AuditConfig
    from privacy.pipeline import AuditRunConfig, run_audit

    cfg = AuditRunConfig(
        n_synthetic=n,
        n_mia=n_mia,
        sampling_steps=steps,
        seed=seed,
        base_max_records=base_max_records,
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


def audit_canary(
    scenario: Path = typer.Argument(..., help="Scenario YAML to train (e.g. simulations/scenarios/dp.yaml)."),
    dataset: Path = typer.Option(..., "--dataset", help="PTB-XL-layout folder to copy and add canaries to."),
    work_dir: Path = typer.Option(..., "--work-dir", help="New folder: dataset/ (canaries) and run/."),
    canaries: int = typer.Option(64, "--canaries", help="Number of canaries m (each inserted w.p. 1/2)."),
    overrides: list[str] = typer.Option(None, "--set", help="Scenario override key=value (repeat)."),
    beta: float = typer.Option(0.05, "--beta", help="1 − confidence of the lower bound."),
    delta: float = typer.Option(None, "--delta", help="δ of the bound (default: the run's largest site δ)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """One-run empirical DP audit: canaries w.p. 1/2 → train → membership guesses → ε lower bound."""
    from experiments.canary import run_canary_audit

    out = run_canary_audit(
        scenario, dataset, work_dir, canaries, list(overrides or []), seed, beta, delta, device
    )
    typer.echo(
        f"ε ≥ {out['epsilon_lower_bound']:.3f} with {100 * (1 - beta):.0f}% confidence "
        f"({out['correct']}/{out['guesses']} correct guesses on {out['n_canaries']} canaries, "
        f"δ = {out['delta']:.1e}); accounted ε = {out['accounted_epsilon']}; "
        f"{'consistent' if out['consistent'] else 'INCONSISTENT: accounting is wrong'}"
    )
    typer.echo(f"wrote {RunLayout(out['run_dir']).canary_audit_path}")


def register(app: typer.Typer) -> None:
    """Add `fedecg audit` and `fedecg audit-canary`."""
    app.command("audit")(audit)
    app.command("audit-canary")(audit_canary)
