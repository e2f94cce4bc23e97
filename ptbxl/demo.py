"""The built-in demo dataset: synthetic ECGs written in PTB-XL's exact PhysioNet layout.

``make_demo_dataset(dest)`` writes ``ptbxl_database.csv`` (PTB-XL's 28 columns), ``scp_statements.csv`` (the
71 statements, from ``ptbxl.scp_table``), ``RECORDS`` and WFDB records in ``records100/`` (100 Hz, 1000
samples) and ``records500/`` (500 Hz, 5000 samples): 12 leads in mV, 16-bit, gain 1000/mV, like PTB-XL.
Signals come from the dipole model in ``ptbxl.synth`` (label-dependent), generated at 500 Hz and resampled to
100 Hz. Sites have skewed sizes (weights ∝ 1/(rank+1)^1.3) and different label mixes; patients have 1–3
records at one site and one strat_fold; ages follow PTB-XL (over 89 coded as 300), height is missing for ~68 %
and weight for ~57 % of records. Nothing in it is PTB-XL data.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_text
from ptbxl.constants import DURATION_S, FS, FS_HIGH
from ptbxl.scp_table import statements_frame
from ptbxl.signals import derive_12_leads
from ptbxl.synth import synth_ecg8
from ptbxl.writer import write_ptbxl_folder, write_record

log = logging.getLogger(__name__)

# Bumped whenever the generator's output changes (cached demo datasets are keyed by it).
GENERATOR_VERSION = "dipole2"

# (weight, scp_codes) profiles; rhythm statements carry likelihood 0 as in PTB-XL.
PROFILES: tuple[tuple[float, dict[str, float]], ...] = (
    (0.36, {"NORM": 100.0, "SR": 0.0}),
    (0.05, {"NORM": 80.0, "SBRAD": 0.0}),
    (0.04, {"NORM": 80.0, "STACH": 0.0}),
    (0.03, {"NORM": 100.0, "SARRH": 0.0}),
    (0.05, {"IMI": 100.0, "QWAVE": 0.0, "SR": 0.0}),
    (0.05, {"ASMI": 100.0, "SR": 0.0}),
    (0.02, {"ILMI": 100.0, "SR": 0.0}),
    (0.02, {"AMI": 80.0, "INJAS": 50.0, "SR": 0.0}),
    (0.05, {"ISC_": 100.0, "STD_": 0.0, "SR": 0.0}),
    (0.04, {"NST_": 100.0, "SR": 0.0}),
    (0.03, {"NDT": 100.0, "INVT": 0.0, "SR": 0.0}),
    (0.05, {"LVH": 100.0, "VCLVH": 0.0, "SR": 0.0}),
    (0.03, {"CLBBB": 100.0, "SR": 0.0}),
    (0.04, {"CRBBB": 100.0, "SR": 0.0}),
    (0.03, {"IRBBB": 100.0, "SR": 0.0}),
    (0.03, {"LAFB": 100.0, "SR": 0.0}),
    (0.03, {"1AVB": 100.0, "LPR": 0.0, "SR": 0.0}),
    (0.04, {"AFIB": 0.0, "ISC_": 50.0}),
    (0.02, {"PVC": 100.0, "SR": 0.0}),
    (0.02, {"LVOLT": 0.0, "NORM": 50.0, "SR": 0.0}),
    (0.01, {"LNGQT": 100.0, "SR": 0.0}),
)


def _site_sizes(n_records: int, n_sites: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n_sites + 1) ** 1.3
    sizes = np.maximum(1, np.floor(w / w.sum() * n_records)).astype(int)
    sizes[0] += n_records - sizes.sum()
    return sizes


def _site_profile_weights(site: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array([p for p, _ in PROFILES])
    tilt = rng.lognormal(0.0, 0.6, size=len(base))  # each hospital has its own case mix
    if site == 0:
        tilt[0] *= 1.6  # the big general hospital sees many normals
    w = base * tilt
    return w / w.sum()


def demo_metadata(n_records: int, n_sites: int, rng: np.random.Generator) -> pd.DataFrame:
    """PTB-XL-layout metadata (28 columns) for ``n_records`` synthetic records over ``n_sites`` skewed sites;
    ``attrs["codes"]`` holds the scp_codes dicts."""
    rows, ecg_id, patient_id = [], 1, 1000
    for site, size in enumerate(_site_sizes(n_records, n_sites)):
        weights = _site_profile_weights(site, rng)
        left = int(size)
        while left > 0:
            k = int(min(left, rng.choice([1, 1, 1, 1, 2, 3])))
            fold = int(rng.integers(1, 11))
            sex = int(rng.random() < 0.48)
            age = float(np.clip(np.round(rng.normal(61, 17)), 18, 95))
            height = float(np.round(rng.normal(178 if sex == 0 else 165, 7)))
            weight = float(np.round(rng.normal(82 if sex == 0 else 68, 13)))
            has_h, has_w = rng.random() > 0.68, rng.random() > 0.57
            for _ in range(k):
                codes = dict(PROFILES[int(rng.choice(len(PROFILES), p=weights))][1])
                rows.append(
                    {
                        "ecg_id": ecg_id,
                        "patient_id": float(patient_id),
                        "age": 300.0 if age > 89 else (np.nan if rng.random() < 0.01 else age),
                        "sex": sex,
                        "height": height if has_h else np.nan,
                        "weight": weight if has_w else np.nan,
                        "site": float(site),
                        "codes": codes,
                        "strat_fold": fold,
                    }
                )
                ecg_id += 1
            patient_id += int(rng.integers(1, 4))
            left -= k
    df = pd.DataFrame(rows)
    folder = [f"{(i // 1000) * 1000:05d}" for i in df["ecg_id"]]
    start = pd.Timestamp("1990-01-01")
    out = pd.DataFrame(
        {
            "ecg_id": df["ecg_id"],
            "patient_id": df["patient_id"],
            "age": df["age"],
            "sex": df["sex"],
            "height": df["height"],
            "weight": df["weight"],
            "nurse": np.nan,
            "site": df["site"],
            "device": "DEMO-SYNTH",
            "recording_date": [
                str(start + pd.Timedelta(hours=int(h))) for h in rng.integers(0, 24 * 365 * 10, len(df))
            ],
            "report": "synthetic demo record",
            "scp_codes": [str(c) for c in df["codes"]],
            "heart_axis": np.nan,
            "infarction_stadium1": np.nan,
            "infarction_stadium2": np.nan,
            "validated_by": np.nan,
            "second_opinion": False,
            "initial_autogenerated_report": False,
            "validated_by_human": True,
            "baseline_drift": np.nan,
            "static_noise": np.nan,
            "burst_noise": np.nan,
            "electrodes_problems": np.nan,
            "extra_beats": np.nan,
            "pacemaker": np.nan,
            "strat_fold": df["strat_fold"],
            "filename_lr": [f"records100/{f}/{i:05d}_lr" for f, i in zip(folder, df["ecg_id"], strict=False)],
            "filename_hr": [f"records500/{f}/{i:05d}_hr" for f, i in zip(folder, df["ecg_id"], strict=False)],
        }
    )
    out.attrs["codes"] = df["codes"].tolist()
    return out


def synthesize_records(
    meta: pd.DataFrame, seed: int, high_rate: bool = True
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """Per row of ``demo_metadata``: ``(12-lead 500 Hz or None, 12-lead 100 Hz)`` float64 mV. Record ``ecg_id``
    draws from its own generator seeded ``[seed, ecg_id]`` (so a record is the same whatever else is made)."""
    for row, codes in zip(meta.itertuples(index=False), meta.attrs["codes"], strict=True):
        rec_rng = np.random.default_rng([seed, int(row.ecg_id)])
        age = 90.0 if not np.isfinite(row.age) or row.age > 89 else float(row.age)
        hi8 = synth_ecg8(set(codes), age, int(row.sex), FS_HIGH, DURATION_S, rec_rng)
        lo8 = resample_poly(hi8, FS, FS_HIGH, axis=-1)
        yield (derive_12_leads(hi8) if high_rate else None), derive_12_leads(lo8)


def _write_chunk(tmp: Path, meta: pd.DataFrame, seed: int) -> int:
    for row, (hi12, lo12) in zip(meta.itertuples(index=False), synthesize_records(meta, seed), strict=True):
        write_record(tmp, row.filename_hr, hi12, FS_HIGH)
        write_record(tmp, row.filename_lr, lo12, FS)
    return len(meta)


def _write_all(tmp: Path, meta: pd.DataFrame, seed: int, workers: int) -> None:
    """Write every record; with ``workers`` > 1 in that many processes (a record depends only on
    ``(seed, ecg_id)``, so the result is the same)."""
    if workers <= 1 or len(meta) < 200:
        _write_chunk(tmp, meta, seed)
        return
    chunks = []
    for part in np.array_split(np.arange(len(meta)), workers * 4):
        chunk = meta.iloc[part].copy()
        chunk.attrs["codes"] = [meta.attrs["codes"][i] for i in part]
        chunks.append(chunk)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_write_chunk, [tmp] * len(chunks), chunks, [seed] * len(chunks)))


def make_demo_dataset(
    dest: str | Path, n_records: int = 480, n_sites: int = 5, seed: int = 0, overwrite: bool = False,
    workers: int = 0,
) -> Path:
    """Write a synthetic PTB-XL-layout dataset to ``dest`` and return it (complete or not at all:
    ``ptbxl.writer.write_ptbxl_folder``).

    ``workers``: processes that write the records (0 = one per CPU core). Raises FedECGError when ``dest``
    exists and is not empty (unless ``overwrite``) or the sizes are invalid."""
    dest = Path(dest)
    if n_records < n_sites or n_sites < 1:
        raise FedECGError(f"demo: need n_records >= n_sites >= 1 (got {n_records}, {n_sites})")
    rng = np.random.default_rng(seed)
    meta = demo_metadata(n_records, n_sites, rng)
    readme = ("Synthetic demo data in PTB-XL's layout, written by "
              f"ptbxl.demo.make_demo_dataset(n_records={n_records}, n_sites={n_sites}, seed={seed}). "
              "Not PTB-XL data.\n")

    def fill(folder: Path) -> None:
        _write_all(folder, meta, seed, workers or os.cpu_count() or 1)
        atomic_write_text(folder / "README.md", readme)

    write_ptbxl_folder(dest, meta, statements=statements_frame(), fill=fill, overwrite=overwrite)
    log.info("wrote %d demo records (%d sites) to %s", len(meta), n_sites, dest)
    return dest
