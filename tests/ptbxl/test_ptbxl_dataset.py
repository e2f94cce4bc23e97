import os
import shutil

import numpy as np
import pytest
import torch
import wfdb

from fedecg.errors import FedECGError
from ptbxl.constants import MODEL_LEAD_INDEX
from ptbxl.dataset import ECGArrays, ECGTorchDataset, load_arrays
from ptbxl.labels import LabelVocab
from ptbxl.layout import read_database


def test_load_arrays_shapes_and_values_match_wfdb(demo_ptbxl):
    ids = [5, 1, 9]

    arrays = load_arrays(demo_ptbxl, ids)

    assert arrays.x.shape == (3, 8, 1000) and arrays.x.dtype == np.float32
    assert arrays.labels.shape == (3, 71) and arrays.demo.shape == arrays.demo_mask.shape == (3, 4)
    assert arrays.ecg_ids.tolist() == ids
    sig, _ = wfdb.rdsamp(str(demo_ptbxl / "records100/00000/00005_lr"))
    np.testing.assert_array_equal(arrays.x[0], sig.T[list(MODEL_LEAD_INDEX)].astype(np.float32))
    meta = read_database(demo_ptbxl)
    np.testing.assert_array_equal(arrays.labels[1], LabelVocab.default().encode(meta.loc[1, "scp_codes"]))


def test_unknown_ecg_id_raises(demo_ptbxl):
    with pytest.raises(FedECGError, match="ecg_id 99999"):
        load_arrays(demo_ptbxl, [1, 99999])


def test_cache_returns_memmaps_equal_to_fresh_load(tmp_path, demo_ptbxl):
    fresh = load_arrays(demo_ptbxl, [1, 2, 3])

    first = load_arrays(demo_ptbxl, [1, 2, 3], cache_dir=tmp_path)
    second = load_arrays(demo_ptbxl, [1, 2, 3], cache_dir=tmp_path)

    assert isinstance(second.x, np.memmap)
    assert len(list(tmp_path.iterdir())) == 1
    for name in ("x", "labels", "demo", "demo_mask", "ecg_ids"):
        np.testing.assert_array_equal(getattr(first, name), getattr(fresh, name))
        np.testing.assert_array_equal(getattr(second, name), getattr(fresh, name))


def test_cache_key_changes_when_a_record_changes(tmp_path, demo_ptbxl):
    root = shutil.copytree(demo_ptbxl, tmp_path / "data")
    cache = tmp_path / "cache"
    before = load_arrays(root, [1, 2], cache_dir=cache)
    dat = root / "records100/00000/00002_lr.dat"
    raw = bytearray(dat.read_bytes())
    raw[0:2] = (1234).to_bytes(2, "little", signed=True)
    dat.write_bytes(bytes(raw))
    os.utime(dat, ns=(dat.stat().st_atime_ns, dat.stat().st_mtime_ns + 10**9))

    after = load_arrays(root, [1, 2], cache_dir=cache)

    assert len(list(cache.iterdir())) == 2
    assert after.x[1, 0, 0] == pytest.approx(1.234)
    assert before.x[1, 0, 0] != pytest.approx(1.234)
    np.testing.assert_array_equal(after.x[0], before.x[0])


def test_select_and_subset(demo_ptbxl):
    arrays = load_arrays(demo_ptbxl, [1, 2, 3, 4])
    sub = arrays.select([3, 1])
    assert sub.ecg_ids.tolist() == [3, 1]
    np.testing.assert_array_equal(sub.x[1], arrays.x[0])
    with pytest.raises(FedECGError, match="ecg_id 7"):
        arrays.select([7])


def test_arrays_reject_misaligned_rows():
    with pytest.raises(FedECGError, match="labels"):
        ECGArrays(np.zeros((2, 8, 10)), np.zeros((3, 71)), np.zeros((2, 4)), np.zeros((2, 4)), np.arange(2))


def test_torch_dataset_items(demo_ptbxl):
    arrays = load_arrays(demo_ptbxl, [1, 2])
    ds = ECGTorchDataset(arrays)

    x, y, demo, mask = ds[1]

    assert len(ds) == 2
    assert all(t.dtype == torch.float32 for t in (x, y, demo, mask))
    assert x.shape == (8, 1000) and y.shape == (71,) and demo.shape == mask.shape == (4,)
    np.testing.assert_array_equal(x.numpy(), arrays.x[1])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch[0].shape == (2, 8, 1000)


@pytest.mark.real_data
def test_real_load_arrays_equal_rdsamp(ptbxl_dir, tmp_path):
    meta = read_database(ptbxl_dir)
    ids = meta.index[:40].tolist()

    arrays = load_arrays(ptbxl_dir, ids, cache_dir=tmp_path)
    cached = load_arrays(ptbxl_dir, ids, cache_dir=tmp_path)

    for k in (0, 17, 39):
        sig, _ = wfdb.rdsamp(str(ptbxl_dir / meta.loc[ids[k], "filename_lr"]))
        np.testing.assert_array_equal(cached.x[k], sig.T[list(MODEL_LEAD_INDEX)].astype(np.float32))
    np.testing.assert_array_equal(arrays.labels, cached.labels)
    assert arrays.labels.sum(axis=1).min() >= 1
