"""evaluation.personalisation: effect sizes and direction agreement."""

import numpy as np
import pandas as pd
import pytest

from evaluation.personalisation import cohens_d, compare_effects, effect_sizes


def _set(seed: int, age_slope: float):
    rng = np.random.default_rng(seed)
    demo = pd.DataFrame({"age": rng.uniform(20, 80, 60), "sex": rng.integers(0, 2, 60).astype(float),
                         "height": rng.normal(170, 10, 60), "weight": rng.normal(75, 10, 60)})
    meas = pd.DataFrame({"hr_bpm": 70 + age_slope * demo["age"] + rng.normal(0, 1, 60),
                         "qrs_ms": 90 + 10 * demo["sex"] + rng.normal(0, 2, 60),
                         "qt_ms": rng.normal(400, 20, 60), "r_amp_mv": rng.normal(1, 0.1, 60),
                         "qrs_amp_mv": rng.normal(1.2, 0.1, 60)})
    return demo, meas


def test_cohens_d_known_value():
    a, b = np.array([2.0, 4.0, 6.0]), np.array([0.0, 2.0, 4.0])

    assert cohens_d(a, b) == pytest.approx(1.0)
    assert np.isnan(cohens_d(a[:1], b))


def test_effect_sizes_find_planted_effects():
    demo, meas = _set(0, age_slope=0.5)

    eff = effect_sizes(demo, meas)

    assert eff["age"]["hr_bpm"] > 0.9
    assert eff["sex"]["qrs_ms"] > 2.0
    assert abs(eff["height"]["qt_ms"]) < 0.4


def test_direction_agreement_detects_a_reversed_effect():
    real = effect_sizes(*_set(0, age_slope=0.5))
    same = effect_sizes(*_set(1, age_slope=0.5))
    reversed_ = effect_sizes(*_set(2, age_slope=-0.5))

    agree = compare_effects(real, same)
    disagree = compare_effects(real, reversed_)

    assert agree["effects"]["age"]["hr_bpm"]["same_direction"] is True
    assert disagree["effects"]["age"]["hr_bpm"]["same_direction"] is False
    assert agree["direction_agreement"] > disagree["direction_agreement"]
