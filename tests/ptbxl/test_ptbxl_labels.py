import numpy as np
import pytest

from fedecg.errors import FedECGError
from ptbxl.labels import LabelVocab
from ptbxl.layout import read_scp_statements


def test_default_vocab_has_71_codes_in_csv_order():
    vocab = LabelVocab.default()
    assert len(vocab) == 71 and vocab.codes[:5] == ("NDT", "NST_", "DIG", "LNGQT", "NORM")
    assert vocab.codes[-1] == "TRIGU"


def test_encode_multi_hot_ignores_likelihood_values():
    vocab = LabelVocab.default()

    y = vocab.encode({"NORM": 100.0, "SR": 0.0})

    assert y.dtype == np.float32 and y.shape == (71,)
    assert y.sum() == 2 and y[vocab.codes.index("NORM")] == 1 and y[vocab.codes.index("SR")] == 1
    assert vocab.decode(y) == ["NORM", "SR"]


def test_min_likelihood_threshold():
    vocab = LabelVocab.default()
    y = vocab.encode({"IMI": 50.0, "ASMI": 100.0}, min_likelihood=80)
    assert vocab.decode(y) == ["ASMI"]


def test_unknown_code_strict_and_lenient():
    vocab = LabelVocab.default()
    assert vocab.encode({"XYZ": 1.0}).sum() == 0
    with pytest.raises(FedECGError, match="XYZ"):
        vocab.encode({"XYZ": 1.0}, strict=True)


def test_encode_many_and_list_round_trip():
    vocab = LabelVocab.from_list(["A", "B", "C"])
    y = vocab.encode_many([{"A": 0.0}, {"B": 1.0, "C": 1.0}, {}])
    np.testing.assert_array_equal(y, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert LabelVocab.from_list(vocab.to_list()) == vocab
    assert LabelVocab.default().encode_many([]).shape == (0, 71)


def test_duplicate_codes_rejected():
    with pytest.raises(FedECGError):
        LabelVocab(("A", "A"))


def test_vocab_from_demo_statements_equals_default(demo_ptbxl):
    assert LabelVocab.from_statements(read_scp_statements(demo_ptbxl)) == LabelVocab.default()
