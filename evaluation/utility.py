"""Downstream utility (the low-data claim): does synthetic data help a PTB-XL classifier?

Classifier: ``evaluation.classifier`` (compact 1-D CNN, model view 8 × 1000, multi-label over the 5 diagnostic
superclasses NORM/MI/STTC/CD/HYP). Real data split by ``strat_fold``: 1–8 train, 10 test (fold 9 unused, since
no setting does model selection: every setting trains for the same fixed budget,
``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs, so tiny subsets still get ``min_steps`` updates).

Settings: ``real_100`` (all real training ECGs), ``synthetic_only`` (TSTR: train on synthetic, test on real),
and for each fraction f: ``real_f`` (a seeded random f-subset of the real training ECGs, at least 2) and
``real_f+synthetic`` (that subset plus all synthetic ECGs). Metric: macro AUROC over the superclasses present
in the test fold, with a 95 % percentile bootstrap CI over test ECGs (the same resamples for every setting).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from evaluation.classifier import ClassifierConfig, bootstrap_auroc, predict_proba, train_classifier
from evaluation.ecgset import SUPERCLASSES, ECGSet, load_ecg_set, superclass_targets
from evaluation.leads import to_model_view
from evaluation.synthesize import SamplerSettings, conditions_like_dataset, generate, write_synthetic_dataset
from fedecg.errors import FedECGError
from fedecg.io import atomic_save, atomic_write_json, atomic_write_text
from ptbxl.constants import TEST_FOLDS, TRAIN_FOLDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UtilityConfig:
    fractions: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25)
    epochs: int = 15
    min_steps: int = 60
    n_boot: int = 200
    seed: int = 0
    n_synthetic: int = 200  # when generating from a checkpoint
    steps: int = 20  # DDIM steps when generating
    classifier: ClassifierConfig = ClassifierConfig()

    def __post_init__(self) -> None:
        if not all(0 < f <= 1 for f in self.fractions):
            raise FedECGError(f"utility fractions must be in (0, 1], got {self.fractions}")


def run_utility(real: str | Path, cfg: UtilityConfig, out: str | Path, synthetic: str | Path | None = None,
                checkpoint: str | Path | None = None, device=None) -> dict:
    """Run every setting, write ``utility.json``, ``utility.md`` and ``utility.png`` into ``out``."""
    real_train = load_ecg_set(real, folds=TRAIN_FOLDS)
    real_test = load_ecg_set(real, folds=TEST_FOLDS)
    if synthetic is not None:
        syn = load_ecg_set(synthetic, seed=cfg.seed)
        syn_source = str(synthetic)
    elif checkpoint is not None:
        syn = synthesize_like(checkpoint, real, cfg, Path(out) / "synthetic", device)
        syn_source = str(Path(out) / "synthetic")
    else:
        raise FedECGError("utility needs a synthetic set or a checkpoint to generate one")
    result = utility_experiment(real_train, real_test, syn, cfg, device)
    result["real"], result["synthetic"] = str(real), syn_source
    write_utility(result, out)
    return result


def synthesize_like(checkpoint, real_root, cfg: UtilityConfig, dest: Path, device=None) -> ECGSet:
    """Generate ``cfg.n_synthetic`` ECGs conditioned on rows of the real training folds; write, then load."""
    conditions = conditions_like_dataset(real_root, cfg.n_synthetic, cfg.seed, folds=TRAIN_FOLDS)
    settings = SamplerSettings(steps=cfg.steps, seed=cfg.seed)
    signals, info = generate(checkpoint, conditions, settings, device)
    write_synthetic_dataset(dest, signals, conditions, info["label_codes"], {"checkpoint": str(checkpoint)},
                            pngs=False, overwrite=True)
    return load_ecg_set(dest)


def utility_experiment(real_train: ECGSet, real_test: ECGSet, synthetic: ECGSet, cfg: UtilityConfig,
                       device=None, keep_samples: bool = False) -> dict:
    """Train one classifier per setting and score it on ``real_test``; returns the result dict."""
    x_real, y_real = to_model_view(real_train.signals), superclass_targets(real_train)
    x_syn, y_syn = to_model_view(synthetic.signals), superclass_targets(synthetic, real_train.statements)
    x_test, y_test = to_model_view(real_test.signals), superclass_targets(real_test)
    rng = np.random.default_rng(cfg.seed)
    settings: list[tuple[str, float | None, np.ndarray, np.ndarray, int, int]] = [
        ("real_100", 1.0, x_real, y_real, len(x_real), 0),
        ("synthetic_only", 0.0, x_syn, y_syn, 0, len(x_syn)),
    ]
    for f in cfg.fractions:
        k = max(2, int(round(f * len(x_real))))
        idx = np.sort(rng.choice(len(x_real), min(k, len(x_real)), replace=False))
        pct = _pct(f)
        settings.append((f"real_{pct}", f, x_real[idx], y_real[idx], len(idx), 0))
        settings.append((f"real_{pct}+synthetic", f, np.concatenate([x_real[idx], x_syn]),
                         np.concatenate([y_real[idx], y_syn]), len(idx), len(x_syn)))
    rows = []
    for name, frac, x, y, n_real, n_syn in settings:
        ccfg = _budget(cfg, len(x))
        model = train_classifier(x, y, ccfg, device)
        scores = bootstrap_auroc(y_test, predict_proba(model, x_test, device), cfg.n_boot, cfg.seed,
                                 keep_samples=keep_samples)
        rows.append({"setting": name, "real_fraction": frac, "n_real": n_real, "n_synthetic": n_syn,
                     "epochs": ccfg.epochs, **scores})
        log.info("utility %-22s n_real=%4d n_syn=%4d AUROC %.3f [%.3f, %.3f]", name, n_real, n_syn,
                 scores["auroc"], scores["ci_low"], scores["ci_high"])
    return {"rows": rows, "classes": list(SUPERCLASSES), "n_test": len(x_test),
            "test_class_counts": dict(zip(SUPERCLASSES, y_test.sum(0).astype(int).tolist(), strict=True)),
            "config": asdict(cfg)}


def _budget(cfg: UtilityConfig, n: int) -> ClassifierConfig:
    per_epoch = max(1, math.ceil(n / cfg.classifier.batch_size))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))
    return replace(cfg.classifier, epochs=epochs, seed=cfg.seed)


def _pct(f: float) -> str:
    return f"{f * 100:g}pct"


def write_utility(result: dict, out: str | Path) -> None:
    """``utility.json`` (machine-readable), ``utility.md`` (table), ``utility.png`` (AUROC vs real %)."""
    out = Path(out)
    atomic_write_json(out / "utility.json", result)
    atomic_write_text(out / "utility.md", utility_table(result))
    plot_utility(result, out / "utility.png")


def utility_table(result: dict) -> str:
    lines = ["| setting | real ECGs | synthetic ECGs | macro AUROC | 95 % CI |", "|---|---:|---:|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['setting']} | {r['n_real']} | {r['n_synthetic']} | {_f(r['auroc'])} | "
                     f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}] |")
    counts = result["test_class_counts"]
    lines.append(f"\nTest: {result['n_test']} real ECGs (strat_fold 10), classes {counts}.")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def plot_utility(result: dict, path: Path) -> None:
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = {r["setting"]: r for r in result["rows"]}
    fracs = sorted({r["real_fraction"] for r in result["rows"] if r["setting"].startswith("real_")
                    and r["setting"] != "real_100"})
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for suffix, label, color in (("", "real subset only", "tab:blue"),
                                     ("+synthetic", "real subset + synthetic", "tab:orange")):
            pts = [rows[f"real_{_pct(f)}{suffix}"] for f in fracs]
            y = np.array([p["auroc"] for p in pts], dtype=float)
            err = np.array([[p["auroc"] - p["ci_low"], p["ci_high"] - p["auroc"]] for p in pts],
                           dtype=float).T
            ax.errorbar(np.array(fracs) * 100, y, yerr=np.nan_to_num(np.abs(err)), marker="o", capsize=3,
                        label=label, color=color)
        for name, style, color in (("real_100", "--", "tab:green"), ("synthetic_only", ":", "tab:red")):
            r = rows[name]
            ax.axhline(r["auroc"], linestyle=style, color=color, label=f"{name} ({_f(r['auroc'])})")
        ax.set_xscale("log")
        ax.set_xlabel("real training data used (%)")
        ax.set_ylabel("macro AUROC on real test fold")
        ax.set_title("Downstream utility (5 superclasses)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        atomic_save(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)
