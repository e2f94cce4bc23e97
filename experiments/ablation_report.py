"""Side-by-side table (Markdown) and figure (PNG) of the ablation result dict (``experiments.ablation``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedecg.io import atomic_save

_ROWS = (
    ("inter_lead_correlation_error", "ILC error ↓"),
    ("fid", "FID ↓"),
    ("psd_distance_db", "PSD distance dB ↓"),
    ("mel_distance_db", "Mel distance dB ↓"),
    ("snr_db", "SNR dB"),
    ("personalisation_agreement", "personalisation agreement ↑"),
    ("dcr_train_median", "median DCR to train ↑"),
    ("nndr_median", "median NNDR ↑"),
    ("near_copy_share", "near-copy share ↓"),
)


def _f(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v * 100:+.1f} %" if pct else f"{v:.4g}"


def ablation_table(result: dict) -> str:
    variants = result["variants"]
    names = list(variants)
    rel = result["relative_change_vs_sssd_ecg"]
    others = [n for n in names if n in rel]
    head = "| metric | " + " | ".join(variants[n]["label"] for n in names) + " | " + " | ".join(
        f"Δ {n} vs sssd_ecg (95 % CI)" for n in others) + " |"
    lines = [head, "|---" * (1 + len(names) + len(others)) + "|"]
    for key, label in _ROWS:
        cells = [_f(variants[n].get(key)) for n in names]
        if key == "inter_lead_correlation_error":
            cells = [f"{_f(variants[n][key])} {_ci(variants[n].get(key + '_ci95'))}" for n in names]
        deltas = [_delta(rel[n].get(key)) for n in others]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")
    settings = list(next(iter(variants.values()))["utility"])
    for s in settings:
        cells = [f"{_f(variants[n]['utility'][s]['auroc'])} "
                 f"{_ci([variants[n]['utility'][s]['ci_low'], variants[n]['utility'][s]['ci_high']])}"
                 for n in names]
        deltas = [_delta(rel[n].get(f"auroc:{s}")) if f"auroc:{s}" in rel[n] else "" for n in others]
        lines.append(f"| AUROC {s} ↑ | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")
    p = result["preset"]
    lines.append(f"\nPreset {p['name']}: model {p['model']}, {p['rounds']} rounds × {p['local_steps']} "
                 f"local steps, {p['n_synthetic']} synthetic ECGs (DDIM {p['sampling_steps']} steps), "
                 f"seed {result['seed']}; "
                 f"dataset {result['dataset']}.")
    return "\n".join(lines) + "\n"


def _ci(ci) -> str:
    if not ci or any(c is None for c in ci):
        return ""
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def _delta(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    ci = entry.get("ci95")
    text = _f(entry.get("relative_change"), pct=True)
    if ci:
        text += f" [{_f(ci[0], True)}, {_f(ci[1], True)}]"
    return text


def plot_ablation(result: dict, path: Path) -> None:
    """Three panels: ILC error (95 % CI), AUROC of the synthetic settings (95 % CI), median DCR to train."""
    import matplotlib  # local: only drawing needs it, and the Agg backend is chosen before pyplot loads

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = result["variants"]
    names = list(variants)
    colors = ["tab:gray", "tab:blue", "tab:orange"][: len(names)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    try:
        ilc = [variants[n]["inter_lead_correlation_error"] or np.nan for n in names]
        cis = [variants[n].get("inter_lead_correlation_error_ci95") or [np.nan, np.nan] for n in names]
        _bars(axes[0], names, ilc, cis, colors, "inter-lead correlation error (lower is better)")
        settings = [s for s in next(iter(variants.values()))["utility"] if "synthetic" in s]
        width = 0.8 / max(1, len(names))
        for i, n in enumerate(names):
            u = variants[n]["utility"]
            y, lo, hi = (np.array([np.nan if u[s][k] is None else u[s][k] for s in settings], float)
                         for k in ("auroc", "ci_low", "ci_high"))
            x = np.arange(len(settings)) + (i - (len(names) - 1) / 2) * width
            axes[1].bar(x, y, width, color=colors[i], label=variants[n]["label"],
                        yerr=np.nan_to_num(np.abs(np.stack([y - lo, hi - y]))), capsize=2)
        axes[1].set_xticks(np.arange(len(settings)), settings, rotation=20, fontsize=7)
        axes[1].set_ylim(0.3, 1.0)
        axes[1].set_title("macro AUROC on real test fold", fontsize=9)
        axes[1].legend(fontsize=6)
        dcr = [variants[n]["dcr_train_median"] or np.nan for n in names]
        _bars(axes[2], names, dcr, None, colors, "median DCR to training records (higher = less copying)")
        fig.suptitle(f"Ablation ({result['preset']['name']} preset)", fontsize=10)
        fig.tight_layout()
        atomic_save(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)


def _bars(ax, names, values, cis, colors, title) -> None:
    values = np.asarray(values, float)
    yerr = None
    if cis is not None:
        cis = np.asarray(cis, float)
        yerr = np.nan_to_num(np.abs(np.stack([values - cis[:, 0], cis[:, 1] - values])))
    ax.bar(np.arange(len(names)), values, color=colors, yerr=yerr, capsize=3)
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    ax.set_title(title, fontsize=9)
