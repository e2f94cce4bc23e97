"""evaluation.intervals: delineator-based measures and real-vs-synthetic distribution comparison."""

import numpy as np
import pandas as pd
import pytest

from evaluation.intervals import MEASURES, compare_distributions, ecg_measures
from tests._evaluation_ecgs import toy_ecgs


def test_heart_rate_of_toy_ecgs_is_recovered():
    slow, fast = ecg_measures(toy_ecgs(3, hr_bpm=60, seed=0)), ecg_measures(toy_ecgs(3, hr_bpm=100, seed=1))

    assert slow["hr_bpm"].between(55, 65).all()
    assert fast["hr_bpm"].between(92, 108).all()
    assert list(slow.columns) == list(MEASURES)


def test_amplitude_scaling_scales_r_amplitude():
    base = ecg_measures(toy_ecgs(2, seed=3))
    doubled = ecg_measures(toy_ecgs(2, seed=3, amp=2.0, noise_mv=0.02))

    assert np.allclose(doubled["r_amp_mv"], 2 * base["r_amp_mv"], rtol=0.1)


def test_flat_signal_gives_nan_not_an_exception():
    out = ecg_measures(np.zeros((1, 12, 1000), dtype=np.float32))

    assert out.isna().all(axis=None)


def test_identical_distributions_have_zero_distance_and_shift_is_measured():
    df = pd.DataFrame({m: np.random.default_rng(0).normal(100, 10, 50) for m in MEASURES})
    shifted = df + 5.0

    same = compare_distributions(df, df)
    moved = compare_distributions(df, shifted)

    assert all(same[m]["wasserstein"] == 0 and same[m]["ks"] == 0 for m in MEASURES)
    assert moved["qt_ms"]["wasserstein"] == pytest.approx(5.0)
    assert moved["qt_ms"]["synthetic_mean"] - moved["qt_ms"]["real_mean"] == pytest.approx(5.0)
