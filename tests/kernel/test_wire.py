"""fedecg.wire: the packed model form round-trips exactly, costs a handful of Flower objects, and every malformed
or hostile record is refused with a WireError naming the problem (never a numpy traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedecg.wire import LAYOUT, PACKED, WireError, from_record, is_packed, layout_of, to_record

STATE = {
    "a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "a.bias": np.linspace(-1, 1, 3, dtype=np.float32),
    "scalar": np.array(2.5, dtype=np.float32),
    "steps": np.array([7, 8], dtype=np.int64),
}
REFERENCE = {k: (tuple(v.shape), v.dtype.name) for k, v in STATE.items()}


def _wire(record: ArrayRecord) -> ArrayRecord:
    """The record after Flower's deflate/inflate, as a receiver sees it."""
    arrays = {}
    for name, arr in record.items():
        children = {cid: type(ch).inflate(ch.deflate()) for cid, ch in arr.children.items()}
        arrays[name] = Array.inflate(arr.deflate(), children)
    return ArrayRecord(array_dict=arrays)


def _layout_array(entries) -> Array:
    return Array(np.frombuffer(json.dumps(entries).encode(), dtype=np.uint8).copy())


def test_round_trip_is_exact_and_keeps_order():
    rec = _wire(to_record(STATE))
    assert is_packed(rec) and sorted(rec.keys()) == sorted([LAYOUT, PACKED + "float32", PACKED + "int64"])
    out = from_record(rec, REFERENCE)
    assert list(out) == list(STATE)
    for k, v in STATE.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape and np.array_equal(out[k], v)
    assert list(layout_of(rec).items()) == list(REFERENCE.items())


def test_named_form_is_read_with_the_same_checks():
    named = ArrayRecord(array_dict={k: Array(v) for k, v in STATE.items()})
    out = from_record(named, REFERENCE)
    assert all(np.array_equal(out[k], STATE[k]) for k in STATE)
    with pytest.raises(WireError, match="wrong shape for a.bias"):
        from_record(named, {**REFERENCE, "a.bias": ((4,), "float32")})


def test_the_small_model_travels_as_a_handful_of_objects():
    state = {f"layer{i}.weight": np.zeros((64, 64), np.float32) for i in range(180)}
    rec = to_record(state)
    objects = 1 + sum(1 + len(a.children) for a in rec.values())
    named = ArrayRecord(array_dict={k: Array(v) for k, v in state.items()})
    assert objects <= 6 < 1 + sum(1 + len(a.children) for a in named.values())


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.__setitem__(LAYOUT, Array(np.zeros(3, np.float32))), "wrong dtype for layout"),
    (lambda r: r.__setitem__(LAYOUT, Array(np.frombuffer(b"\xff\xfe[", np.uint8).copy())), "not UTF-8 JSON"),
    (lambda r: r.__setitem__(LAYOUT, _layout_array({"a": 1})), "non-empty list"),
    (lambda r: r.__setitem__(LAYOUT, _layout_array([["a.weight", [3, -4], "float32"]])), "malformed entry"),
    (lambda r: r.__setitem__(LAYOUT, _layout_array([["a.weight", [3, 4], "object"]])), "malformed entry"),
    (lambda r: r.__setitem__(LAYOUT, _layout_array([["x", [2], "float32"], ["x", [2], "float32"]])), "twice"),
    (lambda r: r.__setitem__("extra", Array(np.zeros(1, np.float32))), "unexpected array"),
    (lambda r: r.__setitem__(PACKED + "int64", Array(np.zeros(5, np.int64))), "wrong shape for int64 data"),
    (lambda r: r.__setitem__(PACKED + "float16", Array(np.zeros(1, np.float16))), "does not use"),
    (lambda r: r.__delitem__(PACKED + "float32"), "no float32 data"),
    (lambda r: setattr(r[PACKED + "float32"], "data", b"not an npy file at all"), "do not decode"),
    (lambda r: setattr(r[PACKED + "float32"], "data", b"\x93NUMPY" + b"\0" * 200_000), "unexpected size"),
    (lambda r: setattr(r[PACKED + "float32"], "stype", "torch.raw"), "serialization type"),
])
def test_malformed_packed_records_are_refused(mutate, match):
    rec = _wire(to_record(STATE))
    mutate(rec)
    with pytest.raises(WireError, match=match):
        from_record(rec)


def test_a_layout_that_is_not_the_expected_model_is_refused():
    rec = to_record(STATE)
    with pytest.raises(WireError, match="wrong keys"):
        from_record(rec, {k: v for k, v in REFERENCE.items() if k != "steps"})
    with pytest.raises(WireError, match="wrong dtype for steps"):
        from_record(rec, {**REFERENCE, "steps": ((2,), "float32")})
    with pytest.raises(WireError, match="wrong shape for a.weight"):
        from_record(rec, {**REFERENCE, "a.weight": ((4, 3), "float32")})


def test_a_layout_claiming_more_data_than_sent_is_refused():
    rec = to_record(STATE)
    layout = [[k, list(v.shape), v.dtype.name] for k, v in STATE.items()]
    layout[0][1] = [30, 4]  # ten times the rows: the float32 data no longer covers it
    rec[LAYOUT] = _layout_array(layout)
    with pytest.raises(WireError, match="wrong shape for float32 data"):
        from_record(rec)


def test_unsupported_dtypes_are_named_when_packing():
    with pytest.raises(WireError, match="complex64"):
        to_record({"z": np.zeros(2, np.complex64)})
