"""ptbxl.writer: what it writes reads back through our own PTB-XL reader (layout, signals at 1 µV, labels), and
a failed write leaves no folder that looks complete."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedecg.errors import FedECGError
from ptbxl.check import check_dataset
from ptbxl.constants import FS, FS_HIGH, LEADS_12, MODEL_LEAD_INDEX, N_SAMPLES
from ptbxl.dataset import load_arrays
from ptbxl.layout import read_database, read_scp_statements
from ptbxl.scp_table import statements_frame
from ptbxl.signals import derive_12_leads, read_record
from ptbxl.writer import write_ptbxl_folder, write_record


def _meta(ids) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame({
        "ecg_id": ids, "patient_id": [float(100 + i) for i in ids], "age": 60.0, "sex": 1, "height": np.nan,
        "weight": 70.0, "site": 0.0, "scp_codes": "{'NORM': 100.0}", "strat_fold": [(i - 1) % 10 + 1 for i in ids],
        "filename_lr": [f"records100/00000/{i:05d}_lr" for i in ids],
        "filename_hr": [f"records500/00000/{i:05d}_hr" for i in ids],
    })


def _signals(n: int, seed: int = 0) -> np.ndarray:
    """(n, 12, 1000) mV with exact limb-lead relations, as the model's output has."""
    x8 = np.random.default_rng(seed).normal(0, 0.5, (n, 8, N_SAMPLES))
    return derive_12_leads(x8)


def _records(meta: pd.DataFrame, signals: np.ndarray):
    for sig, row in zip(signals, meta.itertuples(index=False), strict=True):
        yield row.filename_lr, sig, FS
        yield row.filename_hr, np.repeat(sig, FS_HIGH // FS, axis=-1), FS_HIGH


def test_folder_round_trips_through_the_reader(tmp_path):
    meta, signals = _meta([1, 2, 3]), _signals(3)

    out = write_ptbxl_folder(tmp_path / "ds", meta, _records(meta, signals), statements=statements_frame())

    report = check_dataset(out)
    assert report.ok, report.bad
    back = read_database(out)
    assert back.index.tolist() == [1, 2, 3] and back.loc[2, "scp_codes"] == {"NORM": 100.0}
    assert back.loc[3, "strat_fold"] == 3 and np.isnan(back.loc[1, "height"])
    assert len(read_scp_statements(out)) == 71
    for k, ecg_id in enumerate(back.index):  # 16-bit at 1000 units per mV: within half a µV
        np.testing.assert_allclose(read_record(out, back.loc[ecg_id, "filename_lr"]), signals[k], atol=5e-4 + 1e-7)
        assert read_record(out, back.loc[ecg_id, "filename_hr"]).shape == (len(LEADS_12), 5000)
    arrays = load_arrays(out, [1, 3])
    np.testing.assert_allclose(arrays.x, signals[[0, 2]][:, list(MODEL_LEAD_INDEX)], atol=5e-4 + 1e-7)
    assert (out / "RECORDS").read_text().splitlines() == meta["filename_lr"].tolist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_samples_are_rounded_to_a_microvolt_and_clipped_at_the_16_bit_range(tmp_path):
    sig = np.zeros((12, N_SAMPLES))
    sig[0, :3] = [0.0012344, -40.0, 40.0]

    write_record(tmp_path, "records100/00000/00001_lr", sig, FS)

    back = read_record(tmp_path, "records100/00000/00001_lr")
    np.testing.assert_allclose(back[0, :3], [0.001, -32.767, 32.767], atol=1e-6)


@pytest.mark.parametrize(("shape", "bad", "match"), [((8, 100), None, "need \\(12, samples\\)"),
                                                       ((12, 100), np.nan, "1 sample\\(s\\) are NaN/Inf")])
def test_bad_signals_are_refused_naming_the_record(tmp_path, shape, bad, match):
    sig = np.zeros(shape)
    if bad is not None:
        sig[3, 7] = bad
    with pytest.raises(FedECGError, match=f"records100/x/00009_lr: {match}"):
        write_record(tmp_path, "records100/x/00009_lr", sig, FS)


def test_a_failure_midway_leaves_no_folder_and_keeps_an_old_one(tmp_path):
    meta, signals = _meta([1, 2]), _signals(2)
    signals[1, 0, 5] = np.nan  # the third record cannot be written
    with pytest.raises(FedECGError, match="00002_lr"):
        write_ptbxl_folder(tmp_path / "ds", meta, _records(meta, signals))
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary sibling

    good = write_ptbxl_folder(tmp_path / "ds", meta, _records(meta, _signals(2)), statements=statements_frame())
    with pytest.raises(FedECGError, match="not empty"):
        write_ptbxl_folder(good, meta, _records(meta, _signals(2)))

    def boom(folder):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_ptbxl_folder(good, meta, _records(meta, _signals(2, seed=1)), fill=boom, overwrite=True)
    assert check_dataset(good).ok and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    np.testing.assert_allclose(read_record(good, "records100/00000/00001_lr"), _signals(2)[0], atol=5e-4 + 1e-7)


def test_overwrite_replaces_the_folder_whole(tmp_path):
    old = write_ptbxl_folder(tmp_path / "ds", _meta([1, 2]), _records(_meta([1, 2]), _signals(2)),
                             fill=lambda folder: (folder / "stale.txt").write_text("old"))
    meta = _meta([7])

    write_ptbxl_folder(old, meta, _records(meta, _signals(1, seed=3)), overwrite=True)

    assert read_database(old).index.tolist() == [7] and not (old / "stale.txt").exists()
    assert not (old / "records100" / "00000" / "00001_lr.hea").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_link_from_adds_records_beside_linked_ones_without_touching_the_source(tmp_path):
    src_meta = _meta([1, 2])
    source = write_ptbxl_folder(tmp_path / "src", src_meta, _records(src_meta, _signals(2)),
                                statements=statements_frame())
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    extra = _meta([3]).assign(filename_lr="records100/extra/00003_lr", filename_hr="records500/extra/00003_hr")
    meta = pd.concat([src_meta, extra], ignore_index=True)

    out = write_ptbxl_folder(tmp_path / "plus", meta, _records(extra, _signals(1, seed=5)), link_from=source)

    assert check_dataset(out).ok and read_database(out).index.tolist() == [1, 2, 3]
    assert (out / "records100" / "00000").is_symlink() and (out / "scp_statements.csv").is_symlink()
    assert not (out / "ptbxl_database.csv").is_symlink() and not (out / "records100").is_symlink()
    np.testing.assert_allclose(read_record(out, "records100/extra/00003_lr"), _signals(1, seed=5)[0],
                               atol=5e-4 + 1e-7)
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    assert read_database(source).index.tolist() == [1, 2]


def test_a_record_is_never_written_through_a_link_into_the_source(tmp_path):
    src_meta = _meta([1])
    source = write_ptbxl_folder(tmp_path / "src", src_meta, _records(src_meta, _signals(1)))
    meta = _meta([1, 2])  # record 2 would land in records100/00000/, a link to the source's folder

    with pytest.raises(FedECGError, match="through a link"):
        write_ptbxl_folder(tmp_path / "plus", meta, _records(meta.iloc[1:], _signals(1)), link_from=source)

    assert not (source / "records100" / "00000" / "00002_lr.hea").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
