"""evaluation.ecgset: loading PTB-XL-layout folders and .npz sets, condition keys, superclass targets."""

import numpy as np
import pandas as pd
import pytest

from evaluation.ecgset import ECGSet, condition_keys, demographics, load_ecg_set, superclass_targets
from fedecg.errors import FedECGError
from tests._evaluation_ecgs import toy_ecgs


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    from ptbxl.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "ptbxl", n_records=30, n_sites=2, seed=0)


def test_folder_loads_12_leads_in_mv_with_metadata(demo_dir):
    ecgs = load_ecg_set(demo_dir, folds=(1, 2, 3, 4, 5))

    assert ecgs.signals.shape[1:] == (12, 1000) and ecgs.signals.dtype == np.float32
    assert set(ecgs.meta["strat_fold"]) <= {1, 2, 3, 4, 5}
    assert 0.05 < np.abs(ecgs.signals).max() < 20  # mV, not µV
    assert ecgs.statements is not None


def test_max_records_is_a_seeded_subset(demo_dir):
    a = load_ecg_set(demo_dir, max_records=7, seed=1)
    b = load_ecg_set(demo_dir, max_records=7, seed=1)

    assert len(a) == 7 and list(a.meta.index) == list(b.meta.index)


def test_npz_roundtrip_with_labels_and_demographics(tmp_path):
    x = toy_ecgs(3)[:, [0, 1, 6, 7, 8, 9, 10, 11]]  # model view is accepted and expanded to 12 leads
    np.savez(tmp_path / "s.npz", signals=x, label_codes=np.array(["NORM", "IMI"]),
             labels=np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32), age=np.array([30.0, np.nan, 300.0]),
             sex=np.array([0.0, 1.0, 1.0]))

    ecgs = load_ecg_set(tmp_path / "s.npz")

    assert ecgs.signals.shape == (3, 12, 1000)
    assert np.allclose(ecgs.signals[:, 2], ecgs.signals[:, 1] - ecgs.signals[:, 0], atol=1e-6)  # III = II − I
    assert ecgs.meta["scp_codes"].tolist() == [{"NORM": 100.0}, {"IMI": 100.0}, {"NORM": 100.0, "IMI": 100.0}]
    assert demographics(ecgs)["age"].tolist()[2] == 90.0  # PTB-XL's 300 code


def test_condition_keys_and_superclass_targets():
    meta = pd.DataFrame({"scp_codes": [{"NORM": 100.0, "SR": 0.0}, {"IMI": 50.0, "NDT": 100.0}, {}]},
                        index=pd.Index([1, 2, 3], name="ecg_id"))
    ecgs = ECGSet(np.zeros((3, 12, 100), np.float32), meta)

    keys = condition_keys(ecgs)
    y = superclass_targets(ecgs)

    assert keys == ["NORM", "MI+STTC", "none"]
    assert condition_keys(ecgs, by="none") == ["all"] * 3
    assert y.tolist() == [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(FedECGError):
        load_ecg_set(tmp_path / "missing")
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(FedECGError):
        load_ecg_set(tmp_path / "x.npz")
    with pytest.raises(FedECGError):
        condition_keys(ECGSet(np.zeros((1, 12, 10), np.float32), pd.DataFrame({"scp_codes": [{}]})), by="x")
