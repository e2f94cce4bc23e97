"""Arrays for training and evaluation: model-view signals, multi-hot labels, demographics, as one object.

``load_arrays`` reads records100/ (100 Hz) through ``ptbxl.signals`` and, when ``cache_dir`` is given, keeps
the preprocessed float32 arrays in a content-hashed cache (``ptbxl.cache``) so later loads are memory-mapped
reads. Every record is validated as it is read (folder's sampling rate and length, 12 PTB-XL leads, finite
samples): ``load_arrays`` raises on the first bad one, ``load_valid_arrays`` (what a site trains on) skips bad
records and returns their ecg_ids with the reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fedecg.errors import FedECGError
from ptbxl.cache import cache_key, load_cached, load_cached_extra, store_cached
from ptbxl.constants import FS, N_SAMPLES
from ptbxl.demographics import encode_demographics
from ptbxl.labels import LabelVocab
from ptbxl.layout import read_database, read_scp_statements
from ptbxl.signals import model_view, read_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ECGArrays:
    """Aligned arrays for N records: ``x`` (N, 8, 1000) mV, ``labels`` (N, 71), ``demo``/``demo_mask`` (N, 4)
    (all float32) and ``ecg_ids`` (N,) int64. Arrays may be read-only memmaps."""

    x: np.ndarray
    labels: np.ndarray
    demo: np.ndarray
    demo_mask: np.ndarray
    ecg_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ecg_ids)
        for name in ("x", "labels", "demo", "demo_mask"):
            if len(getattr(self, name)) != n:
                raise FedECGError(f"ECGArrays: {name} has {len(getattr(self, name))} rows, ecg_ids has {n}")

    def __len__(self) -> int:
        return len(self.ecg_ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> ECGArrays:
        """Rows ``index`` (positions, not ecg_ids) as in-memory arrays."""
        idx = np.asarray(index, dtype=np.int64)
        return ECGArrays(
            *(np.asarray(getattr(self, n))[idx] for n in ("x", "labels", "demo", "demo_mask", "ecg_ids"))
        )

    def select(self, ecg_ids: Sequence[int]) -> ECGArrays:
        """Rows for the given ecg_ids (FedECGError naming the first one not present)."""
        pos = {int(e): i for i, e in enumerate(np.asarray(self.ecg_ids))}
        missing = [e for e in ecg_ids if int(e) not in pos]
        if missing:
            raise FedECGError(f"ECGArrays.select: ecg_id {missing[0]} not loaded ({len(missing)} missing)")
        return self.subset([pos[int(e)] for e in ecg_ids])


def read_valid_record(root: Path, name: str) -> np.ndarray:
    """One record as (12, L) float32 mV, or FedECGError naming it: unreadable, wrong rate / length for its
    folder, other leads (``ptbxl.signals.read_record``), or NaN/Inf samples."""
    sig = read_record(root, name)
    bad = int(np.size(sig) - np.count_nonzero(np.isfinite(sig)))
    if bad:
        raise FedECGError(f"record {name}: {bad} invalid (NaN/Inf) samples")
    return sig


def _build(root: Path, meta: pd.DataFrame, vocab: LabelVocab, skip_invalid: bool = False
           ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Arrays of ``meta``'s records; with ``skip_invalid`` bad records are left out and listed
    (``{"ecg_id", "record", "reason"}``), else the first one raises."""
    n = len(meta)
    x = np.empty((n, 8, N_SAMPLES), dtype=np.float32)
    keep, skipped = [], []
    for i, (ecg_id, name) in enumerate(zip(meta.index, meta["filename_lr"], strict=True)):
        try:
            x[i] = model_view(read_valid_record(root, name), fs=FS)
        except FedECGError as exc:
            if not skip_invalid:
                raise
            skipped.append({"ecg_id": int(ecg_id), "record": str(name), "reason": str(exc)})
            continue
        keep.append(i)
    if skipped:
        meta, x = meta.iloc[keep], x[keep]
    demo, demo_mask = encode_demographics(meta)
    return {
        "x": x,
        "labels": vocab.encode_many(meta["scp_codes"]),
        "demo": demo,
        "demo_mask": demo_mask,
        "ecg_ids": meta.index.to_numpy(dtype=np.int64),
    }, skipped


