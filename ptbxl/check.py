"""Validate a PTB-XL folder: every CSV row's two WFDB records (records100 at 100 Hz, records500 at 500 Hz).

Per record: header present and parsable, record name matching the CSV's filename, sampling rate, 12 leads in
PTB-XL order (names compared case-insensitively: PTB-XL writes AVR/AVL/AVF), length 10 s, 16-bit format,
signal file present with exactly ``length × 12 × 2`` bytes (a truncated ``.dat`` is caught without reading
it); with ``deep`` the samples are also read and checked to be finite. Rows whose SCP codes are unknown to
``scp_statements.csv`` are reported too. A row counts as OK when both of its records are OK.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedecg.errors import FedECGError
from ptbxl.constants import DURATION_S, FS, FS_HIGH, LEADS_12
from ptbxl.header import parse_header, read_format16
from ptbxl.layout import dataset_root, read_database, read_scp_statements, record_paths

log = logging.getLogger(__name__)

RESOLUTIONS: tuple[tuple[str, int], ...] = (("filename_lr", FS), ("filename_hr", FS_HIGH))


@dataclass
class CheckReport:
    """Outcome of ``check_dataset``; ``ok`` iff ``bad`` is empty. ``sites``/``folds``: counts of OK rows."""

    root: str
    n_rows: int = 0
    records_ok: int = 0
    bad: list[dict[str, Any]] = field(default_factory=list)
    sites: dict[str, int] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def check_record(root: Path, filename: str, fs: int, deep: bool = False) -> str | None:
    """The problem with one record as a short sentence, or None when it is fine."""
    hea, _ = record_paths(root, filename)
    if not hea.is_file():
        return f"header file missing ({hea.name})"
    try:
        header = parse_header(hea)
    except FedECGError as exc:
        return f"header unreadable ({exc})"
    name = Path(filename).name
    if header.record_name != name:
        return f"header/CSV mismatch: header names record {header.record_name!r}, CSV says {name!r}"
    if header.fs != fs:
        return f"wrong sampling rate {header.fs:g} Hz, expected {fs} Hz"
    leads = [str(s) for s in header.sig_name]
    if [s.upper() for s in leads] != [s.upper() for s in LEADS_12]:
        return f"wrong leads {leads}, expected {list(LEADS_12)}"
    expected_len = int(round(fs * DURATION_S))
    if header.sig_len != expected_len:
        return f"wrong length {header.sig_len} samples, expected {expected_len}"
    if set(header.fmt) != {"16"}:
        return f"unsupported sample format {sorted(set(header.fmt))}, expected 16"
    files = set(header.file_name)
    if len(files) != 1 or set(header.byte_offset) != {0}:
        return f"signals spread over {sorted(files)}, expected one .dat file"
    dat = hea.parent / files.pop()
    if not dat.is_file():
        return f"signal file missing ({dat.name})"
    size, expected = dat.stat().st_size, expected_len * len(LEADS_12) * 2
    if size != expected:
        return (
            f"signal file {'truncated' if size < expected else 'too long'}: {size} bytes, expected {expected}"
        )
    if deep:
        try:
            sig = read_format16(header, hea.parent)
        except (FedECGError, OSError, ValueError) as exc:
            return f"signal unreadable ({exc})"
        if not np.isfinite(sig).all():
            return "signal contains invalid (NaN) samples"
    return None


def check_dataset(
    root: str | Path, *, deep: bool = False, progress: Callable[[int, int], None] | None = None
) -> CheckReport:
    """Validate the PTB-XL folder ``root``; a missing/garbled CSV or missing columns raise FedECGError.

    ``progress(done, total)`` is called after each row (for a progress bar)."""
    root = dataset_root(root)
    if not root.is_dir():
        raise FedECGError(f"{root}: not a folder")
    meta = read_database(root)
    if not any((root / d).is_dir() for d in ("records100", "records500")):
        raise FedECGError(
            f"{root}: no records100/ or records500/ folder (a metadata-only folder has nothing to check; "
            "`fedecg data partition` works on it)"
        )
    report = CheckReport(root=str(root), n_rows=len(meta))
    try:
        known = set(read_scp_statements(root).index)
    except FedECGError as exc:
        report.bad.append({"record": "scp_statements.csv", "reason": str(exc)})
        known = None
    sites, folds = Counter(), Counter()
    for done, (ecg_id, row) in enumerate(meta.iterrows(), start=1):
        row_ok = True
        for column, fs in RESOLUTIONS:
            problem = check_record(root, str(row[column]), fs, deep=deep)
            if problem:
                row_ok = False
                report.bad.append({"record": str(row[column]), "ecg_id": int(ecg_id), "reason": problem})
        unknown = sorted(set(row["scp_codes"]) - known) if known is not None else []
        if unknown:
            row_ok = False
            report.bad.append(
                {
                    "record": str(row["filename_lr"]),
                    "ecg_id": int(ecg_id),
                    "reason": f"unknown SCP code(s) {unknown} in ptbxl_database.csv",
                }
            )
        if row_ok:
            report.records_ok += 1
            sites[str(int(row["site"])) if row["site"] == row["site"] else "none"] += 1
            folds[str(int(row["strat_fold"]))] += 1
        if progress:
            progress(done, len(meta))
    report.sites = {
        k: sites[k] for k in sorted(sites, key=lambda s: (s == "none", int(s) if s != "none" else 0))
    }
    report.folds = {k: folds[k] for k in sorted(folds, key=int)}
    report.warnings += _orphans(root, meta)
    return report


def _orphans(root: Path, meta) -> list[str]:
    listed = {str(f) for col, _ in RESOLUTIONS for f in meta[col]}
    found = (
        {
            str(p.relative_to(root).with_suffix(""))
            for d in ("records100", "records500")
            for p in (root / d).rglob("*.hea")
        }
        if any((root / d).is_dir() for d in ("records100", "records500"))
        else set()
    )
    extra = sorted(found - listed)
    return (
        [f"{len(extra)} record(s) on disk not listed in ptbxl_database.csv, e.g. {extra[:3]}"]
        if extra
        else []
    )
