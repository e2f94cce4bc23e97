import numpy as np
import pytest
import torch
import wfdb

from fedecg.errors import FedECGError
from ptbxl.constants import LEADS_12, MODEL_LEAD_INDEX
from ptbxl.layout import read_database
from ptbxl.signals import derive_12_leads, model_view, read_record


def test_read_record_equals_wfdb_rdsamp(demo_ptbxl):
    for name in ("records100/00000/00001_lr", "records500/00000/00002_hr"):
        expected, _ = wfdb.rdsamp(str(demo_ptbxl / name))

        sig = read_record(demo_ptbxl, name)

        assert sig.dtype == np.float32 and sig.shape == expected.T.shape
        np.testing.assert_array_equal(sig, expected.T.astype(np.float32))


def test_read_record_missing_names_the_record(demo_ptbxl):
    with pytest.raises(FedECGError, match="records100/00000/99999_lr"):
        read_record(demo_ptbxl, "records100/00000/99999_lr")


def test_derive_12_leads_formulas_numpy():
    rng = np.random.default_rng(0)
    x8 = rng.normal(size=(3, 8, 50)).astype(np.float32)

    y = derive_12_leads(x8)

    i, ii = x8[:, 0], x8[:, 1]
    assert y.shape == (3, 12, 50)
    np.testing.assert_allclose(y[:, 2], ii - i, atol=1e-6)
    np.testing.assert_allclose(y[:, 3], -(i + ii) / 2, atol=1e-6)
    np.testing.assert_allclose(y[:, 4], i - ii / 2, atol=1e-6)
    np.testing.assert_allclose(y[:, 5], ii - i / 2, atol=1e-6)
    np.testing.assert_array_equal(y[:, list(MODEL_LEAD_INDEX)], x8)


def test_derive_12_leads_torch_matches_numpy_and_keeps_grad():
    x8 = torch.randn(2, 8, 40, requires_grad=True)

    y = derive_12_leads(x8)
    y.sum().backward()

    assert isinstance(y, torch.Tensor) and y.shape == (2, 12, 40)
    np.testing.assert_allclose(y.detach().numpy(), derive_12_leads(x8.detach().numpy()), atol=1e-6)
    assert x8.grad is not None


def test_derive_rejects_wrong_lead_count():
    with pytest.raises(FedECGError, match="8 leads"):
        derive_12_leads(np.zeros((12, 10)))


def test_model_view_picks_independent_leads_and_resamples():
    sig = np.tile(np.arange(12, dtype=np.float32)[:, None], (1, 1000))
    assert model_view(sig).tolist() == model_view(sig[None])[0].tolist()
    np.testing.assert_array_equal(model_view(sig)[:, 0], [0, 1, 6, 7, 8, 9, 10, 11])

    hi = np.ones((12, 5000), dtype=np.float32)
    lo = model_view(hi, fs=500)
    assert lo.shape == (8, 1000)
    np.testing.assert_allclose(lo[:, 10:-10], 1.0, atol=1e-3)


def test_demo_limb_leads_follow_einthoven(demo_ptbxl):
    sig = read_record(demo_ptbxl, "records100/00000/00003_lr")

    derived = derive_12_leads(sig[list(MODEL_LEAD_INDEX)])

    assert np.abs(derived - sig).max() <= 2.5e-3  # 1 µV quantisation per lead


@pytest.mark.real_data
def test_real_derived_limb_leads_match_recorded_within_quantisation(ptbxl_dir):
    # Measured on the 488-record subset: max |derived − recorded| = 2 µV (III), 1.5 µV (aVR/aVL/aVF) at 100
    # Hz.
    meta = read_database(ptbxl_dir)
    worst = np.zeros(12)
    for name in list(meta["filename_lr"]) + list(meta["filename_hr"][:20]):
        sig = read_record(ptbxl_dir, name).astype(np.float64)
        worst = np.maximum(worst, np.abs(derive_12_leads(sig[list(MODEL_LEAD_INDEX)]) - sig).max(axis=1))

    assert worst.max() <= 2.5e-3, dict(zip(LEADS_12, worst, strict=False))
    assert worst[list(MODEL_LEAD_INDEX)].max() == 0.0


@pytest.mark.real_data
def test_real_read_record_equals_rdsamp(ptbxl_dir):
    meta = read_database(ptbxl_dir)
    for name in meta["filename_lr"].iloc[::50]:
        expected, fields = wfdb.rdsamp(str(ptbxl_dir / name))
        assert fields["fs"] == 100
        np.testing.assert_array_equal(read_record(ptbxl_dir, name), expected.T.astype(np.float32))
