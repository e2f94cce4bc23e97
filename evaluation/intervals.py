"""ECG intervals from a standard delineator (neurokit2) and real-vs-synthetic distribution comparison.

Per ECG (lead II by default, ``fs`` Hz): ``nk.ecg_clean`` → ``nk.ecg_peaks`` (R peaks) → ``nk.ecg_delineate``
(discrete wavelet method). Per beat: QRS = R offset − R onset, QT = T offset − R onset, PR = R onset − P onset
(ms); the ECG's value is the median over beats of the physiologically plausible ones (QRS 40–200 ms,
QT 200–700 ms, PR 60–400 ms). HR = 60 / median RR (bpm, 20–250 kept). ``r_amp_mv`` is the median R-peak height
above the median of the cleaned lead, ``qrs_amp_mv`` the median peak-to-peak amplitude in ±60 ms around R.
ECGs where the delineator fails get NaN (counted in ``n_valid``).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp, wasserstein_distance

log = logging.getLogger(__name__)
MEASURES = ("hr_bpm", "qrs_ms", "qt_ms", "pr_ms", "r_amp_mv", "qrs_amp_mv")
_PLAUSIBLE = {"qrs_ms": (40, 200), "qt_ms": (200, 700), "pr_ms": (60, 400), "hr_bpm": (20, 250)}


def ecg_measures(x: np.ndarray, fs: float = 100.0, lead: int = 1) -> pd.DataFrame:
    """One row per ECG of ``x`` ``(N, C, L)`` mV with the columns ``MEASURES`` (NaN where delineation
    fails)."""
    rows = [_measure_one(np.asarray(sig[lead], dtype=np.float64), fs) for sig in np.asarray(x)]
    return pd.DataFrame(rows, columns=list(MEASURES))


def _measure_one(sig: np.ndarray, fs: float) -> dict[str, float]:
    import neurokit2 as nk  # heavy: ~2 s, pulls matplotlib and sklearn; only the delineation needs it

    out = {m: np.nan for m in MEASURES}
    if not np.isfinite(sig).all() or np.std(sig) < 1e-6:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clean = nk.ecg_clean(sig, sampling_rate=int(fs))
            _, info = nk.ecg_peaks(clean, sampling_rate=int(fs))
            rpeaks = np.asarray(info["ECG_R_Peaks"], dtype=int)
            if rpeaks.size < 3:
                return out
            rr = np.diff(rpeaks) / fs
            out["hr_bpm"] = _plausible("hr_bpm", np.array([60.0 / np.median(rr)]))
            base = np.median(clean)
            out["r_amp_mv"] = float(np.median(clean[rpeaks] - base))
            half = max(1, int(0.06 * fs))
            p2p = [np.ptp(clean[max(0, r - half) : r + half + 1]) for r in rpeaks]
            out["qrs_amp_mv"] = float(np.median(p2p))
            _, waves = nk.ecg_delineate(clean, rpeaks, sampling_rate=int(fs), method="dwt")
        except Exception as exc:  # neurokit2 raises many types on degenerate signals
            log.debug("delineation failed: %s", exc)
            return out
    w = {k: np.asarray(v, dtype=float) for k, v in waves.items()}
    ms = 1000.0 / fs
    pairs = {
        "qrs_ms": ("ECG_R_Offsets", "ECG_R_Onsets"),
        "qt_ms": ("ECG_T_Offsets", "ECG_R_Onsets"),
        "pr_ms": ("ECG_R_Onsets", "ECG_P_Onsets"),
    }
    for name, (end, start) in pairs.items():
        if end in w and start in w and len(w[end]) == len(w[start]):
            out[name] = _plausible(name, (w[end] - w[start]) * ms)
    return out


def _plausible(name: str, values: np.ndarray) -> float:
    lo, hi = _PLAUSIBLE[name]
    v = values[np.isfinite(values) & (values >= lo) & (values <= hi)]
    return float(np.median(v)) if v.size else np.nan


def compare_distributions(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per measure: real/synthetic mean, std and median, the 1-Wasserstein distance (measure's unit) and the
    two-sample Kolmogorov–Smirnov statistic (0..1); identical samples → both 0. NaNs are dropped."""
    out: dict[str, dict[str, float]] = {}
    for m in MEASURES:
        r = real[m].dropna().to_numpy() if m in real else np.array([])
        s = synthetic[m].dropna().to_numpy() if m in synthetic else np.array([])
        row = {"n_valid_real": int(r.size), "n_valid_synthetic": int(s.size)}
        for tag, v in (("real", r), ("synthetic", s)):
            row[f"{tag}_mean"] = float(v.mean()) if v.size else float("nan")
            row[f"{tag}_std"] = float(v.std()) if v.size else float("nan")
            row[f"{tag}_median"] = float(np.median(v)) if v.size else float("nan")
        if r.size and s.size:
            row["wasserstein"] = float(wasserstein_distance(r, s))
            row["ks"] = float(ks_2samp(r, s).statistic)
        else:
            row["wasserstein"] = row["ks"] = float("nan")
        out[m] = row
    return out
