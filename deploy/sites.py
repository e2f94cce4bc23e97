"""Write one PTB-XL-layout folder per site, so each SuperNode sees only its own hospital's records.

``split_sites(dataset, out)`` partitions the metadata with ``ptbxl.partition.partition_dataset`` (default: by the
``site`` column, all splits kept together with their ``strat_fold``) and writes, for every client::

    OUT/<client_id>/ptbxl_database.csv   the original CSV rows of this client's records (bytes unchanged)
    OUT/<client_id>/scp_statements.csv   copied
    OUT/<client_id>/records100/...       this client's record files (hard links when possible, else copies)
    OUT/<client_id>/records500/...       (only with ``include_hr=True``)
    OUT/manifest.json                    the partition manifest (``ptbxl.partition.Manifest``)

so a SuperNode started with ``--node-config "data-dir='OUT/<client_id>'"`` reads a complete, valid PTB-XL folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_text
from ptbxl.constants import DATABASE_CSV, STATEMENTS_CSV
from ptbxl.layout import read_database
from ptbxl.partition import partition_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteFolder:
    """One written site folder and how many records it holds."""

    client_id: str
    path: Path
    n_records: int


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def _record_files(root: Path, stem: str) -> list[Path]:
    files = [root / f"{stem}.hea", root / f"{stem}.dat"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FedECGError(f"record {stem}: missing {', '.join(str(m) for m in missing)}")
    return files


def split_sites(dataset: Path, out: Path, *, by: str = "site", include_hr: bool = False, link: bool = True,
                min_records: int = 1, overwrite: bool = False, **partition_options: object) -> list[SiteFolder]:
    """Partition ``dataset`` (a PTB-XL folder) and write one PTB-XL-layout folder per client under ``out``."""
    dataset = Path(dataset).resolve()
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FedECGError(f"{out} is not empty: choose a new folder for the site folders")
    meta = read_database(dataset)
    manifest = partition_dataset(meta, by=by, min_records=min_records, dataset=dataset, **partition_options)
    raw_lines = (dataset / DATABASE_CSV).read_text(encoding="utf-8").splitlines(keepends=True)
    raw = pd.read_csv(dataset / DATABASE_CSV, usecols=["ecg_id"])
    if len(raw) != len(raw_lines) - 1:  # quoted newlines inside a field: fall back to pandas round-trip
        raw_lines = []
    row_of = {int(e): i + 1 for i, e in enumerate(raw["ecg_id"])}
    statements = dataset / STATEMENTS_CSV
    written: list[SiteFolder] = []
    for client in manifest.clients:
        ids = sorted(int(i) for i in client.ecg_ids())
        dest = out / client.client_id
        dest.mkdir(parents=True, exist_ok=True)
        if raw_lines:
            text = raw_lines[0] + "".join(raw_lines[row_of[i]] for i in ids)
        else:
            text = pd.read_csv(dataset / DATABASE_CSV).set_index("ecg_id").loc[ids].reset_index().to_csv(index=False)
        atomic_write_text(dest / DATABASE_CSV, text)
        if statements.is_file():
            shutil.copy2(statements, dest / STATEMENTS_CSV)
        columns = ["filename_lr"] + (["filename_hr"] if include_hr else [])
        for ecg_id in ids:
            for col in columns:
                rel = str(meta.at[ecg_id, col])
                for src in _record_files(dataset, rel):
                    _place(src, dest / src.relative_to(dataset), link)
        written.append(SiteFolder(client.client_id, dest, len(ids)))
        log.info("site folder %s: %d records", dest, len(ids))
    manifest.save(out / "manifest.json")
    return written
