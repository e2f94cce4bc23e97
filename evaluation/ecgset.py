"""A set of ECGs to evaluate: 12-lead signals plus the metadata that conditioned (or describes) them.

Two on-disk forms are read, both produced by ``fedecg synthesize`` and the first also by PhysioNet:
- a PTB-XL-layout folder (``ptbxl_database.csv`` + ``records100/``; ``scp_statements.csv`` when present);
- an ``.npz`` with ``signals`` (N, 12|8, L) mV and optionally ``ecg_ids``, ``label_codes`` + ``labels``
  (N, K multi-hot), and ``age``/``sex``/``height``/``weight`` (N,) with NaN for missing
  (sex: 0 male, 1 female, PTB-XL coding).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.leads import to_12_leads
from fedecg.errors import FedECGError
from ptbxl.layout import read_database, read_scp_statements
from ptbxl.scp_table import SUPERCLASS
from ptbxl.signals import read_record

log = logging.getLogger(__name__)
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
DEMO_COLUMNS = ("age", "sex", "height", "weight")


@dataclass(frozen=True)
class ECGSet:
    """``signals`` (N, 12, L) float32 mV; ``meta`` one row per ECG (index ``ecg_id``) with ``scp_codes``
    (dict) and the demographic columns; ``statements`` the SCP statement table when known (index = code)."""

    signals: np.ndarray
    meta: pd.DataFrame
    fs: float = 100.0
    statements: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.signals.ndim != 3 or self.signals.shape[1] != 12:
            raise FedECGError(f"ECGSet.signals must be (N, 12, L), got {self.signals.shape}")
        if len(self.meta) != self.signals.shape[0]:
            raise FedECGError(f"ECGSet: {len(self.meta)} metadata rows for {self.signals.shape[0]} signals")

    def __len__(self) -> int:
        return int(self.signals.shape[0])

    def subset(self, idx: np.ndarray) -> ECGSet:
        idx = np.asarray(idx)
        return ECGSet(self.signals[idx], self.meta.iloc[idx], self.fs, self.statements)


def load_ecg_set(
    path: str | Path, max_records: int | None = None, folds: tuple[int, ...] | None = None, seed: int = 0
) -> ECGSet:
    """Load a PTB-XL-layout folder or an ``.npz``; optionally keep only ``folds`` (``strat_fold``) and a
    seeded random subset of at most ``max_records`` ECGs."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, max_records, folds, seed)
    if path.suffix == ".npz" and path.is_file():
        ecgs = _load_npz(path)
        if max_records is not None and len(ecgs) > max_records:
            rng = np.random.default_rng(seed)
            ecgs = ecgs.subset(np.sort(rng.choice(len(ecgs), max_records, replace=False)))
        return ecgs
    raise FedECGError(f"{path}: not a PTB-XL-layout folder or an .npz file")


def _load_folder(root: Path, max_records: int | None, folds: tuple[int, ...] | None, seed: int) -> ECGSet:
    meta = read_database(root, required=("ecg_id", "scp_codes", "filename_lr"))
    if folds is not None and "strat_fold" in meta.columns:
        meta = meta[meta["strat_fold"].isin(folds)]
    if max_records is not None and len(meta) > max_records:
        rng = np.random.default_rng(seed)
        meta = meta.iloc[np.sort(rng.choice(len(meta), max_records, replace=False))]
    if len(meta) == 0:
        raise FedECGError(f"{root}: no records selected")
    signals = np.stack([np.nan_to_num(read_record(root, fn)) for fn in meta["filename_lr"]])
    try:
        statements = read_scp_statements(root)
    except FedECGError:
        statements = None
    return ECGSet(signals, meta, 100.0, statements)


def _load_npz(path: Path) -> ECGSet:
    try:
        data = np.load(path, allow_pickle=False)
        signals = to_12_leads(data["signals"] if "signals" in data else data["x"])
    except (KeyError, ValueError, OSError) as exc:
        raise FedECGError(f"{path}: not an ECG .npz with a 'signals' array ({exc})") from exc
    n = signals.shape[0]
    ids = data["ecg_ids"] if "ecg_ids" in data else np.arange(1, n + 1)
    meta = pd.DataFrame(index=pd.Index(ids, name="ecg_id"))
    for col in DEMO_COLUMNS:
        meta[col] = data[col].astype(float) if col in data else np.nan
    if "labels" in data and "label_codes" in data:
        codes = [str(c) for c in data["label_codes"]]
        meta["scp_codes"] = [{codes[j]: 100.0 for j in np.flatnonzero(row > 0.5)} for row in data["labels"]]
    else:
        meta["scp_codes"] = [{} for _ in range(n)]
    return ECGSet(signals, meta, 100.0, None)


def superclass_map(statements: pd.DataFrame | None) -> dict[str, str]:
    """SCP code → diagnostic superclass (NORM/MI/STTC/CD/HYP) from ``scp_statements.csv``."""
    if statements is None or "diagnostic_class" not in statements.columns:
        return dict(SUPERCLASS)
    col = statements["diagnostic_class"].dropna()
    return {str(code): str(cls) for code, cls in col.items()}


def condition_keys(ecgs: ECGSet, by: str = "superclass", statements: pd.DataFrame | None = None) -> list[str]:
    """A condition-group key per ECG: the sorted set of diagnostic superclasses (``superclass``), the sorted
    set of SCP codes (``statements``), or one group for all (``none``). Empty sets become ``"none"``."""
    if by == "none":
        return ["all"] * len(ecgs)
    if by == "statements":
        return ["+".join(sorted(c)) or "none" for c in ecgs.meta["scp_codes"]]
    if by != "superclass":
        raise FedECGError(f"unknown condition grouping {by!r} (superclass|statements|none)")
    mapping = superclass_map(statements if statements is not None else ecgs.statements)
    keys = []
    for codes in ecgs.meta["scp_codes"]:
        classes = sorted({mapping[c] for c in codes if c in mapping})
        keys.append("+".join(classes) or "none")
    return keys


def superclass_targets(ecgs: ECGSet, statements: pd.DataFrame | None = None) -> np.ndarray:
    """(N, 5) float32 multi-hot over ``SUPERCLASSES`` (a code with any likelihood counts)."""
    mapping = superclass_map(statements if statements is not None else ecgs.statements)
    y = np.zeros((len(ecgs), len(SUPERCLASSES)), dtype=np.float32)
    for i, codes in enumerate(ecgs.meta["scp_codes"]):
        for c in codes:
            if mapping.get(c) in SUPERCLASSES:
                y[i, SUPERCLASSES.index(mapping[c])] = 1.0
    return y


def demographics(ecgs: ECGSet) -> pd.DataFrame:
    """The demographic columns (age years, sex 0 male/1 female, height cm, weight kg), NaN where missing."""
    out = pd.DataFrame(index=ecgs.meta.index)
    for col in DEMO_COLUMNS:
        out[col] = pd.to_numeric(ecgs.meta[col], errors="coerce") if col in ecgs.meta else np.nan
    out.loc[out["age"] >= 300, "age"] = 90.0  # PTB-XL codes ages above 89 as 300
    return out