def load_arrays(
    root: str | Path,
    ecg_ids: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    *,
    vocab: LabelVocab | None = None,
    meta: pd.DataFrame | None = None,
) -> ECGArrays:
    """Load records ``ecg_ids`` (all when None, in the given order) of the PTB-XL folder ``root``.

    ``vocab`` defaults to the folder's ``scp_statements.csv`` when present, else PTB-XL's 71 codes; ``meta``
    may pass an already read ``ptbxl_database.csv``. With ``cache_dir``, the first call writes a
    content-hashed cache and later calls return memmaps from it. A bad record raises FedECGError naming it
    (``load_valid_arrays`` skips it instead)."""
    arrays, _ = _load(root, ecg_ids, cache_dir, vocab, meta, skip_invalid=False)
    return arrays


def load_valid_arrays(
    root: str | Path,
    ecg_ids: Sequence[int] | None = None,
    cache_dir: str | Path | None = None,
    *,
    vocab: LabelVocab | None = None,
    meta: pd.DataFrame | None = None,
) -> tuple[ECGArrays, list[dict]]:
    """``load_arrays`` without the records that fail validation: (arrays of the valid records in the given
    order, ``[{"ecg_id", "record", "reason"}]`` of the skipped ones). Cached like ``load_arrays`` (the skipped
    list with it)."""
    return _load(root, ecg_ids, cache_dir, vocab, meta, skip_invalid=True)


def _load(root, ecg_ids, cache_dir, vocab, meta, *, skip_invalid: bool) -> tuple[ECGArrays, list[dict]]:
    root = Path(root)
    meta = read_database(root) if meta is None else meta
    if vocab is None:
        try:
            vocab = LabelVocab.from_statements(read_scp_statements(root))
        except FedECGError:
            vocab = LabelVocab.default()
    ids = list(meta.index) if ecg_ids is None else [int(e) for e in ecg_ids]
    missing = [e for e in ids if e not in meta.index]
    if missing:
        raise FedECGError(f"{root}: ecg_id {missing[0]} not in ptbxl_database.csv ({len(missing)} missing)")
    sub = meta.loc[ids]
    key = None
    if cache_dir is not None:
        # the valid-records selection is its own cache entry (it carries the skipped list)
        codes = [*vocab.codes, "<valid records only>"] if skip_invalid else vocab.codes
        key = cache_key(root, ids, sub["filename_lr"].tolist(), codes)
        cached = load_cached(cache_dir, key)
        extra = load_cached_extra(cache_dir, key) if skip_invalid else {"skipped": []}
        if cached is not None and extra is not None:
            log.debug("cache hit %s (%d records)", key, len(ids))
            return ECGArrays(**cached), list(extra.get("skipped", []))
    arrays, skipped = _build(root, sub, vocab, skip_invalid)
    if key is not None:
        store_cached(cache_dir, key, arrays, {"skipped": skipped} if skip_invalid else None)
        cached = load_cached(cache_dir, key)
        if cached is not None:
            return ECGArrays(**cached), skipped
    return ECGArrays(**arrays), skipped


class PatientSampledDataset(Dataset):
    """One item per patient (the privacy unit of patient-level DP-SGD): each time patient ``i`` is drawn, one of
    its records is chosen uniformly at random with ``generator``. Poisson sampling over this dataset then
    gives every patient, whatever its number of records, at most one (clipped) gradient per step."""

    def __init__(self, arrays: ECGArrays, patient_ids: np.ndarray, generator: torch.Generator) -> None:
        pids = np.asarray(patient_ids)
        if len(pids) != len(arrays):
            raise FedECGError(f"PatientSampledDataset: {len(pids)} patient ids for {len(arrays)} records")
        self.records = ECGTorchDataset(arrays)
        _, inverse = np.unique(pids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))
        self.groups = np.split(order, bounds[:-1])
        self.generator = generator

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        group = self.groups[i]
        j = int(torch.randint(len(group), (1,), generator=self.generator)) if len(group) > 1 else 0
        return self.records[int(group[j])]


class ECGTorchDataset(Dataset):
    """Items ``(x (8, 1000), labels (71,), demo (4,), demo_mask (4,))`` as float32 tensors."""

    def __init__(self, arrays: ECGArrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        a = self.arrays
        return tuple(
            torch.from_numpy(np.array(getattr(a, n)[i], dtype=np.float32))  # type: ignore[return-value]
            for n in ("x", "labels", "demo", "demo_mask")
        )
