import shutil

import pandas as pd
import pytest

from fedecg.errors import FedECGError
from ptbxl.layout import read_database, read_scp_statements, record_paths
from ptbxl.scp_table import CODES, SUPERCLASS


def test_read_database_indexes_by_ecg_id_and_parses_scp_codes(demo_ptbxl):
    meta = read_database(demo_ptbxl)

    assert meta.index.name == "ecg_id" and meta.index.is_monotonic_increasing
    assert len(meta) == 60
    assert all(isinstance(d, dict) and d for d in meta["scp_codes"])
    assert meta["patient_id"].dtype == "int64" and meta["strat_fold"].between(1, 10).all()


def test_read_database_accepts_the_csv_path_itself(demo_ptbxl):
    assert read_database(demo_ptbxl / "ptbxl_database.csv").equals(read_database(demo_ptbxl))


def test_missing_columns_are_all_named(tmp_path, demo_ptbxl):
    df = pd.read_csv(demo_ptbxl / "ptbxl_database.csv").drop(columns=["strat_fold", "filename_hr"])
    df.to_csv(tmp_path / "ptbxl_database.csv", index=False)

    with pytest.raises(FedECGError, match="strat_fold, filename_hr"):
        read_database(tmp_path)


def test_missing_database_and_statements_raise(tmp_path):
    with pytest.raises(FedECGError, match="ptbxl_database.csv"):
        read_database(tmp_path)
    with pytest.raises(FedECGError, match="scp_statements.csv"):
        read_scp_statements(tmp_path)


def test_garbled_scp_codes_name_the_record(tmp_path, demo_ptbxl):
    df = pd.read_csv(demo_ptbxl / "ptbxl_database.csv")
    df.loc[3, "scp_codes"] = "{'NORM': 100.0"
    df.to_csv(tmp_path / "ptbxl_database.csv", index=False)

    with pytest.raises(FedECGError, match=f"ecg_id {df.loc[3, 'ecg_id']}"):
        read_database(tmp_path)


def test_demo_statements_have_ptbxl_codes_in_order(demo_ptbxl):
    st = read_scp_statements(demo_ptbxl)

    assert tuple(st.index) == CODES and len(st) == 71
    assert st.loc["IMI", "diagnostic_class"] == "MI"


@pytest.mark.real_data
def test_real_statements_match_builtin_table(ptbxl_dir):
    st = read_scp_statements(ptbxl_dir)

    assert tuple(st.index) == CODES
    assert st["diagnostic_class"].dropna().to_dict() == SUPERCLASS


@pytest.mark.real_data
def test_real_metadata_full_has_51_sites_and_17_without_site(ptbxl_dir):
    meta = read_database(ptbxl_dir / "metadata_full")

    assert len(meta) == 21799
    assert meta["site"].nunique() == 51 and meta["site"].isna().sum() == 17


def test_record_paths(demo_ptbxl):
    hea, dat = record_paths(demo_ptbxl, "records100/00000/00001_lr")
    assert hea.is_file() and dat.is_file() and hea.name == "00001_lr.hea"


def test_copy_is_independent(tmp_path, demo_ptbxl):
    # guards other tests: copying the demo folder gives an equal, separate dataset
    dst = shutil.copytree(demo_ptbxl, tmp_path / "copy")
    assert read_database(dst).equals(read_database(demo_ptbxl))
