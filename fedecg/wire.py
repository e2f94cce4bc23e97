"""How a model's parameters travel in a Flower Message: one ArrayRecord, packed into a few Arrays.

Flower 1.41 moves every ``Array`` of a message as its own object (plus its chunks), each its own request on every
hop (SuperLink → SuperNode → ClientApp and back). A model sent as one Array per parameter (the small preset:
182) costs hundreds of requests per message; packed, it is four objects. The packed form of ``P.ARRAYS``:

```
__fedecg_layout__          uint8 Array: UTF-8 JSON [[name, [d0, d1, ...], dtype], ...] in state-dict order
__fedecg_packed__:<dtype>  one 1-D Array per dtype: that dtype's parameters, flattened, concatenated in layout order
```

Readers accept both this and the named form (one Array per parameter, what Flower's own tools and older sites
send), and check either one the same way: nothing is trusted that the reader did not compare with what it
expects (``reference``: name → (shape, dtype)), sizes are checked before bytes are decoded, ``.npy`` is decoded
without pickle. Every problem is a :class:`WireError` naming it, never a traceback from inside numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from fedecg.errors import FedECGError

LAYOUT = "__fedecg_layout__"
PACKED = "__fedecg_packed__:"  # + dtype name
NPY_HEADER_SLACK = 1 << 16  # bytes an .npy header may add to the raw array data
MAX_LAYOUT_BYTES = 1 << 22  # a layout larger than 4 MiB is not a denoiser's
DTYPES = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"})

Reference = Mapping[str, tuple[tuple[int, ...], str]]


class WireError(FedECGError):
    """An ArrayRecord that is not a well-formed model (or not the one expected)."""


def to_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """The packed ArrayRecord of a state dict (numpy arrays, any order kept)."""
    layout, groups = [], {}
    for name, value in state.items():
        arr = np.asarray(value)
        dtype = arr.dtype.name
        if dtype not in DTYPES:
            raise WireError(f"parameter {name!r} has dtype {dtype}, which the wire format does not carry")
        layout.append([str(name), [int(d) for d in arr.shape], dtype])
        groups.setdefault(dtype, []).append(arr.reshape(-1))
    arrays = {LAYOUT: Array(np.frombuffer(json.dumps(layout).encode("utf-8"), dtype=np.uint8).copy())}
    for dtype, parts in groups.items():
        arrays[PACKED + dtype] = Array(np.concatenate(parts) if parts else np.zeros(0, dtype))
    return ArrayRecord(array_dict=arrays)


def is_packed(record: ArrayRecord) -> bool:
    return LAYOUT in record.keys()


def layout_of(record: ArrayRecord) -> dict[str, tuple[tuple[int, ...], str]]:
    """name → (shape, dtype) of the model a record carries, in its order (data bytes are not decoded)."""
    if not isinstance(record, ArrayRecord):
        raise WireError("the model is not an ArrayRecord")
    if not is_packed(record):
        out = {}
        for name, arr in record.items():
            if not isinstance(arr, Array):
                raise WireError(f"{name} is not an Array")
            if not isinstance(arr.shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in arr.shape):
                raise WireError(f"{name}: malformed shape")
            out[name] = (tuple(arr.shape), str(arr.dtype))
        return out
    extra = [k for k in record.keys() if k != LAYOUT and not k.startswith(PACKED)]
    if extra:
        raise WireError(f"packed model carries {len(extra)} unexpected array(s)")
    entries = _json_array(record[LAYOUT])
    if not isinstance(entries, list) or not entries:
        raise WireError("packed model's layout is not a non-empty list")
    out = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[1], list)
                and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in entry[1])
                and entry[2] in DTYPES):
            raise WireError("packed model's layout has a malformed entry")
        if entry[0] in out:
            raise WireError("packed model's layout names a parameter twice")
        out[entry[0]] = (tuple(entry[1]), entry[2])
    return out


def from_record(record: ArrayRecord, reference: Reference | None = None) -> dict[str, np.ndarray]:
    """The state dict a record carries, checked: against ``reference`` (same names, shapes, dtypes) when given,
    else for inner consistency only. Raises WireError naming the first problem."""
    layout = layout_of(record)
    if reference is not None:
        if set(layout) != set(reference):
            missing = sorted(set(reference) - set(layout))[:3]
            raise WireError(f"wrong keys (missing {missing}, {len(set(layout) - set(reference))} unexpected)")
        for name, (shape, dtype) in reference.items():
            if layout[name][0] != tuple(shape):
                raise WireError(f"wrong shape for {name}: {_shape(layout[name][0])} != {tuple(shape)}")
            if layout[name][1] != dtype:
                raise WireError(f"wrong dtype for {name}: {printable(layout[name][1], 20)} != {dtype}")
    if not is_packed(record):
        return {name: _decode(record[name], name, shape, dtype) for name, (shape, dtype) in layout.items()}
    sizes = {name: int(np.prod(shape, dtype=np.int64)) for name, (shape, _) in layout.items()}
    flat = {}
    for dtype in sorted({d for _, d in layout.values()}):
        total = sum(sizes[n] for n, (_, d) in layout.items() if d == dtype)
        if PACKED + dtype not in record.keys():
            raise WireError(f"packed model has no {dtype} data")
        flat[dtype] = _decode(record[PACKED + dtype], f"{dtype} data", (total,), dtype)
    if len(flat) != len(record.keys()) - 1:
        raise WireError("packed model carries data of a dtype its layout does not use")
    out, offsets = {}, dict.fromkeys(flat, 0)
    for name, (shape, dtype) in layout.items():
        start = offsets[dtype]
        out[name] = flat[dtype][start:start + sizes[name]].reshape(shape)
        offsets[dtype] = start + sizes[name]
    return out


def _decode(arr, what: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if not isinstance(arr, Array):
        raise WireError(f"{what} is not an Array")
    if arr.stype != "numpy.ndarray":
        raise WireError(f"{what}: serialization type is not numpy.ndarray")
    if not isinstance(arr.shape, (list, tuple)) or tuple(arr.shape) != tuple(shape):
        raise WireError(f"wrong shape for {what}: {_shape(arr.shape)} != {tuple(shape)}")
    if arr.dtype != dtype:
        raise WireError(f"wrong dtype for {what}: {printable(arr.dtype, 20)} != {dtype}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if not isinstance(arr.data, bytes) or len(arr.data) > nbytes + NPY_HEADER_SLACK:
        raise WireError(f"{what}: array data of unexpected size")
    try:
        value = arr.numpy()
    except Exception as exc:  # noqa: BLE001 - not a valid .npy (or a pickle: refused by allow_pickle=False)
        raise WireError(f"{what}: array bytes do not decode as .npy") from exc
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape) or value.dtype.name != dtype:
        raise WireError(f"{what}: decoded array does not match its declared shape and dtype")
    return value


def _json_array(arr) -> object:
    value = _decode_any_uint8(arr)
    try:
        return json.loads(value.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("packed model's layout is not UTF-8 JSON") from exc


def _decode_any_uint8(arr) -> np.ndarray:
    shape = getattr(arr, "shape", None)
    if not (isinstance(shape, (list, tuple)) and len(shape) == 1 and isinstance(shape[0], int)
            and 0 < shape[0] <= MAX_LAYOUT_BYTES):
        raise WireError("packed model's layout is not a 1-D array of at most 4 MiB")
    return _decode(arr, "layout", (shape[0],), "uint8")


def printable(value, limit: int) -> str:
    """A peer-chosen string reduced to printable ASCII and ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text[:limit])


def _shape(shape) -> str:
    try:
        return str(tuple(int(s) for s in shape))[:60]
    except Exception:  # noqa: BLE001
        return "?"
