import shutil

import pandas as pd
import pytest

from fedecg.errors import FedECGError
from ptbxl.check import check_dataset


@pytest.fixture
def demo_copy(tmp_path, demo_ptbxl):
    return shutil.copytree(demo_ptbxl, tmp_path / "ptbxl")


def _reasons(report) -> dict[str, str]:
    return {b["record"]: b["reason"] for b in report.bad}


def test_demo_dataset_passes(demo_ptbxl):
    report = check_dataset(demo_ptbxl, deep=True)

    assert report.ok and report.records_ok == 60 and report.n_rows == 60
    assert sum(report.sites.values()) == 60 and set(report.sites) == {"0", "1", "2", "3"}
    assert sum(report.folds.values()) == 60


def test_truncated_dat_and_missing_header_are_named(demo_copy):
    dat = demo_copy / "records100/00000/00004_lr.dat"
    dat.write_bytes(dat.read_bytes()[:5000])
    (demo_copy / "records500/00000/00007_hr.hea").unlink()

    report = check_dataset(demo_copy)

    reasons = _reasons(report)
    assert not report.ok and report.records_ok == 58
    assert "truncated" in reasons["records100/00000/00004_lr"]
    assert "header file missing" in reasons["records500/00000/00007_hr"]
    assert len(report.bad) == 2


def test_wrong_sampling_rate_lead_order_length_and_name(demo_copy):
    def edit(name, fn):
        hea = demo_copy / f"{name}.hea"
        lines = hea.read_text().splitlines()
        hea.write_text("\n".join(fn(lines)) + "\n")

    edit("records100/00000/00001_lr", lambda ls: [ls[0].replace(" 100 ", " 250 ")] + ls[1:])
    edit("records100/00000/00002_lr", lambda ls: [ls[0], ls[2], ls[1]] + ls[3:])
    edit("records100/00000/00003_lr", lambda ls: [ls[0].replace(" 1000", " 900")] + ls[1:])
    edit("records100/00000/00005_lr", lambda ls: [ls[0].replace("00005_lr", "00006_lr")] + ls[1:])

    reasons = _reasons(check_dataset(demo_copy))

    assert "sampling rate 250 Hz, expected 100" in reasons["records100/00000/00001_lr"]
    assert "wrong leads" in reasons["records100/00000/00002_lr"]
    assert "wrong length 900" in reasons["records100/00000/00003_lr"]
    assert "header/CSV mismatch" in reasons["records100/00000/00005_lr"]


def test_unknown_scp_code_and_orphan_record_reported(demo_copy):
    df = pd.read_csv(demo_copy / "ptbxl_database.csv")
    df.loc[0, "scp_codes"] = "{'NOPE': 100.0}"
    df = df.drop(index=59)
    df.to_csv(demo_copy / "ptbxl_database.csv", index=False)

    report = check_dataset(demo_copy)

    assert "unknown SCP code(s) ['NOPE']" in _reasons(report)["records100/00000/00001_lr"]
    assert report.warnings and "not listed" in report.warnings[0]


def test_missing_columns_raise_naming_them(demo_copy):
    df = pd.read_csv(demo_copy / "ptbxl_database.csv").drop(columns=["site", "filename_lr"])
    df.to_csv(demo_copy / "ptbxl_database.csv", index=False)

    with pytest.raises(FedECGError, match="site, filename_lr"):
        check_dataset(demo_copy)


@pytest.mark.real_data
def test_real_subset_is_valid(ptbxl_dir):
    report = check_dataset(ptbxl_dir)

    assert report.ok and report.records_ok == 488
    assert report.sites == {"0": 256, "1": 161, "2": 17, "3": 54}


def test_metadata_only_folder_is_a_user_error(tmp_path, demo_ptbxl):
    shutil.copy(demo_ptbxl / "ptbxl_database.csv", tmp_path)
    with pytest.raises(FedECGError, match="no records100/ or records500/"):
        check_dataset(tmp_path)
