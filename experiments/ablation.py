"""The MIDT-ECG ablation as one experiment: plain SSSD-ECG vs SSSD-MIDT without demographics vs full
SSSD-MIDT, trained in the same federation (same scenario, partition, seeds, rounds, local steps and budget),
then judged side by side on fidelity, memorization and downstream utility.

Variants (``VARIANTS``; overrides are ``fedecg simulate --set`` keys):

=================  =====================================================  =========================
variant            training overrides                                     sampling conditions
=================  =====================================================  =========================
``sssd_ecg``       ``model.mel_lambda=0``, ``model.demo_drop_prob=0.999``  labels only (demo masked)
``midt_no_demo``   ``model.demo_drop_prob=0.999``                          labels only (demo masked)
``midt``           none (mel loss on, demographics used)                   labels + demographics
=================  =====================================================  =========================

The model config has no switch that removes the demographic input, so "no demographics" means the
demographics are dropped from (almost) every training example (``demo_drop_prob`` must stay < 1) and are
masked at sampling time; the demographic embedding then only ever sees the "unknown" mask.

Per variant: ``n_synthetic`` ECGs conditioned on rows of the real training folds → fidelity against the real
held-out folds 9–10 (``evaluation.report``; one FID classifier shared by all variants), the memorization audit
of ``privacy.audit`` (synthetic vs the run's training and test records), and the utility experiment
(``evaluation.utility``). Relative change vs ``sssd_ecg``: ``(m_variant − m_plain) / |m_plain|``, with a 95 %
bootstrap CI for the ILC error (independent resamples of the two variants' ECGs) and for the AUROCs (paired:
identical test-set resamples).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from evaluation.classifier import ClassifierConfig
from evaluation.ecgset import load_ecg_set
from evaluation.leads import to_model_view
from evaluation.report import FidelityConfig, fidelity_report
from evaluation.synthesize import SamplerSettings, conditions_like_dataset, generate, write_synthetic_dataset
from evaluation.utility import UtilityConfig, utility_experiment
from experiments.ablation_report import ablation_table, plot_ablation
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json, atomic_write_text
from fedecg.rundir import RunLayout
from privacy.audit import AuditConfig, memorization_audit
from privacy.inputs import load_records, read_run
from ptbxl.constants import HELDOUT_FOLDS, TEST_FOLDS, TRAIN_FOLDS
from simulations.runner import simulate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: tuple[str, ...]
    use_demographics: bool


VARIANTS = (
    Variant("sssd_ecg", "SSSD-ECG (λ=0, labels only)", ("model.mel_lambda=0", "model.demo_drop_prob=0.999"),
            False),
    Variant("midt_no_demo", "SSSD-MIDT, no demographics", ("model.demo_drop_prob=0.999",), False),
    Variant("midt", "SSSD-MIDT (full)", (), True),
)


@dataclass(frozen=True)
class AblationPreset:
    """Scale of the whole experiment; ``tiny`` runs on a shared CPU, ``paper`` is meant for a GPU."""

    name: str
    model: str
    rounds: int
    local_steps: int
    n_synthetic: int
    sampling_steps: int
    fractions: tuple[float, ...]
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    classifier_epochs: int = 15
    n_boot: int = 200
    max_delineate: int = 300
    engine: str = "ray"
    extra: tuple[str, ...] = ()


_PRESETS = {
    "tiny": AblationPreset("tiny", "tiny", rounds=2, local_steps=4, n_synthetic=48, sampling_steps=10,
                           fractions=(0.05, 0.25), classifier=ClassifierConfig(width=8, emb_dim=16),
                           classifier_epochs=4, n_boot=100, max_delineate=48, engine="inprocess"),
    "small": AblationPreset("small", "small", rounds=10, local_steps=20, n_synthetic=400, sampling_steps=50,
                            fractions=(0.01, 0.05, 0.1, 0.25)),
    "paper": AblationPreset("paper", "paper", rounds=100, local_steps=200, n_synthetic=4000,
                            sampling_steps=50,
                            fractions=(0.01, 0.05, 0.1, 0.25), classifier_epochs=30, n_boot=1000,
                            max_delineate=1000, extra=("batch_size=32", "lr=0.0002")),
}


def ablation_preset(name: str) -> AblationPreset:
    if name not in _PRESETS:
        raise FedECGError(f"unknown ablation preset {name!r} (choose from {sorted(_PRESETS)})")
    return _PRESETS[name]


def default_scenario() -> Path:
    return Path(__file__).resolve().parent.parent / "simulations" / "scenarios" / "ablation.yaml"


def run_ablation(dataset: str | Path, preset: AblationPreset, out: str | Path,
                 scenario: str | Path | None = None, seed: int = 0, extra_overrides: list[str] | None = None,
                 train: bool = True, device=None) -> dict:
    """Train (unless ``train`` is false and the runs exist), evaluate and compare the three variants; writes
    ``ablation.json``, ``ablation.md`` and ``ablation.png`` into ``out`` and returns the result dict."""
    out = Path(out)
    dataset = Path(dataset).resolve()
    base = [f"dataset={dataset}", f"seed={seed}", f"model={preset.model}", f"rounds={preset.rounds}",
            f"local_steps={preset.local_steps}", "output.synthesize=0", *preset.extra,
            *(extra_overrides or [])]
    real_ref = load_ecg_set(dataset, folds=HELDOUT_FOLDS)
    real_train = load_ecg_set(dataset, folds=TRAIN_FOLDS)
    real_test = load_ecg_set(dataset, folds=TEST_FOLDS)
    results = {}
    for v in VARIANTS:
        run_dir = out / v.name
        if train:
            _train(scenario or default_scenario(), run_dir, [*base, *v.overrides], preset.engine)
        elif not (latest := RunLayout(run_dir).latest_checkpoint).is_file():
            raise FedECGError(f"{run_dir}: no {latest.relative_to(run_dir)} to reuse (drop --skip-training)")
        results[v.name] = evaluate_variant(v, run_dir, dataset, real_ref, real_train, real_test, preset, seed,
                                           out / "cache", device)
    result = {"preset": asdict(preset), "seed": seed, "dataset": str(dataset), "base_overrides": base,
              "variants": {v.name: {"label": v.label, "overrides": list(v.overrides),
                                    "use_demographics": v.use_demographics, **results[v.name]["metrics"]}
                           for v in VARIANTS},
              "relative_change_vs_sssd_ecg": compare(results, seed)}
    write_ablation(result, out)
    return result


def _train(scenario: Path, run_dir: Path, overrides: list[str], engine: str) -> None:
    log.info("ablation: training %s with %s", run_dir.name, overrides)
    simulate(scenario, run_dir, overrides, resume=RunLayout(run_dir).run_info_path.is_file(), engine=engine)


def evaluate_variant(v: Variant, run_dir: Path, dataset: Path, real_ref, real_train, real_test,
                     preset: AblationPreset, seed: int, cache_dir: Path, device=None) -> dict:
    """Synthesize, then fidelity + memorization + utility for one trained variant."""
    layout = RunLayout(run_dir)
    cond = conditions_like_dataset(dataset, preset.n_synthetic, seed, folds=TRAIN_FOLDS)
    if not v.use_demographics:
        cond = replace(cond, demographics=cond.demographics * np.nan)
    ckpt = layout.latest_checkpoint
    signals, info = generate(ckpt, cond, SamplerSettings(steps=preset.sampling_steps, seed=seed), device)
    provenance = {"checkpoint": str(ckpt), "variant": v.name}
    syn_dir = write_synthetic_dataset(layout.synthetic_dir, signals, cond, info["label_codes"], provenance,
                                      pngs=False, overwrite=True)
    syn = load_ecg_set(syn_dir)
    ccfg = replace(preset.classifier, epochs=preset.classifier_epochs, seed=seed)
    fcfg = FidelityConfig(n_boot=preset.n_boot, max_delineate=preset.max_delineate, classifier=ccfg,
                          seed=seed, keep_bootstrap=True)
    fid = fidelity_report(real_ref, syn, fcfg, cache_dir=cache_dir, device=device, source=str(dataset),
                          classifier_train=real_train)
    ucfg = UtilityConfig(fractions=preset.fractions, epochs=preset.classifier_epochs, n_boot=preset.n_boot,
                         seed=seed, classifier=preset.classifier)
    util = utility_experiment(real_train, real_test, syn, ucfg, device, keep_samples=True)
    mem = _memorization(run_dir, to_model_view(syn.signals), seed, device)
    metrics = {
        "inter_lead_correlation_error": fid["inter_lead_correlation_error"],
        "inter_lead_correlation_error_ci95": fid["inter_lead_correlation"].get("ci95"),
        "fid": fid["fid"], "snr_db": fid["snr_db"], "psd_distance_db": fid["psd_distance_db_mean"],
        "mel_distance_db": fid["mel_distance_db_mean"],
        "personalisation_agreement": fid["personalisation"]["direction_agreement"],
        **mem,
        "utility": {r["setting"]: {k: r[k] for k in ("auroc", "ci_low", "ci_high")} for r in util["rows"]},
    }
    return {"metrics": metrics, "ilc_boot": fid["inter_lead_correlation"].get("boot", []),
            "auroc_boot": {r["setting"]: r.get("boot", []) for r in util["rows"]}}


def _memorization(run_dir: Path, syn8: np.ndarray, seed: int, device=None) -> dict:
    run = read_run(run_dir)
    train = load_records(run.dataset, list(run.train_ids))
    hold = load_records(run.dataset, list(run.test_ids))
    res = memorization_audit(syn8, np.asarray(train.x), np.asarray(hold.x),
                             AuditConfig(n_permutations=1000, seed=seed), device or "cpu")
    s = res.summary
    return {"dcr_train_median": s["dcr"]["train"]["median"],
            "dcr_holdout_median": s["dcr"]["holdout"]["median"],
            "nndr_median": s["nndr"]["median"], "near_copy_share": s["near_copy_share"]}


HIGHER_IS_BETTER = {"inter_lead_correlation_error": False, "fid": False, "psd_distance_db": False,
                    "mel_distance_db": False, "dcr_train_median": True, "nndr_median": True,
                    "near_copy_share": False}


def compare(results: dict, seed: int = 0) -> dict:
    """Relative change of each variant vs ``sssd_ecg`` (positive = larger value), with bootstrap CIs where
    resamples exist."""
    plain = results["sssd_ecg"]
    out = {}
    for name, res in results.items():
        if name == "sssd_ecg":
            continue
        row = {}
        for key in HIGHER_IS_BETTER:
            row[key] = {"relative_change": _rel(res["metrics"].get(key), plain["metrics"].get(key)),
                        "higher_is_better": HIGHER_IS_BETTER[key]}
        row["inter_lead_correlation_error"]["ci95"] = _ratio_ci(res["ilc_boot"], plain["ilc_boot"])
        for setting, boots in res["auroc_boot"].items():
            if "synthetic" in setting:
                row[f"auroc:{setting}"] = {
                    "relative_change": _rel(res["metrics"]["utility"][setting]["auroc"],
                                            plain["metrics"]["utility"][setting]["auroc"]),
                    "ci95": _ratio_ci(boots, plain["auroc_boot"].get(setting, [])), "higher_is_better": True}
        out[name] = row
    return out


def _rel(v, ref) -> float | None:
    if v is None or ref is None or not np.isfinite(v) or not np.isfinite(ref) or ref == 0:
        return None
    return float((v - ref) / abs(ref))


def _ratio_ci(a, b) -> list[float] | None:
    n = min(len(a), len(b))
    if n < 10:
        return None
    a, b = np.asarray(a[:n], float), np.asarray(b[:n], float)
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    if ok.sum() < 10:
        return None
    r = (a[ok] - b[ok]) / np.abs(b[ok])
    return [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]


def write_ablation(result: dict, out: Path) -> None:
    atomic_write_json(out / "ablation.json", result)
    atomic_write_text(out / "ablation.md", ablation_table(result))
    plot_ablation(result, out / "ablation.png")
