"""The demo generator (ptbxl.synth): limb leads obey Einthoven/Goldberger exactly (in memory) and to the 16-bit
quantisation (in a written WFDB dataset), and all leads are projections of one 3-D dipole (rank 3 before the
white measurement noise)."""

from __future__ import annotations

import numpy as np
import pytest

import ptbxl.synth as synth
from ptbxl.signals import derive_12_leads
from ptbxl.synth import LEAD_MATRIX, synth_ecg8

LABEL_SETS = [{"NORM", "SR"}, {"AFIB", "ISC_"}, {"CLBBB", "SR"}, {"IMI", "QWAVE", "SR"}, {"PVC", "SR"}]


def _limb_identity_errors(sig12: np.ndarray) -> dict[str, np.ndarray]:
    i, ii, iii, avr, avl, avf = (np.asarray(sig12[k], dtype=np.float64) for k in range(6))
    return {"III = II - I": iii - (ii - i), "aVR = -(I+II)/2": avr + (i + ii) / 2,
            "aVL = I - II/2": avl - (i - ii / 2), "aVF = II - I/2": avf - (ii - i / 2)}


@pytest.mark.parametrize("codes", LABEL_SETS, ids=lambda c: "+".join(sorted(c)))
def test_limb_leads_obey_einthoven_in_memory(codes):
    ecg8 = synth_ecg8(codes, 63.0, 1, 500, 10.0, np.random.default_rng([3, len(codes)]))
    assert ecg8.shape == (8, 5000) and np.isfinite(ecg8).all()
    sig12 = derive_12_leads(ecg8)
    assert sig12.shape == (12, 5000)
    np.testing.assert_array_equal(sig12[[0, 1]], ecg8[:2])
    np.testing.assert_array_equal(sig12[6:], ecg8[2:])
    for name, err in _limb_identity_errors(sig12).items():
        np.testing.assert_allclose(err, 0.0, atol=1e-12, err_msg=name)


def test_limb_leads_obey_einthoven_in_written_records(tmp_path):
    import pandas as pd

    from ptbxl.demo import make_demo_dataset
    from ptbxl.signals import read_record

    root = make_demo_dataset(tmp_path / "demo", n_records=10, n_sites=2, seed=0)
    meta = pd.read_csv(root / "ptbxl_database.csv")
    assert len(meta) == 10
    tol = 0.0015 + 1e-6  # three roundings to 1 µV (gain 1000/mV) at most, plus float32 on read
    worst = 0.0
    for col, length in (("filename_lr", 1000), ("filename_hr", 5000)):
        for fn in meta[col]:
            sig = read_record(root, fn)
            assert sig.shape == (12, length)
            for name, err in _limb_identity_errors(sig).items():
                worst = max(worst, float(np.abs(err).max()))
                assert np.abs(err).max() <= tol, f"{fn}: {name} off by {np.abs(err).max() * 1000:.2f} µV"
    assert worst > 0.0  # quantisation is visible: the check reads the written integers, not the floats


@pytest.mark.parametrize("codes", LABEL_SETS, ids=lambda c: "+".join(sorted(c)))
def test_all_leads_are_projections_of_one_dipole(codes, monkeypatch):
    monkeypatch.setattr(synth, "_NOISE_MV", 0.0)  # only the white noise is added per lead
    ecg8 = synth_ecg8(codes, 55.0, 0, 500, 10.0, np.random.default_rng(11))
    sv = np.linalg.svd(ecg8, compute_uv=False)
    assert sv[3] < 1e-9 * sv[0], f"8-lead ECG has rank > 3: singular values {sv[:5]}"
    assert sv[2] > 1e-3 * sv[0]  # and it is a genuinely 3-D dipole, not planar
    # the leads are the fixed lead matrix applied to the dipole: least squares recovers it exactly
    dipole, *_ = np.linalg.lstsq(LEAD_MATRIX, ecg8, rcond=None)
    np.testing.assert_allclose(LEAD_MATRIX @ dipole, ecg8, atol=1e-9)


def test_white_noise_makes_the_leads_full_rank():
    ecg8 = synth_ecg8({"NORM", "SR"}, 55.0, 0, 500, 10.0, np.random.default_rng(11))
    sv = np.linalg.svd(ecg8, compute_uv=False)
    assert sv[3] > 1e-3 * sv[0]


def test_lead_matrix_frontal_rows():
    np.testing.assert_allclose(LEAD_MATRIX[0], [1.0, 0.0, 0.0], atol=1e-15)  # I along x
    np.testing.assert_allclose(LEAD_MATRIX[1], [0.5, np.sqrt(3) / 2, 0.0], atol=1e-15)  # II at +60°
    assert LEAD_MATRIX.shape == (8, 3) and np.linalg.matrix_rank(LEAD_MATRIX) == 3
