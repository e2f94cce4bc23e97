"""Cheap synthetic 12-lead ECGs for the evaluation tests (Gaussian P/QRS/T waves, fixed lead projections)."""

from __future__ import annotations

import numpy as np

from evaluation.leads import to_12_leads

# (amplitude mV, centre s relative to R, width s) for the two source waveforms
_WAVES_A = ((0.15, -0.16, 0.025), (-0.1, -0.03, 0.010), (1.0, 0.0, 0.012), (-0.25, 0.03, 0.012),
            (0.3, 0.28, 0.05))
_WAVES_B = ((0.05, -0.16, 0.025), (0.2, -0.02, 0.012), (-0.6, 0.01, 0.012), (0.1, 0.04, 0.012),
            (-0.15, 0.3, 0.05))
_GAINS = np.array([[1.0, 0.1], [0.8, -0.5], [-0.3, 1.0], [0.2, 0.9], [0.6, 0.6], [0.9, 0.2], [1.1, -0.2],
                   [0.9, -0.6]], dtype=np.float32)


def toy_ecgs(n: int, hr_bpm: float = 60.0, seed: int = 0, fs: float = 100.0, length: int = 1000,
             noise_mv: float = 0.01, amp: float = 1.0) -> np.ndarray:
    """(n, 12, length) float32 mV; heart rate ``hr_bpm`` ± 3 %, lead gains jittered ± 5 % per ECG."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    out = np.empty((n, 8, length), dtype=np.float32)
    for i in range(n):
        rr = 60.0 / (hr_bpm * rng.uniform(0.97, 1.03))
        beats = np.arange(rng.uniform(0.3, 0.3 + rr), t[-1], rr)
        src = [np.zeros(length), np.zeros(length)]
        for k, waves in enumerate((_WAVES_A, _WAVES_B)):
            for r in beats:
                for a, c, w in waves:
                    src[k] += a * np.exp(-0.5 * ((t - r - c) / w) ** 2)
        gains = _GAINS * rng.uniform(0.95, 1.05, size=_GAINS.shape)
        out[i] = amp * (gains @ np.stack(src)) + rng.normal(0, noise_mv, size=(8, length))
    return to_12_leads(out)
