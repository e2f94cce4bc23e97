import numpy as np
import pytest
import wfdb

from fedecg.errors import FedECGError
from ptbxl.constants import LEADS_12
from ptbxl.header import is_simple_format16, parse_header, read_format16
from ptbxl.signals import read_record


def test_parse_header_matches_wfdb(demo_ptbxl):
    path = demo_ptbxl / "records500/00000/00003_hr.hea"

    h = parse_header(path)
    w = wfdb.rdheader(str(path.with_suffix("")))

    assert (h.record_name, h.n_sig, h.fs, h.sig_len) == (w.record_name, w.n_sig, w.fs, w.sig_len)
    assert (
        list(h.sig_name) == w.sig_name and list(h.adc_gain) == w.adc_gain and list(h.baseline) == w.baseline
    )
    assert is_simple_format16(h)


def test_read_format16_equals_rdsamp(demo_ptbxl):
    path = demo_ptbxl / "records100/00000/00010_lr.hea"
    expected, _ = wfdb.rdsamp(str(path.with_suffix("")))

    np.testing.assert_array_equal(read_format16(parse_header(path), path.parent), expected)


def test_baseline_gain_and_other_formats_fall_back_to_wfdb(tmp_path):
    rng = np.random.default_rng(0)
    digital = rng.integers(-2000, 2000, size=(300, 12)).astype(np.int16)
    names = [n.upper() for n in LEADS_12]
    wfdb.wrsamp(
        "r16",
        fs=100,
        units=["mV"] * 12,
        sig_name=names,
        d_signal=digital,
        fmt=["16"] * 12,
        adc_gain=[200.0] * 12,
        baseline=[7] * 12,
        write_dir=str(tmp_path),
    )
    wfdb.wrsamp(
        "r212",
        fs=100,
        units=["mV"] * 12,
        sig_name=names,
        d_signal=digital,
        fmt=["212"] * 12,
        adc_gain=[200.0] * 12,
        baseline=[7] * 12,
        write_dir=str(tmp_path),
    )

    for name in ("r16", "r212"):
        expected, _ = wfdb.rdsamp(str(tmp_path / name))
        np.testing.assert_array_equal(read_record(tmp_path, name), expected.T.astype(np.float32))
    assert not is_simple_format16(parse_header(tmp_path / "r212.hea"))


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("rec 2 100 10\nrec.dat 16 1000/mV\n", "2 signals"),
        ("rec x 100\n", "record line"),
        ("rec 1 100 10\nrec.dat abc\n", "signal line"),
    ],
)
def test_malformed_headers_raise(tmp_path, text, match):
    (tmp_path / "rec.hea").write_text(text)
    with pytest.raises(FedECGError, match=match):
        parse_header(tmp_path / "rec.hea")


def test_truncated_signal_raises(tmp_path, demo_ptbxl):
    src = demo_ptbxl / "records100/00000/00001_lr"
    (tmp_path / "00001_lr.hea").write_bytes(src.with_suffix(".hea").read_bytes())
    (tmp_path / "00001_lr.dat").write_bytes(src.with_suffix(".dat").read_bytes()[:100])
    with pytest.raises(FedECGError, match="truncated"):
        read_record(tmp_path, "00001_lr")
