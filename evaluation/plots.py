"""ECG paper plots: 12 leads on standard ECG paper (25 mm/s, 10 mm/mV, 1 mm minor / 5 mm major red grid).

Layout (the usual printed 12-lead report): three rows of four 2.5 s columns
``I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6`` plus a 10 s lead II rhythm strip, each row preceded by a
1 mV × 200 ms calibration pulse. Drawing happens in millimetres of paper with an equal aspect ratio, so one
grid square is exactly 1 mm × 1 mm = 40 ms × 0.1 mV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.leads import to_12_leads
from fedecg.errors import FedECGError
from fedecg.io import atomic_save
from ptbxl.constants import LEADS_12

MM_PER_S = 25.0
MM_PER_MV = 10.0
ROW_PITCH_MM = 30.0
CAL_WIDTH_MM = 10.0
_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
_MINOR = "#f4b6b6"
_MAJOR = "#e06666"


def paper_size_mm(duration_s: float) -> tuple[float, float]:
    """Width and height of the paper area in mm for a record of ``duration_s`` seconds."""
    return CAL_WIDTH_MM + duration_s * MM_PER_S, ROW_PITCH_MM * (len(_LAYOUT) + 1)


def draw_ecg_paper(
    ax, sig12: np.ndarray, fs: float, title: str | None = None, linewidth: float = 0.6
) -> None:
    """Draw one 12-lead ECG ``(12, L)`` in mV on ``ax`` with the ECG paper grid (units: mm of paper)."""
    sig12 = np.asarray(sig12, dtype=np.float32)
    if sig12.ndim != 2 or sig12.shape[0] != 12:
        raise FedECGError(f"draw_ecg_paper needs a (12, L) array, got {sig12.shape}")
    duration = sig12.shape[1] / fs
    width, height = paper_size_mm(duration)
    _draw_grid(ax, width, height)
    col_s = duration / 4.0
    index = {name: i for i, name in enumerate(LEADS_12)}
    rows = [list(r) for r in _LAYOUT] + [["II"]]
    for r, row in enumerate(rows):
        base = height - ROW_PITCH_MM * (r + 0.6)
        _calibration_pulse(ax, base, linewidth)
        for c, lead in enumerate(row):
            if len(row) == 1:
                start, stop = 0, sig12.shape[1]
            else:
                start, stop = int(round(c * col_s * fs)), int(round((c + 1) * col_s * fs))
            seg = sig12[index[lead], start:stop]
            t_mm = CAL_WIDTH_MM + (start + np.arange(seg.size)) / fs * MM_PER_S
            ax.plot(t_mm, base + seg * MM_PER_MV, color="black", linewidth=linewidth)
            ax.text(t_mm[0] + 1.0, base + 7.0, lead, fontsize=6, color="black")
            if c > 0:
                ax.plot([t_mm[0], t_mm[0]], [base - 2.5, base + 2.5], color="black", linewidth=linewidth)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, loc="left")


def plot_ecg(
    signal: np.ndarray, path: str | Path, fs: float = 100.0, title: str | None = None, dpi: int = 150
) -> Path:
    """Write one ECG (``(12, L)`` or ``(8, L)`` in mV) as a PNG on ECG paper; returns the path."""
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sig12 = to_12_leads(np.asarray(signal))[0]
    width, height = paper_size_mm(sig12.shape[1] / fs)
    fig = plt.figure(figsize=((width + 8) / 25.4, (height + 12) / 25.4))
    ax = fig.add_axes((4 / (width + 8), 4 / (height + 12), width / (width + 8), height / (height + 12)))
    try:
        draw_ecg_paper(ax, sig12, fs, title=title)
        caption = f"{MM_PER_S:g} mm/s   {MM_PER_MV:g} mm/mV   {fs:g} Hz"
        fig.text(0.99, 0.005, caption, fontsize=6, ha="right", va="bottom")
        return _save(fig, path, dpi)
    finally:
        plt.close(fig)


def plot_ecg_grid(
    signals: np.ndarray,
    path: str | Path,
    titles: Sequence[str] | None = None,
    fs: float = 100.0,
    ncols: int | None = None,
    dpi: int = 110,
) -> Path:
    """Overview PNG of ``N`` ECGs (``(N, 12, L)`` or ``(N, 8, L)`` in mV), each on its own ECG paper panel."""
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sig = to_12_leads(np.asarray(signals))
    n = sig.shape[0]
    if n == 0:
        raise FedECGError("plot_ecg_grid: no ECGs to plot")
    if titles is not None and len(titles) != n:
        raise FedECGError(f"plot_ecg_grid: {len(titles)} titles for {n} ECGs")
    ncols = ncols or min(4, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    width, height = paper_size_mm(sig.shape[2] / fs)
    panel_w = 5.0
    panel_h = panel_w * height / width + 0.3
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, panel_h * nrows), squeeze=False)
    try:
        for i, ax in enumerate(axes.ravel()):
            if i >= n:
                ax.axis("off")
                continue
            draw_ecg_paper(ax, sig[i], fs, title=None if titles is None else titles[i], linewidth=0.35)
        fig.tight_layout(pad=0.4)
        return _save(fig, path, dpi)
    finally:
        plt.close(fig)


def _draw_grid(ax, width: float, height: float) -> None:
    ax.set_facecolor("#fff5f5")
    minor_x = np.arange(0.0, width + 1e-6, 1.0)
    minor_y = np.arange(0.0, height + 1e-6, 1.0)
    ax.vlines(minor_x, 0, height, colors=_MINOR, linewidth=0.2, zorder=0)
    ax.hlines(minor_y, 0, width, colors=_MINOR, linewidth=0.2, zorder=0)
    ax.vlines(minor_x[::5], 0, height, colors=_MAJOR, linewidth=0.5, zorder=0)
    ax.hlines(minor_y[::5], 0, width, colors=_MAJOR, linewidth=0.5, zorder=0)


def _calibration_pulse(ax, base: float, linewidth: float) -> None:
    """1 mV (10 mm) tall, 200 ms (5 mm) wide pulse at the start of a row."""
    x = [1.0, 3.0, 3.0, 8.0, 8.0, CAL_WIDTH_MM]
    y = [base, base, base + MM_PER_MV, base + MM_PER_MV, base, base]
    ax.plot(x, y, color="black", linewidth=linewidth)


def _save(fig, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    atomic_save(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    return path
