"""Benchmark the data layer: records/s for wfdb.rdsamp, a cold ``load_arrays`` (decode + cache write) and a
warm one (content-hashed memmap cache), plus the header check rate.

    .venv/bin/python -m bench.bench_data                         # on a fresh demo dataset (480 records)
    .venv/bin/python -m bench.bench_data --data ../shared/ptbxl   # on real PTB-XL records
    .venv/bin/python -m bench.bench_data --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import wfdb

from ptbxl.check import check_dataset
from ptbxl.dataset import load_arrays
from ptbxl.demo import make_demo_dataset
from ptbxl.layout import read_database


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(data: Path, n: int | None, cache_dir: Path) -> dict:
    meta = read_database(data)
    ids = meta.index.tolist()[: n or None]
    names = meta.loc[ids, "filename_lr"].tolist()
    _, t_wfdb = _timed(lambda: [wfdb.rdsamp(str(data / name)) for name in names])
    _, t_plain = _timed(lambda: load_arrays(data, ids, meta=meta))
    _, t_cold = _timed(lambda: load_arrays(data, ids, cache_dir=cache_dir, meta=meta))
    warm, t_warm = _timed(lambda: load_arrays(data, ids, cache_dir=cache_dir, meta=meta))
    _, t_touch = _timed(lambda: float(np.asarray(warm.x).sum()))
    _, t_check = _timed(lambda: check_dataset(data))
    k = len(ids)
    return {
        "data": str(data),
        "records": k,
        "wfdb_rdsamp_rec_per_s": round(k / t_wfdb, 1),
        "load_no_cache_rec_per_s": round(k / t_plain, 1),
        "load_cold_with_cache_write_rec_per_s": round(k / t_cold, 1),
        "load_warm_cached_rec_per_s": round(k / t_warm, 1),
        "warm_read_all_samples_s": round(t_touch, 4),
        "check_rows_per_s": round(len(meta) / t_check, 1),
        "warm_speedup_vs_cold": round(t_cold / t_warm, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="PTB-XL folder (default: a fresh demo dataset)")
    parser.add_argument("--n", type=int, default=None, help="only the first N records")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = make_demo_dataset(Path(tmp) / "demo", n_records=480, seed=0)
        result = run(data, args.n, Path(tmp) / "cache")
    if args.json:
        print(json.dumps(result))
        return
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
