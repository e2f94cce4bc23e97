"""Signal-level fidelity metrics between a real and a synthetic ECG set (numpy arrays, mV, ``fs`` Hz).

Definitions (all documented in docs/evaluation.md):

- **Inter-lead correlation (ILC) error.** For ECG *i*, ``R_i`` is the 12×12 Pearson correlation matrix of its
  leads over time (a flat lead correlates 0 with the others). ECGs are grouped by condition (default: the set
  of diagnostic superclasses). For a group *g* present in both sets with at least ``min_group`` ECGs each,
  ``C_g^real`` and ``C_g^syn`` are the element-wise means of ``R_i`` over the group's real / synthetic ECGs
  and ``e_g = mean_{j≠k} |C_g^real[j,k] − C_g^syn[j,k]|`` (the 132 off-diagonal entries). The ILC error is the
  mean of ``e_g`` over matched groups weighted by the group's number of synthetic ECGs (i.e. the mean over
  synthetic ECGs of their group's error; range 0..2; identical sets → 0). No matched group → one pooled group.
- **SNR (dB)** of one ECG: ``10·log10(P_band / P_out)`` with powers from the periodogram of every lead
  (mean removed, DC bin excluded) summed over leads; the band is 0.5–40 Hz (the ECG's diagnostic band) and
  ``P_out`` is the power outside it (baseline wander and high-frequency noise). The set's SNR is the mean.
- **PSD distance per lead (dB):** ``mean_f |10·log10 P̄_real(f) − 10·log10 P̄_syn(f)|`` over 0.5 Hz ≤ f ≤ fs/2,
  with ``P̄`` the Welch PSD (nperseg 256) averaged over the set's ECGs.
- **Mel distance per lead (dB):** the same L1 distance between the set-mean log-Mel spectra (librosa
  mel-spectrogram, n_fft 128, hop 32, 16 Mel bands 0.5 Hz..fs/2, 10·log10 power averaged over frames and
  ECGs).
- **FID:** Fréchet distance between Gaussians fitted to classifier embeddings,
  ``‖μ_r − μ_s‖² + Tr(Σ_r + Σ_s − 2 (Σ_r Σ_s)^{1/2})``.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import librosa
import numpy as np
from scipy.linalg import sqrtm
from scipy.signal import welch

from fedecg.errors import FedECGError
from ptbxl.constants import LEADS_12

_EPS_POWER = 1e-10


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of the spectral metrics (Hz, samples)."""

    fs: float = 100.0
    band_hz: tuple[float, float] = (0.5, 40.0)
    welch_nperseg: int = 256
    n_fft: int = 128
    hop: int = 32
    n_mels: int = 16


def correlation_matrices(x: np.ndarray) -> np.ndarray:
    """Per-ECG Pearson correlation matrices ``(N, C, C)`` of ``x`` ``(N, C, L)``; flat leads → 0
    off-diagonal."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=2, keepdims=True)
    norm = np.sqrt((xc**2).sum(axis=2, keepdims=True))
    z = np.divide(xc, norm, out=np.zeros_like(xc), where=norm > 1e-12)
    r = np.einsum("ncl,ndl->ncd", z, z)
    idx = np.arange(x.shape[1])
    r[:, idx, idx] = 1.0
    return np.clip(r, -1.0, 1.0)


def inter_lead_correlation_error(
    real: np.ndarray,
    synthetic: np.ndarray,
    real_groups: Sequence[str] | None = None,
    synthetic_groups: Sequence[str] | None = None,
    min_group: int = 3,
    n_boot: int = 0,
    seed: int = 0,
    keep_samples: bool = False,
) -> dict:
    """ILC error (see module docstring) with per-group values; ``n_boot`` > 0 adds a 95 % bootstrap CI
    (ECGs resampled with replacement within each group of each set)."""
    _check_pair(real, synthetic)
    r_mats, s_mats = correlation_matrices(real), correlation_matrices(synthetic)
    real_groups = list(real_groups) if real_groups is not None else ["all"] * len(r_mats)
    synthetic_groups = list(synthetic_groups) if synthetic_groups is not None else ["all"] * len(s_mats)
    r_idx, s_idx = _group_index(real_groups), _group_index(synthetic_groups)
    matched = sorted(
        g for g in r_idx if g in s_idx and len(r_idx[g]) >= min_group and len(s_idx[g]) >= min_group
    )
    pooled = False
    if not matched:
        pooled, matched = True, ["all"]
        r_idx, s_idx = {"all": np.arange(len(r_mats))}, {"all": np.arange(len(s_mats))}
    off = ~np.eye(r_mats.shape[1], dtype=bool)

    weights = np.array([len(s_idx[g]) for g in matched], dtype=np.float64)
    weights /= weights.sum()

    def error(r_sel: dict, s_sel: dict) -> dict[str, float]:
        return {
            g: float(np.abs(r_mats[r_sel[g]].mean(0) - s_mats[s_sel[g]].mean(0))[off].mean()) for g in matched
        }

    per_group = error(r_idx, s_idx)
    out = {
        "value": float(np.dot(weights, list(per_group.values()))),
        "per_group": per_group,
        "n_groups": len(matched),
        "pooled_fallback": pooled,
        "group_sizes": {g: [int(len(r_idx[g])), int(len(s_idx[g]))] for g in matched},
    }
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            rb = {g: rng.choice(r_idx[g], len(r_idx[g])) for g in matched}
            sb = {g: rng.choice(s_idx[g], len(s_idx[g])) for g in matched}
            boots.append(float(np.dot(weights, list(error(rb, sb).values()))))
        out["ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        if keep_samples:
            out["boot"] = [float(b) for b in boots]
    return out


def snr_db(x: np.ndarray, fs: float = 100.0, band_hz: tuple[float, float] = (0.5, 40.0)) -> np.ndarray:
    """Per-ECG SNR in dB (``(N,)``) of ``x`` ``(N, C, L)``: in-band over out-of-band periodogram power."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x - x.mean(axis=-1, keepdims=True), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], d=1.0 / fs)
    in_band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    out_band = ~in_band & (freqs > 0)
    p_in = spec[..., in_band].sum(axis=(-1, -2))
    p_out = spec[..., out_band].sum(axis=(-1, -2))
    floor = 1e-12 * np.maximum(p_in, 1e-30)
    return 10.0 * np.log10(np.maximum(p_in, 1e-30) / np.maximum(p_out, floor))


