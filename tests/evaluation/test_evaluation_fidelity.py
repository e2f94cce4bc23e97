"""Known-answer tests of the fidelity metrics in evaluation.fidelity."""

import numpy as np
import pytest

from evaluation import fidelity
from fedecg.errors import FedECGError
from tests._evaluation_ecgs import toy_ecgs


@pytest.fixture(scope="module")
def real():
    return toy_ecgs(24, seed=1)


def test_identical_sets_have_zero_ilc_psd_and_mel_error(real):
    ilc = fidelity.inter_lead_correlation_error(real, real.copy())
    psd = fidelity.psd_distance_per_lead(real, real.copy())
    mel = fidelity.mel_distance_per_lead(real, real.copy())

    assert ilc["value"] == pytest.approx(0.0, abs=1e-12)
    assert max(psd.values()) == pytest.approx(0.0, abs=1e-9)
    assert max(mel.values()) == pytest.approx(0.0, abs=1e-9)
    assert set(psd) == {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"}


def test_shuffled_leads_give_large_ilc_error_while_fresh_real_draw_stays_small(real):
    other = toy_ecgs(24, seed=2)
    perm = np.random.default_rng(0).permutation(12)

    same_kind = fidelity.inter_lead_correlation_error(real, other)["value"]
    shuffled = fidelity.inter_lead_correlation_error(real, other[:, perm])["value"]

    assert same_kind < 0.05
    assert shuffled > 0.3
    assert shuffled > 10 * same_kind


def test_ilc_uses_only_matched_groups_weighted_by_synthetic_counts(real):
    groups_r = ["NORM"] * 12 + ["MI"] * 12
    syn = real.copy()
    syn[12:] = syn[12:][:, np.random.default_rng(1).permutation(12)]  # only the MI group is broken
    groups_s = ["NORM"] * 12 + ["MI"] * 12

    out = fidelity.inter_lead_correlation_error(real, syn, groups_r, groups_s, n_boot=20)
    only_norm = fidelity.inter_lead_correlation_error(real, syn[:12], groups_r, groups_s[:12])

    assert out["per_group"]["NORM"] == pytest.approx(0.0, abs=1e-12)
    assert out["per_group"]["MI"] > 0.3
    assert out["value"] == pytest.approx(out["per_group"]["MI"] / 2)
    assert out["ci95"][0] <= out["ci95"][1] and abs(out["ci95"][0] - out["value"]) < 0.1
    assert only_norm["value"] == pytest.approx(0.0, abs=1e-12) and only_norm["n_groups"] == 1


def test_ilc_falls_back_to_pooled_when_no_group_matches(real):
    out = fidelity.inter_lead_correlation_error(real, real, ["A"] * 24, ["B"] * 24)

    assert out["pooled_fallback"] is True
    assert out["value"] == pytest.approx(0.0, abs=1e-12)


def test_correlation_of_flat_lead_is_zero_off_diagonal():
    x = np.random.default_rng(0).normal(size=(1, 3, 200))
    x[0, 2] = 0.5

    r = fidelity.correlation_matrices(x)[0]

    assert r[2, 0] == 0.0 and r[0, 2] == 0.0 and r[2, 2] == 1.0


def test_snr_of_two_tones_equals_amplitude_ratio():
    t = np.arange(1000) / 100.0
    x = (1.0 * np.sin(2 * np.pi * 5 * t) + 0.1 * np.sin(2 * np.pi * 45 * t))[None, None, :]

    assert fidelity.snr_db(x, fs=100.0)[0] == pytest.approx(20.0, abs=0.01)


def test_doubling_amplitude_moves_psd_and_mel_by_6_db(real):
    psd = fidelity.psd_distance_per_lead(real, 2 * real)
    mel = fidelity.mel_distance_per_lead(real, 2 * real)

    assert np.allclose(list(psd.values()), 20 * np.log10(2), atol=0.01)
    assert np.allclose(list(mel.values()), 20 * np.log10(2), atol=0.01)


def test_frechet_distance_of_shifted_gaussian_is_squared_shift():
    a = np.random.default_rng(0).normal(size=(500, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])

    assert fidelity.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
    assert fidelity.frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-3)


def test_mismatched_shapes_raise(real):
    with pytest.raises(FedECGError):
        fidelity.psd_distance_per_lead(real, real[:, :8])
    with pytest.raises(FedECGError):
        fidelity.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
