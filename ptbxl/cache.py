"""On-disk cache of preprocessed arrays: one folder per content hash, read back as NumPy memmaps.

Key = SHA-256 of (``CACHE_VERSION``, the absolute dataset path, the label codes, and for every requested
ecg_id: its record name and the size and mtime of its ``.hea`` and ``.dat`` files). Any edit to a record or a
change of the id list, vocabulary or preprocessing version yields a new key; stale folders are simply not
used. A folder is written under a temporary name and renamed into place, so a crash never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ptbxl.layout import record_paths

CACHE_VERSION = "ptbxl-arrays/1"
ARRAY_NAMES = ("x", "labels", "demo", "demo_mask", "ecg_ids")


def cache_key(
    root: str | Path, ecg_ids: Sequence[int], filenames: Sequence[str], label_codes: Sequence[str]
) -> str:
    """Content hash identifying one preprocessed selection of records (hex, 24 chars)."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, str(Path(root).resolve()), list(label_codes)]).encode())
    for ecg_id, name in zip(ecg_ids, filenames, strict=False):
        parts = [str(int(ecg_id)), name]
        for p in record_paths(root, name):
            try:
                st = os.stat(p)
                parts += [str(st.st_size), str(st.st_mtime_ns)]
            except FileNotFoundError:
                parts += ["-", "-"]
        h.update(("|".join(parts) + "\n").encode())
    return h.hexdigest()[:24]


def load_cached(cache_dir: str | Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays (read-only memmaps) for ``key``, or None when absent or incomplete."""
    folder = Path(cache_dir) / key
    if not all((folder / f"{n}.npy").is_file() for n in ARRAY_NAMES):
        return None
    try:
        return {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ARRAY_NAMES}
    except (ValueError, OSError):
        return None


def load_cached_extra(cache_dir: str | Path, key: str) -> dict | None:
    """The JSON side data stored with ``key`` (``store_cached(..., extra=...)``), or None."""
    path = Path(cache_dir) / key / "extra.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def store_cached(cache_dir: str | Path, key: str, arrays: dict[str, np.ndarray], extra: dict | None = None) -> Path:
    """Write ``arrays`` as ``<cache_dir>/<key>/<name>.npy`` (and ``extra`` as extra.json) atomically (temp
    folder, then rename)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        for name in ARRAY_NAMES:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name]))
        if extra is not None:
            (tmp / "extra.json").write_text(json.dumps(extra), encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race: its folder is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
