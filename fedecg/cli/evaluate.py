"""`fedecg evaluate fidelity|utility|ablation` (work done in ``evaluation``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

evaluate_app = typer.Typer(
    help="Judge synthetic ECGs: fidelity metrics, downstream utility, the ablation.", no_args_is_help=True
)
_DEFAULT_CACHE = Path(".cache/fedecg-eval")


def _quiet_for_json(as_json: bool) -> None:
    """Keep stdout pure JSON: the CLI's log handler writes to stdout, so raise its level."""
    if as_json:
        logging.getLogger().setLevel(logging.WARNING)


def _folds(text: str) -> tuple[int, ...] | None:
    from fedecg.errors import FedECGError

    if not text:
        return None
    try:
        return tuple(int(f) for f in text.split(","))
    except ValueError as exc:
        raise FedECGError(f"folds must be comma-separated integers, got {text!r}") from exc


@evaluate_app.command("fidelity")
def fidelity(
    real: Path = typer.Option(..., "--real", help="Real ECGs: PTB-XL-layout folder or .npz."),
    synthetic: Path = typer.Option(
        ..., "--synthetic", help="Synthetic ECGs: folder (fedecg synthesize) or .npz."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON report to this file."),
    classifier: Path | None = typer.Option(None, "--classifier", help="FID embedding classifier checkpoint."),
    cache_dir: Path = typer.Option(
        _DEFAULT_CACHE, "--cache-dir", help="Where trained FID classifiers are cached."
    ),
    real_folds: str = typer.Option(
        "", "--real-folds", help="Use only these strat_folds of --real, e.g. 9,10."
    ),
    max_real: int = typer.Option(2000, "--max-real", help="At most this many real ECGs (seeded subset)."),
    group_by: str = typer.Option(
        "superclass", "--group-by", help="ILC condition groups: superclass|statements|none."
    ),
    max_delineate: int = typer.Option(300, "--max-delineate", help="ECGs per set given to the delineator."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:i] (FID classifier)."),
) -> None:
    """Fidelity of synthetic vs real ECGs: ILC error, SNR, PSD/Mel, intervals, personalisation, FID, realism."""
    from evaluation.ecgset import load_ecg_set
    from evaluation.report import FidelityConfig, fidelity_report
    from fedecg.device import choose_device
    from fedecg.io import atomic_write_json
    from ptbxl.constants import TRAIN_FOLDS

    _quiet_for_json(as_json)
    real_set = load_ecg_set(real, max_records=max_real, folds=_folds(real_folds), seed=seed)
    syn_set = load_ecg_set(synthetic, seed=seed)
    clf_train = None
    if classifier is None and real.is_dir() and real_folds:
        # FID embedding network: trained on the folder's training folds, held out from the evaluated folds
        train_folds = tuple(f for f in TRAIN_FOLDS if f not in (_folds(real_folds) or ()))
        if train_folds:
            clf_train = load_ecg_set(real, max_records=max_real, folds=train_folds, seed=seed)
    cfg = FidelityConfig(group_by=group_by, max_delineate=max_delineate, seed=seed)
    report = fidelity_report(
        real_set, syn_set, cfg, classifier, cache_dir, choose_device(device), source=str(real.resolve()),
        classifier_train=clf_train,
    )
    report["real"], report["synthetic"] = str(real), str(synthetic)
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_fidelity(report)


def _print_fidelity(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.4g}"

    table = Table(title=f"fidelity: {report['n_synthetic']} synthetic vs {report['n_real']} real ECGs")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ilc = report["inter_lead_correlation"]
    ci = ilc.get("ci95") or [None, None]
    table.add_row("inter_lead_correlation_error", f"{fmt(ilc['value'])}  [{fmt(ci[0])}, {fmt(ci[1])}]")
    table.add_row("snr_db (synthetic / real)", f"{fmt(report['snr_db'])} / {fmt(report['snr_db_real'])}")
    table.add_row("fid", fmt(report["fid"]))
    table.add_row("psd_distance_db (mean of 12 leads)", fmt(report["psd_distance_db_mean"]))
    table.add_row("mel_distance_db (mean of 12 leads)", fmt(report["mel_distance_db_mean"]))
    for name, row in report["intervals"].items():
        table.add_row(
            f"{name}: real / synthetic median, W1",
            f"{fmt(row['real_median'])} / {fmt(row['synthetic_median'])}, {fmt(row['wasserstein'])}",
        )
    table.add_row(
        "personalisation direction agreement", fmt(report["personalisation"]["direction_agreement"])
    )
    Console().print(table)
    block = report.get("realism") or {}
    if "error" in block:
        typer.echo(f"realism: not computed ({block['error']})")
    elif block:
        from evaluation.realism import format_realism

        typer.echo(format_realism(block))


@evaluate_app.command("personalisation")
def personalisation(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt) or run directory."),
    real: Path | None = typer.Option(None, "--real", help="Real PTB-XL folder whose effects give the direction."),
    n: int = typer.Option(16, "--n", help="ECG pairs per factor (same noise, low vs high value)."),
    labels: str = typer.Option("NORM", "--labels", help="SCP codes held fixed, comma-separated."),
    steps: int = typer.Option(20, "--steps", help="DDIM steps."),
    max_real: int = typer.Option(500, "--max-real", help="Real ECGs delineated for the reference effects."),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Counterfactual personalisation: vary one demographic with fixed noise; effects vs the real direction."""
    from evaluation.counterfactual import counterfactual_effects
    from evaluation.report import _finite_or_none
    from fedecg.cli.synthesize import resolve_checkpoint
    from fedecg.device import choose_device
    from fedecg.io import atomic_write_json

    logging.getLogger().setLevel(logging.WARNING)
    real_effects = None
    if real is not None:
        from evaluation.ecgset import demographics, load_ecg_set
        from evaluation.intervals import ecg_measures
        from evaluation.personalisation import effect_sizes

        ecgs = load_ecg_set(real, max_records=max_real, seed=seed)
        real_effects = effect_sizes(demographics(ecgs), ecg_measures(ecgs.signals))
    result = _finite_or_none(counterfactual_effects(resolve_checkpoint(checkpoint), n, labels.split(","), steps,
                                                    seed, real_effects, choose_device(device)))
    if out is not None:
        atomic_write_json(out, result)
    typer.echo(json.dumps(result, indent=2))


@evaluate_app.command("utility")
def utility(
    real: Path = typer.Option(
        ..., "--real", help="Real PTB-XL-layout folder (strat_fold 1-8 train, 9 val, 10 test)."
    ),
    synthetic: Path | None = typer.Option(None, "--synthetic", help="Synthetic ECGs (folder or .npz)."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Generate the synthetic set from this checkpoint/run dir instead."
    ),
    n_synthetic: int = typer.Option(200, "--n-synthetic", help="ECGs to generate with --checkpoint."),
    steps: int = typer.Option(20, "--steps", help="DDIM steps when generating."),
    fractions: str = typer.Option("0.01,0.05,0.1,0.25", "--fractions", help="Real training fractions."),
    epochs: int = typer.Option(15, "--epochs", help="Classifier epochs per setting."),
    n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap resamples for the AUROC CIs."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(
        Path("utility"), "--out", help="Folder for utility.json, utility.md, utility.png."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Downstream utility: real only, synthetic only (TSTR), real subsets + synthetic; AUROC on fold 10."""
    from evaluation.utility import UtilityConfig, run_utility
    from fedecg.device import choose_device
    from fedecg.errors import FedECGError

    _quiet_for_json(as_json)
    if (synthetic is None) == (checkpoint is None):
        raise FedECGError("give exactly one of --synthetic or --checkpoint")
    try:
        fracs = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError as exc:
        raise FedECGError(f"--fractions must be comma-separated numbers, got {fractions!r}") from exc
    cfg = UtilityConfig(
        fractions=fracs, epochs=epochs, n_boot=n_boot, seed=seed, n_synthetic=n_synthetic, steps=steps
    )
    result = run_utility(
        real, cfg, out, synthetic=synthetic, checkpoint=checkpoint, device=choose_device(device)
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo((out / "utility.md").read_text())
        typer.echo(f"wrote {out / 'utility.json'}, {out / 'utility.png'}")


@evaluate_app.command("ablation")
def ablation(
    dataset: Path = typer.Option(..., "--dataset", help="Real PTB-XL-layout folder used by the federation."),
    preset: str = typer.Option(
        "tiny", "--preset", help="tiny | small | paper (rounds, model, sample sizes)."
    ),
    scenario: Path | None = typer.Option(
        None, "--scenario", help="Scenario YAML (default: simulations/scenarios/ablation.yaml)."
    ),
    out: Path = typer.Option(
        Path("runs/ablation"), "--out", help="Folder for the three runs and the report."
    ),
    seed: int = typer.Option(0, "--seed"),
    set_: list[str] = typer.Option([], "--set", help="Extra key=value overrides for all three runs."),
    skip_training: bool = typer.Option(False, "--skip-training", help="Reuse runs already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Plain SSSD-ECG vs SSSD-MIDT without demographics vs full SSSD-MIDT, same federation/seeds/budget."""
    from experiments.ablation import ablation_preset, run_ablation
    from fedecg.device import choose_device

    _quiet_for_json(as_json)
    result = run_ablation(
        dataset,
        ablation_preset(preset),
        out,
        scenario=scenario,
        seed=seed,
        extra_overrides=list(set_),
        train=not skip_training,
        device=choose_device(device),
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo((out / "ablation.md").read_text())
        typer.echo(f"wrote {out / 'ablation.json'}, {out / 'ablation.png'}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(evaluate_app, name="evaluate")
