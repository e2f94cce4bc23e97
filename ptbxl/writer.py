"""The one writer of PTB-XL-layout folders: WFDB records + ``ptbxl_database.csv`` (+ ``scp_statements.csv``,
``RECORDS``), for the demo generator (``ptbxl.demo``), synthesis (``evaluation.synthesize``) and the canary
audit's dataset (``privacy.canary``).

Records are written as PTB-XL's: 12 leads in ``LEADS_12`` order (named as PhysioNet spells them, ``AVR AVL AVF``),
WFDB format 16 (``ptbxl.header.write_format16``), ``ADC_GAIN`` = 1000 units per mV (1 µV resolution), baseline
0; digital = round(mV × 1000) clipped to ±32767 (−32768 is WFDB's invalid sample), so ±32.767 mV at most.

A folder is complete or absent: everything is written into a hidden temporary sibling ``.<name>.XXXXXXXX`` and
renamed to ``dest`` in one step at the end. On an error the temporary folder is removed and ``dest`` is left as
it was (with ``overwrite`` an old ``dest`` is replaced only once the new folder is complete); a process killed
midway leaves at most a hidden ``.<name>.*`` folder, never a ``dest`` that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_text
from ptbxl.constants import ADC_GAIN, DATABASE_CSV, LEADS_12, STATEMENTS_CSV
from ptbxl.header import write_format16

WFDB_LEAD_NAMES: tuple[str, ...] = tuple(n.upper() if n.startswith("a") else n for n in LEADS_12)
RECORDS_FILE = "RECORDS"  # PhysioNet's list of records (here: one filename_lr per row of the CSV)
RECORD_FOLDERS = ("records100", "records500")

# (filename relative to the folder without extension, e.g. "records100/00000/00001_lr"; (12, L) mV; Hz)
Record = tuple[str, np.ndarray, int]


def write_record(root: str | Path, filename: str, sig12: np.ndarray, fs: int) -> None:
    """Write ``sig12`` ((12, L) mV, PTB-XL lead order) as the WFDB record ``root/filename`` at ``fs`` Hz (see
    the module docstring for the format). Raises FedECGError naming the record when the shape is not (12, L)
    or a sample is not finite."""
    sig12 = np.asarray(sig12)
    if sig12.ndim != 2 or sig12.shape[0] != len(LEADS_12):
        raise FedECGError(f"record {filename}: need ({len(LEADS_12)}, samples) mV, got shape {sig12.shape}")
    if not np.isfinite(sig12).all():
        raise FedECGError(f"record {filename}: {int((~np.isfinite(sig12)).sum())} sample(s) are NaN/Inf")
    digital = np.clip(np.round(sig12.T * ADC_GAIN), -32767, 32767).astype(np.int16)
    path = Path(root) / filename
    write_format16(path.parent, path.name, digital, fs, WFDB_LEAD_NAMES, adc_gain=ADC_GAIN)


def write_ptbxl_folder(
    dest: str | Path,
    meta: pd.DataFrame,
    records: Iterable[Record] = (),
    *,
    statements: pd.DataFrame | None = None,
    link_from: str | Path | None = None,
    fill: Callable[[Path], object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PTB-XL-layout folder at ``dest``, complete or not at all (module docstring); returns ``dest``.

    In the temporary folder, in this order: with ``link_from`` (another PTB-XL folder) each of its entries is
    symlinked, except the files written here (``records100/``/``records500/`` become real folders whose
    subfolders are linked, so new records can sit beside the old ones); each of ``records`` is written
    (:func:`write_record`; never through a link into ``link_from``); ``fill(folder)`` adds the caller's other
    files (records written by worker processes, arrays, plots, a README); then ``ptbxl_database.csv`` (``meta``,
    columns as given, no index), ``scp_statements.csv`` (``statements``, index = SCP code) when given, and
    ``RECORDS`` (``meta["filename_lr"]``). Raises FedECGError when ``dest`` exists and is not empty (unless
    ``overwrite``) or a record cannot be written."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise FedECGError(f"{dest}: exists and is not empty (use --overwrite / overwrite=True)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        written = {DATABASE_CSV, RECORDS_FILE} | ({STATEMENTS_CSV} if statements is not None else set())
        if link_from is not None:
            _link_entries(Path(link_from).resolve(), tmp, skip=written)
        inside = tmp.resolve()
        for filename, sig12, fs in records:
            if not (tmp / filename).parent.resolve().is_relative_to(inside):
                raise FedECGError(f"{dest}: record {filename} would be written through a link into {link_from}")
            write_record(tmp, filename, sig12, fs)
        if fill is not None:
            fill(tmp)
        meta.to_csv(tmp / DATABASE_CSV, index=False)
        if statements is not None:
            statements.to_csv(tmp / STATEMENTS_CSV)
        atomic_write_text(tmp / RECORDS_FILE, "".join(f"{f}\n" for f in meta["filename_lr"]))
        _replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _link_entries(source: Path, folder: Path, skip: set[str]) -> None:
    for item in sorted(source.iterdir()):
        if item.name in skip:
            continue
        if item.name in RECORD_FOLDERS and item.is_dir():
            (folder / item.name).mkdir()
            for sub in sorted(item.iterdir()):
                os.symlink(sub, folder / item.name / sub.name)
        else:
            os.symlink(item, folder / item.name)


def _replace(tmp: Path, dest: Path) -> None:
    """Rename the finished ``tmp`` to ``dest``; an old ``dest`` is moved aside first (and back if the rename
    fails) and removed after."""
    if not dest.exists():
        tmp.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
    dest.rename(old / dest.name)
    try:
        tmp.rename(dest)
    except BaseException:
        (old / dest.name).rename(dest)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
