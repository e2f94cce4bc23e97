"""PNG figures for the privacy reports (matplotlib, Agg backend). Every function returns PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np


def _figure(width: float = 6.0, height: float = 3.6):
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _site_name(site: str) -> str:
    return site if str(site).startswith("site") else f"site {site}"


def epsilon_rounds_png(
    curves: Mapping[str, Sequence[tuple[int, float]]], delta_by_site: Mapping[str, float], accountant: str
) -> bytes:
    """Cumulative ε over rounds, one line per site."""
    plt, fig = _figure()
    ax = fig.add_subplot(111)
    for site, curve in curves.items():
        if curve:
            r, e = zip(*curve, strict=True)
            ax.plot(r, e, marker="o", label=f"{_site_name(site)} (δ={delta_by_site.get(site, float('nan')):.0e})")
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"ε ({accountant})")
    ax.set_title("Record-level privacy budget per site")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return _png(plt, fig)


def histograms_png(series: Mapping[str, np.ndarray], xlabel: str, title: str, vline: float | None = None) -> bytes:
    """Overlaid density histograms of several 1-D samples (e.g. DCR to train vs to holdout)."""
    plt, fig = _figure()
    ax = fig.add_subplot(111)
    finite = [np.asarray(v)[np.isfinite(v)] for v in series.values()]
    allv = np.concatenate(finite) if finite and sum(len(f) for f in finite) else np.zeros(1)
    bins = np.linspace(allv.min(), allv.max() + 1e-9, 40)
    for (name, _), v in zip(series.items(), finite, strict=True):
        ax.hist(v, bins=bins, alpha=0.5, density=True, label=f"{name} (median {np.median(v):.3g})")
    if vline is not None:
        ax.axvline(vline, color="k", ls="--", lw=1, label=f"threshold {vline:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def roc_png(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = "Membership inference ROC") -> bytes:
    """ROC curve on log-log axes (low-FPR regime visible) with the chance diagonal."""
    plt, fig = _figure(4.5, 4.0)
    ax = fig.add_subplot(111)
    ax.plot(np.clip(fpr, 1e-4, 1), np.clip(tpr, 1e-4, 1), label=f"attack (AUC {auc:.3f})")
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, "k--", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def ecg_pairs_png(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, str]],
    lead_names: Sequence[str],
    fs: float = 100.0,
    leads: Sequence[int] = (0, 1, 2),
) -> bytes:
    """Rows = pairs (synthetic, nearest training ECG, caption); columns = selected leads, signals in mV."""
    n = max(1, len(pairs))
    plt, fig = _figure(3.2 * len(leads), 1.9 * n)
    for i, (syn, real, caption) in enumerate(pairs):
        for j, lead in enumerate(leads):
            ax = fig.add_subplot(n, len(leads), i * len(leads) + j + 1)
            t = np.arange(syn.shape[-1]) / fs
            ax.plot(t, syn[lead], lw=0.8, color="tab:red", alpha=0.7, label="synthetic")
            ax.plot(t, real[lead], lw=0.8, color="tab:blue", alpha=0.9, label="nearest train")
            ax.set_title(f"{caption} · {lead_names[lead]}", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == 0 and j == 0:
                ax.legend(fontsize=6)
            if i == n - 1:
                ax.set_xlabel("s", fontsize=7)
            if j == 0:
                ax.set_ylabel("mV", fontsize=7)
    return _png(plt, fig)