def psd_distance_per_lead(
    real: np.ndarray,
    synthetic: np.ndarray,
    cfg: SpectralConfig = SpectralConfig(),
    lead_names: Sequence[str] = LEADS_12,
) -> dict[str, float]:
    """Per-lead L1 distance (dB) between the set-mean Welch PSDs."""
    _check_pair(real, synthetic)
    nper = min(cfg.welch_nperseg, real.shape[-1], synthetic.shape[-1])
    f, p_r = welch(np.asarray(real, np.float64), fs=cfg.fs, nperseg=nper, axis=-1)
    _, p_s = welch(np.asarray(synthetic, np.float64), fs=cfg.fs, nperseg=nper, axis=-1)
    keep = f >= cfg.band_hz[0]
    d = np.abs(10 * np.log10(p_r.mean(0) + _EPS_POWER) - 10 * np.log10(p_s.mean(0) + _EPS_POWER))
    return _per_lead(d[:, keep].mean(axis=1), lead_names)


def log_mel_spectra(x: np.ndarray, cfg: SpectralConfig = SpectralConfig()) -> np.ndarray:
    """Set-mean log-Mel spectrum ``(C, n_mels)`` in dB of ``x`` ``(N, C, L)`` (mean over ECGs and frames)."""
    mel = librosa.feature.melspectrogram(
        y=np.asarray(x, dtype=np.float32),
        sr=cfg.fs,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop,
        n_mels=cfg.n_mels,
        fmin=cfg.band_hz[0],
        fmax=cfg.fs / 2,
        power=2.0,
        center=True,
    )
    return (10 * np.log10(mel.astype(np.float64) + _EPS_POWER)).mean(axis=(0, -1))


def mel_distance_per_lead(
    real: np.ndarray,
    synthetic: np.ndarray,
    cfg: SpectralConfig = SpectralConfig(),
    lead_names: Sequence[str] = LEADS_12,
) -> dict[str, float]:
    """Per-lead L1 distance (dB) between the set-mean log-Mel spectra."""
    _check_pair(real, synthetic)
    d = np.abs(log_mel_spectra(real, cfg) - log_mel_spectra(synthetic, cfg)).mean(axis=1)
    return _per_lead(d, lead_names)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings ``a`` (N, D) and ``b`` (M, D)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise FedECGError(f"frechet_distance needs two (N>=2, D) embedding sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    jitter = 1e-6 * np.eye(a.shape[1])  # dead ReLU units make covariances singular
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = np.real(sqrtm((cov_a + jitter) @ (cov_b + jitter)))
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
    return max(value, 0.0)


def _per_lead(values: np.ndarray, lead_names: Sequence[str]) -> dict[str, float]:
    names = list(lead_names) if len(lead_names) == len(values) else [f"lead{i}" for i in range(len(values))]
    return {n: float(v) for n, v in zip(names, values, strict=True)}


def _group_index(groups: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        out[g].append(i)
    return {g: np.asarray(v) for g, v in out.items()}


def _check_pair(real: np.ndarray, synthetic: np.ndarray) -> None:
    if real.ndim != 3 or synthetic.ndim != 3 or real.shape[1] != synthetic.shape[1]:
        raise FedECGError(f"real {real.shape} and synthetic {synthetic.shape} must be (N, C, L) with equal C")
    if len(real) == 0 or len(synthetic) == 0:
        raise FedECGError("real and synthetic sets must both be non-empty")
