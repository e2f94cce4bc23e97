import numpy as np
import pytest

from fedecg.errors import FedECGError
from ptbxl.constants import REQUIRED_COLUMNS
from ptbxl.dataset import load_arrays
from ptbxl.demo import make_demo_dataset
from ptbxl.layout import read_database
from ptbxl.signals import derive_12_leads
from ptbxl.synth import synth_ecg8


def _heart_rate(lead: np.ndarray, fs: int) -> float:
    """Beats per minute from the first autocorrelation peak between 0.25 s and 2 s."""
    x = lead - lead.mean()
    ac = np.correlate(x, x, mode="full")[len(x) - 1 :]
    lo, hi = int(0.25 * fs), int(2.0 * fs)
    return 60.0 * fs / (lo + int(np.argmax(ac[lo:hi])))


def _qrs_width_s(lead: np.ndarray, fs: int) -> float:
    """Width (s) at half height of the largest deflection."""
    x = np.abs(lead - np.median(lead))
    k = int(np.argmax(x))
    half = x[k] / 2
    left = k
    while left > 0 and x[left] > half:
        left -= 1
    right = k
    while right < len(x) - 1 and x[right] > half:
        right += 1
    return (right - left) / fs


def test_demo_folder_is_read_by_the_loader_unchanged(demo_ptbxl):
    meta = read_database(demo_ptbxl)

    arrays = load_arrays(demo_ptbxl)

    assert set(REQUIRED_COLUMNS) <= set(meta.reset_index().columns)
    assert len(arrays) == 60 and np.isfinite(arrays.x).all()
    assert 0.05 < float(arrays.x.std()) < 1.0  # mV scale, not raw ADC units
    sizes = meta["site"].value_counts().sort_index().tolist()
    assert len(sizes) == 4 and sizes == sorted(sizes, reverse=True) and sizes[0] >= 3 * sizes[-1]
    assert (meta.groupby("patient_id")["site"].nunique() == 1).all()
    assert (meta.groupby("patient_id")["strat_fold"].nunique() == 1).all()
    assert (demo_ptbxl / "records500/00000/00060_hr.dat").stat().st_size == 5000 * 12 * 2


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_records=6, n_sites=2, seed=3)
    b = make_demo_dataset(tmp_path / "b", n_records=6, n_sites=2, seed=3)
    c = make_demo_dataset(tmp_path / "c", n_records=6, n_sites=2, seed=4)

    name = "records100/00000/00002_lr.dat"
    assert (a / name).read_bytes() == (b / name).read_bytes() != (c / name).read_bytes()
    assert (a / "ptbxl_database.csv").read_text() == (b / "ptbxl_database.csv").read_text()


def test_refuses_to_overwrite_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FedECGError, match="not empty"):
        make_demo_dataset(tmp_path / "x", n_records=4, n_sites=2)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_heart_rate_follows_rhythm_labels():
    rates = {
        code: np.mean(
            [
                _heart_rate(synth_ecg8({code}, 60, 0, 500, 10.0, np.random.default_rng(s))[1], 500)
                for s in range(3)
            ]
        )
        for code in ("SBRAD", "SR", "STACH")
    }

    assert rates["SBRAD"] < 58 < rates["SR"] < 100 < rates["STACH"]


def test_bundle_branch_block_widens_qrs():
    def width(codes):
        return np.mean(
            [
                _qrs_width_s(synth_ecg8(codes, 60, 0, 500, 10.0, np.random.default_rng(s))[0], 500)
                for s in range(3)
            ]
        )

    assert width({"CLBBB"}) > 1.8 * width({"NORM"})


def test_synthetic_limb_leads_are_einthoven_consistent():
    ecg8 = synth_ecg8({"IMI"}, 70, 1, 100, 10.0, np.random.default_rng(0))
    full = derive_12_leads(ecg8)
    np.testing.assert_allclose(full[2], full[1] - full[0])
    np.testing.assert_allclose(full[3] + full[4] + full[5], 0.0, atol=1e-12)


# Median peak-to-peak (0.5-99.5 percentile, mV) per model lead I, II, V1..V6 over the 488 real PTB-XL records.
PTBXL_MEDIAN_P2P = np.array([0.85, 1.0, 1.12, 1.92, 1.8, 1.81, 1.6, 1.28])


def test_demo_amplitudes_per_lead_are_ptbxl_like(demo_ptbxl):
    x = np.asarray(load_arrays(demo_ptbxl).x)

    p2p = np.median(np.percentile(x, 99.5, axis=-1) - np.percentile(x, 0.5, axis=-1), axis=0)

    ratio = p2p / PTBXL_MEDIAN_P2P
    assert (ratio > 0.7).all() and (ratio < 1.45).all(), ratio.round(2)


@pytest.mark.real_data
def test_reference_amplitudes_match_real_subset(ptbxl_dir):
    x = np.asarray(load_arrays(ptbxl_dir).x)
    p2p = np.median(np.percentile(x, 99.5, axis=-1) - np.percentile(x, 0.5, axis=-1), axis=0)
    np.testing.assert_allclose(p2p, PTBXL_MEDIAN_P2P, atol=0.01)
