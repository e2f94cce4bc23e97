"""Benchmark exact nearest-neighbour search of the memorization audit on CPU (random data).

    .venv/bin/python bench/bench_audit.py --reference 21799 --queries 2000

Reference = a full PTB-XL-sized training set (21,799 records × 8 leads × 1000 samples = 8,000-dim vectors),
queries = synthetic ECGs. Prints the time for normalisation and the chunked exact 2-NN search, and the
throughput in query×reference pairs per second (the search cost is linear in queries × reference)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from privacy.distances import lead_scales, nearest_neighbours, normalise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=int, default=21799)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--leads", type=int, default=8)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    ref = rng.standard_normal((args.reference, args.leads, args.samples), dtype=np.float32)
    qry = rng.standard_normal((args.queries, args.leads, args.samples), dtype=np.float32)
    t0 = time.perf_counter()
    s = lead_scales(ref)
    zr = normalise(ref, s).reshape(len(ref), -1)
    zq = normalise(qry, s).reshape(len(qry), -1)
    t1 = time.perf_counter()
    nn = nearest_neighbours(zq, zr, k=2, device=args.device, normalised=True)
    t2 = time.perf_counter()
    pairs = args.reference * args.queries
    out = {
        "reference": args.reference,
        "queries": args.queries,
        "dim": args.leads * args.samples,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "normalise_s": round(t1 - t0, 2),
        "search_s": round(t2 - t1, 2),
        "pairs_per_s": round(pairs / (t2 - t1)),
        "extrapolated_21799x21799_s": round((t2 - t1) * 21799 * 21799 / pairs, 1),
        "mean_nn_distance": float(nn.distance[:, 0].mean()),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
