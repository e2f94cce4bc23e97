"""Realism metrics: does a synthetic ECG set look like ECGs, or like noise? (numpy, mV, ``fs`` Hz, 12 leads in
PTB-XL order). Exact definitions, calibration and measured values: docs/evaluation.md, "Realism metrics".

- **Beats** (lead II): a band-pass (5–20 Hz) + squared-slope R-peak detector with a 250 ms refractory period
  and Pan–Tompkins' T-wave rule (see ``detect_r_peaks``). An ECG has a *regular beat rhythm* when it has
  ≥ 4 beats, heart rate (60 / median RR) 30–220 bpm, RR coefficient of variation ≤ 0.35 (generous: atrial
  fibrillation in PTB-XL mostly stays below it) and consistent beats (median pairwise correlation of the
  1–40 Hz filtered ±200 ms beat windows, each pair aligned within ±30 ms, ≥ 0.5; noise scores ≈ 0.25).
  ``beat_rate`` = share of synthetic ECGs with a regular beat rhythm (``beat_rate_real`` for the real set).
- **Heart-rate distance**: 1-Wasserstein distance (bpm) between the per-ECG heart rates of the ECGs with
  ≥ 4 detected beats.
- **Amplitude ratio**: median over ECGs of lead II's 99th − 1st percentile, synthetic / real.
- **HF power ratio**: per ECG, the share of periodogram power (all leads, mean removed, DC excluded) above
  25 Hz; the set's mean; synthetic / real.
- **ILC error** (pooled, ``evaluation.fidelity.inter_lead_correlation_error``) and **spectral distance**
  (mean over leads of ``evaluation.fidelity.psd_distance_per_lead``, dB).

``realism_criteria`` applies the product's acceptance thresholds (``CRITERIA``); ``format_realism`` prints them.
Undefined values (e.g. no ECG with beats, a zero denominator) are ``None``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt
from scipy.stats import wasserstein_distance

from evaluation import fidelity
from fedecg.errors import FedECGError

# metric → (lower bound, upper bound), None = unbounded; the acceptance criteria of a synthetic set
CRITERIA: dict[str, tuple[float | None, float | None]] = {
    "beat_rate": (0.90, None),
    "inter_lead_correlation_error": (None, 0.15),
    "hf_power_ratio": (None, 2.0),
    "amplitude_ratio": (0.5, 2.0),
}
_MIN_FS = 60.0
_MIN_SECONDS = 2.0
_CHUNK = 256


@dataclass(frozen=True)
class RhythmConfig:
    """Settings of the R-peak detector and of the regular-rhythm test (Hz, seconds, bpm)."""

    lead: int = 1  # lead II in PTB-XL order
    detect_band_hz: tuple[float, float] = (5.0, 20.0)
    envelope_s: float = 0.05  # moving average of the squared slope
    threshold_frac: float = 0.3  # × the envelope's 98th percentile
    threshold_percentile: float = 98.0
    refractory_s: float = 0.25  # ≤ 240 bpm
    t_wave_s: float = 0.36  # a peak this soon after a beat ...
    t_wave_ratio: float = 0.5  # ... with less than this × its envelope height is a T wave
    min_beats: int = 4
    hr_range_bpm: tuple[float, float] = (30.0, 220.0)
    max_rr_cv: float = 0.35
    morph_band_hz: tuple[float, float] = (1.0, 40.0)
    morph_half_s: float = 0.2
    morph_lag_s: float = 0.03
    min_consistency: float = 0.5
    hf_cutoff_hz: float = 25.0


def realism_metrics(real: np.ndarray, synthetic: np.ndarray, fs: float = 100.0) -> dict:
    """Realism of ``synthetic`` against ``real`` (both (N, 12, L) mV, PTB-XL lead order); JSON-serialisable
    dict of floats (``None`` where undefined). Keys: see the module docstring and docs/evaluation.md."""
    cfg = RhythmConfig()
    fs = _check_fs(fs)
    real = _check_set("real", real, fs)
    synthetic = _check_set("synthetic", synthetic, fs)

    b_real, b_syn = beat_features(real, fs, cfg), beat_features(synthetic, fs, cfg)
    hr_real = b_real["hr_bpm"][np.isfinite(b_real["hr_bpm"])]
    hr_syn = b_syn["hr_bpm"][np.isfinite(b_syn["hr_bpm"])]
    hr_distance = None
    if hr_real.size and hr_syn.size:
        hr_distance = float(wasserstein_distance(hr_real, hr_syn))

    amp_real = float(np.median(robust_amplitude(real, cfg.lead)))
    amp_syn = float(np.median(robust_amplitude(synthetic, cfg.lead)))
    hf_real = _nanmean(hf_power_share(real, fs, cfg.hf_cutoff_hz))
    hf_syn = _nanmean(hf_power_share(synthetic, fs, cfg.hf_cutoff_hz))
    ilc = fidelity.inter_lead_correlation_error(real, synthetic)["value"]
    psd = fidelity.psd_distance_per_lead(real, synthetic, fidelity.SpectralConfig(fs=fs))

    out = {
        "beat_rate": float(b_syn["regular"].mean()),
        "beat_rate_real": float(b_real["regular"].mean()),
        "heart_rate_distance": hr_distance,
        "heart_rate_median_real": _median(hr_real),
        "heart_rate_median_synthetic": _median(hr_syn),
        "amplitude_ratio": _ratio(amp_syn, amp_real),
        "amplitude_median_real_mv": amp_real,
        "amplitude_median_synthetic_mv": amp_syn,
        "hf_power_ratio": _ratio(hf_syn, hf_real),
        "hf_power_share_real": hf_real,
        "hf_power_share_synthetic": hf_syn,
        "inter_lead_correlation_error": float(ilc),
        "spectral_distance": float(np.mean(list(psd.values()))),
        "rr_cv_median_real": _median(b_real["rr_cv"]),
        "rr_cv_median_synthetic": _median(b_syn["rr_cv"]),
        "beat_consistency_median_real": _median(b_real["consistency"]),
        "beat_consistency_median_synthetic": _median(b_syn["consistency"]),
        "n_real": int(len(real)),
        "n_synthetic": int(len(synthetic)),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def realism_criteria(metrics: dict) -> dict[str, bool]:
    """Each acceptance criterion of ``CRITERIA`` → met? (an undefined value fails)."""
    out = {}
    for key, (lo, hi) in CRITERIA.items():
        v = metrics.get(key)
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        out[key] = bool(ok and (lo is None or v >= lo) and (hi is None or v <= hi))
    return out


def realism_summary(metrics: dict) -> str:
    """One line: how many criteria are met and which failed, e.g.
    ``realism: 2/4 criteria met; failed: beat_rate 0.000 (>= 0.9), hf_power_ratio 21.4 (<= 2)``."""
    crit = realism_criteria(metrics)
    failed = [f"{k} {_fmt(metrics.get(k))} ({_criterion_text(k)})" for k, ok in crit.items() if not ok]
    head = f"realism: {sum(crit.values())}/{len(crit)} criteria met"
    return head + (f"; failed: {', '.join(failed)}" if failed else " (looks like ECGs)")


def format_realism(metrics: dict) -> str:
    """A small plain-text table (metric, value, criterion, ok) plus the summary line, for printing."""
    crit = realism_criteria(metrics)
    rows = [(k, _fmt(metrics.get(k)), _criterion_text(k), "yes" if crit[k] else "NO") for k in CRITERIA]
    info = [
        ("beat_rate_real", "beat_rate_real"),
        ("heart_rate_distance (bpm)", "heart_rate_distance"),
        ("heart_rate_median real/syn (bpm)", ("heart_rate_median_real", "heart_rate_median_synthetic")),
        ("amplitude_median real/syn (mV)", ("amplitude_median_real_mv", "amplitude_median_synthetic_mv")),
        ("hf_power_share real/syn", ("hf_power_share_real", "hf_power_share_synthetic")),
        ("spectral_distance (dB)", "spectral_distance"),
    ]
    for label, keys in info:
        value = (
            f"{_fmt(metrics.get(keys[0]))} / {_fmt(metrics.get(keys[1]))}"
            if isinstance(keys, tuple)
            else _fmt(metrics.get(keys))
        )
        rows.append((label, value, "", ""))
    header = ("metric", "value", "criterion", "ok")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    title = f"realism: {metrics.get('n_synthetic')} synthetic vs {metrics.get('n_real')} real ECGs"

    def line(r: tuple[str, ...]) -> str:
        return "  ".join([r[0].ljust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3]]).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(header), sep, *(line(r) for r in rows), realism_summary(metrics)])


# ---- building blocks (public: used by the tests and handy on their own) ----


def detect_r_peaks(sig: np.ndarray, fs: float = 100.0, cfg: RhythmConfig = RhythmConfig()) -> np.ndarray:
    """R-peak sample indices of one lead ``sig`` (L,) mV.

    Band-pass ``detect_band_hz`` (Butterworth order 3, zero-phase), envelope = moving average
    (``envelope_s``) of the squared first difference, peaks above ``threshold_frac`` × its
    ``threshold_percentile`` percentile at least ``refractory_s`` apart; a peak within ``t_wave_s`` of the
    previous beat whose envelope is below ``t_wave_ratio`` × the beat's is dropped as a T wave. Polarity-free
    (inverted QRS complexes are found too)."""
    sig = np.asarray(sig, dtype=np.float64)
    if sig.size < 3 or np.std(sig) < 1e-6:
        return np.zeros(0, dtype=int)
    return _peaks_from_bandpassed(sosfiltfilt(_sos(cfg.detect_band_hz, fs, 3), sig), fs, cfg)


def _peaks_from_bandpassed(bp: np.ndarray, fs: float, cfg: RhythmConfig) -> np.ndarray:
    env = uniform_filter1d(np.diff(bp, prepend=bp[0]) ** 2, max(1, int(round(cfg.envelope_s * fs))))
    thr = cfg.threshold_frac * np.percentile(env, cfg.threshold_percentile)
    if not thr > 0:
        return np.zeros(0, dtype=int)
    peaks, props = find_peaks(env, height=thr, distance=max(1, int(round(cfg.refractory_s * fs))))
    kept: list[int] = []
    last_height = 0.0
    for p, h in zip(peaks, props["peak_heights"], strict=True):
        if kept and p - kept[-1] < cfg.t_wave_s * fs and h < cfg.t_wave_ratio * last_height:
            continue
        kept.append(int(p))
        last_height = float(h)
    return np.asarray(kept, dtype=int)


def beat_features(x: np.ndarray, fs: float = 100.0, cfg: RhythmConfig = RhythmConfig()) -> dict[str, np.ndarray]:
    """Per ECG of ``x`` (N, C, L) on lead ``cfg.lead``: ``n_beats``, ``hr_bpm`` (60 / median RR; NaN with fewer
    than ``min_beats`` beats), ``rr_cv`` (SD / mean of RR), ``consistency`` (see ``beat_consistency``) and
    ``regular`` (bool: the regular-rhythm test of the module docstring)."""
    x = np.asarray(x)
    n = len(x)
    out = {k: np.full(n, np.nan) for k in ("hr_bpm", "rr_cv", "consistency")}
    out["n_beats"] = np.zeros(n, dtype=int)
    detect_sos, morph_sos = _sos(cfg.detect_band_hz, fs, 3), _sos(cfg.morph_band_hz, fs, 2)
    for s in range(0, n, _CHUNK):
        leads = np.asarray(x[s : s + _CHUNK, cfg.lead], dtype=np.float64)
        flat = leads.std(axis=-1) < 1e-6
        bps, morphs = sosfiltfilt(detect_sos, leads, axis=-1), sosfiltfilt(morph_sos, leads, axis=-1)
        for j in range(len(leads)):
            i = s + j
            peaks = np.zeros(0, dtype=int) if flat[j] else _peaks_from_bandpassed(bps[j], fs, cfg)
            out["n_beats"][i] = len(peaks)
            if len(peaks) < max(cfg.min_beats, 3):
                continue
            rr = np.diff(peaks) / fs
            out["hr_bpm"][i] = 60.0 / np.median(rr)
            out["rr_cv"][i] = rr.std() / rr.mean()
            out["consistency"][i] = beat_consistency(morphs[j], peaks, fs, cfg)
    lo, hi = cfg.hr_range_bpm
    with np.errstate(invalid="ignore"):
        out["regular"] = (
            (out["n_beats"] >= cfg.min_beats)
            & (out["hr_bpm"] >= lo)
            & (out["hr_bpm"] <= hi)
            & (out["rr_cv"] <= cfg.max_rr_cv)
            & (out["consistency"] >= cfg.min_consistency)
        )
    return out


def beat_consistency(
    sig: np.ndarray, peaks: np.ndarray, fs: float = 100.0, cfg: RhythmConfig = RhythmConfig()
) -> float:
    """Median over beat pairs of the Pearson correlation of their ±``morph_half_s`` windows of ``sig``, the
    second window shifted by the best lag within ±``morph_lag_s``; beats too close to the edges are skipped.
    NaN with fewer than 3 usable beats. Real ECGs ≈ 0.97, white noise ≈ 0.25."""
    half, lag = int(round(cfg.morph_half_s * fs)), int(round(cfg.morph_lag_s * fs))
    peaks = np.asarray(peaks, dtype=int)
    peaks = peaks[(peaks - half - lag >= 0) & (peaks + half + lag < len(sig))]
    if len(peaks) < 3:
        return float("nan")
    lags = np.arange(-lag, lag + 1)
    idx = peaks[:, None, None] + lags[None, :, None] + np.arange(-half, half + 1)[None, None, :]
    seg = sig[idx]
    seg = seg - seg.mean(axis=-1, keepdims=True)
    seg = seg / np.maximum(np.linalg.norm(seg, axis=-1, keepdims=True), 1e-12)
    corr = np.einsum("iw,jlw->ijl", seg[:, lag], seg).max(axis=-1)
    return float(np.median(corr[np.triu_indices(len(peaks), 1)]))


def robust_amplitude(x: np.ndarray, lead: int = 1) -> np.ndarray:
    """Per ECG: 99th − 1st percentile of lead ``lead`` (mV)."""
    sig = np.asarray(x)[:, lead].astype(np.float64)
    p1, p99 = np.percentile(sig, [1.0, 99.0], axis=-1)
    return p99 - p1


def hf_power_share(x: np.ndarray, fs: float = 100.0, cutoff_hz: float = 25.0) -> np.ndarray:
    """Per ECG of ``x`` (N, C, L): periodogram power above ``cutoff_hz`` / power above 0 Hz, summed over all
    leads after removing each lead's mean (NaN for an all-flat ECG)."""
    x = np.asarray(x)
    freqs = np.fft.rfftfreq(x.shape[-1], d=1.0 / fs)
    hf, pos = freqs > cutoff_hz, freqs > 0
    out = np.empty(len(x))
    for s in range(0, len(x), _CHUNK):
        chunk = x[s : s + _CHUNK].astype(np.float64)
        spec = np.abs(np.fft.rfft(chunk - chunk.mean(axis=-1, keepdims=True), axis=-1)) ** 2
        total = spec[..., pos].sum(axis=(-1, -2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + _CHUNK] = np.where(total > 0, spec[..., hf].sum(axis=(-1, -2)) / total, np.nan)
    return out


# ---- helpers ----


@functools.lru_cache(maxsize=16)
def _sos(band: tuple[float, float], fs: float, order: int) -> np.ndarray:
    return butter(order, [band[0], min(band[1], 0.45 * fs)], btype="band", fs=fs, output="sos")


def _check_fs(fs: float) -> float:
    try:
        fs = float(fs)
    except (TypeError, ValueError) as exc:
        raise FedECGError(f"realism_metrics: fs must be a number in Hz, got {fs!r}") from exc
    if not math.isfinite(fs) or fs < _MIN_FS:
        raise FedECGError(f"realism_metrics: fs must be >= {_MIN_FS:g} Hz (the HF band starts at 25 Hz), got {fs}")
    return fs


def _check_set(name: str, x, fs: float) -> np.ndarray:
    try:
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiu":
            arr = arr.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise FedECGError(f"realism_metrics: {name} ECGs are not a numeric array ({exc})") from exc
    if arr.ndim != 3 or arr.shape[1] != 12:
        raise FedECGError(f"realism_metrics: {name} ECGs must be (N, 12, L) in PTB-XL lead order, got {arr.shape}")
    if arr.shape[0] == 0:
        raise FedECGError(f"realism_metrics: the {name} set is empty")
    if arr.shape[2] < _MIN_SECONDS * fs:
        raise FedECGError(
            f"realism_metrics: {name} ECGs have {arr.shape[2]} samples, need >= {_MIN_SECONDS:g} s at {fs:g} Hz"
        )
    bad = ~np.isfinite(arr).all(axis=(1, 2))
    if bad.any():
        raise FedECGError(
            f"realism_metrics: {int(bad.sum())} {name} ECG(s) contain NaN/Inf (first at index {int(np.argmax(bad))})"
        )
    return arr


def _ratio(num: float, den: float) -> float:
    return num / den if math.isfinite(num) and math.isfinite(den) and den > 0 else float("nan")


def _median(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _criterion_text(key: str) -> str:
    lo, hi = CRITERIA[key]
    if lo is not None and hi is not None:
        return f"{lo:g} .. {hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return str(v) if isinstance(v, (int, np.integer)) else f"{v:.3g}"
