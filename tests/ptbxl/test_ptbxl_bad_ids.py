"""Malformed ids in ptbxl_database.csv: `fedecg data check` must give one FedECGError line, never a traceback
or a silently truncated id."""

import subprocess
import sys

import pandas as pd
import pytest

from fedecg.errors import FedECGError
from ptbxl.check import check_dataset
from ptbxl.demo import make_demo_dataset
from ptbxl.layout import read_database


@pytest.fixture
def demo(tmp_path):
    root = tmp_path / "d"
    make_demo_dataset(root, n_records=6, n_sites=2, seed=0)
    return root


def _edit(root, column, row, value):
    csv = root / "ptbxl_database.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(csv, index=False)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("ecg_id", "abc", "row 4: ecg_id not a number ('abc')"),
        ("ecg_id", "3.5", "row 4: ecg_id not an integer (3.5)"),
        ("ecg_id", "", "row 4: ecg_id missing"),
        ("patient_id", "p17", "ecg_id 3: patient_id not a number ('p17')"),
        ("patient_id", "1000.5", "ecg_id 3: patient_id not an integer (1000.5)"),
        ("strat_fold", "x", "ecg_id 3: strat_fold not a number ('x')"),
        ("strat_fold", "2.5", "ecg_id 3: strat_fold not an integer (2.5)"),
    ],
)
def test_bad_integer_values_are_refused_naming_file_row_and_value(demo, column, value, expected):
    _edit(demo, column, 2, value)
    with pytest.raises(FedECGError) as info:
        check_dataset(demo)
    assert str(demo / "ptbxl_database.csv") in str(info.value)
    assert expected in str(info.value)


def test_fractional_ecg_id_is_not_truncated_into_a_duplicate(demo):
    _edit(demo, "ecg_id", 3, "3.5")  # row 4 holds ecg_id 4; 3.5 used to become a second record 3
    with pytest.raises(FedECGError, match=r"row 5: ecg_id not an integer \(3.5\)"):
        read_database(demo)


def test_integral_floats_as_written_by_ptbxl_are_accepted(demo):
    _edit(demo, "ecg_id", 0, "1.0")
    df = read_database(demo)
    assert df.index.dtype == "int64" and list(df.index) == [1, 2, 3, 4, 5, 6]
    assert df["patient_id"].dtype == "int64" and df["strat_fold"].dtype == "int64"


def test_junk_rows_give_one_line_error_and_exit_2(demo):
    csv = demo / "ptbxl_database.csv"
    csv.write_text(csv.read_text() + "this is not a record\n\n,,,\n")
    proc = subprocess.run(
        [sys.executable, "-c", "from fedecg.cli import main; main()", "data", "check", str(demo)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(csv) in lines[0] and "row 8: ecg_id not a number ('this is not a record')" in lines[0]
