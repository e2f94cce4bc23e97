"""Where a federated round's time goes, printed as a table (numbers, not assertions).

1. Local compute: one site's ``train.local_steps`` steps, plain vs DP-SGD (Opacus) at the same batch size.
2. Serialisation: building the ArrayRecord of the model and its wire form (deflate + inflate), per message, packed
   (fedecg.wire) and one Array per parameter, with the number of Flower objects each needs.
3. A whole round: the in-process engine (local compute + serialisation only) vs Flower's Simulation Engine
   (Ray actors, message store): the difference is Flower/Ray overhead.

    python bench/bench_federation.py [--preset tiny] [--sites 4] [--local-steps 4] [--batch 8] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from flwr.app import Array, ArrayRecord
from rich.console import Console
from rich.table import Table

from client.training import train_local
from fedecg.config import ScenarioConfig, load_scenario
from fedecg.rundir import RunLayout
from fedecg.wire import from_record, to_record
from ptbxl.constants import TRAIN_FOLDS
from ptbxl.dataset import load_arrays
from ptbxl.demo import make_demo_dataset
from ptbxl.layout import read_database
from server.loop import initial_state
from simulations.runner import simulate


def _scenario(tmp: Path, dataset: Path, preset: str, steps: int, batch: int, dp: bool, rounds: int) -> Path:
    p = tmp / f"bench-{preset}-{dp}-{rounds}.yaml"
    p.write_text(yaml.safe_dump({
        "name": "bench", "dataset": str(dataset), "rounds": rounds, "seed": 0,
        "partition": {"by": "site", "min_records": 1}, "model": {"preset": preset},
        "train": {"local_steps": steps, "batch_size": batch, "eval_batches": 1},
        "dp": {"enabled": dp, "noise_multiplier": 1.0}, "output": {"synthesize": 0},
        "site_policy": {"dp_required": dp, "max_epsilon_run": 1e3, "max_epsilon_lifetime": 1e3},
        "strategy": {"min_train_nodes": 1, "min_available_nodes": 1}}))
    return p


def bench_local(dataset: Path, preset: str, steps: int, batch: int, dp: bool, repeats: int = 3) -> float:
    """Median seconds per local optimizer step at one site."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_scenario(_scenario(Path(tmp), dataset, preset, steps, batch, dp, 1))
    meta = read_database(dataset)
    ids = list(meta.index[meta["strat_fold"].isin(TRAIN_FOLDS)])[:64]
    arrays = load_arrays(dataset, ids)
    patients = (meta.loc[arrays.ecg_ids, "patient_id"].to_numpy() if "patient_id" in meta.columns
                else None)  # dp.unit patient: DP-SGD samples patients
    state = initial_state(cfg)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        train_local(state, arrays, cfg, server_round=r + 1, site="bench", device=torch.device("cpu"),
                    noise_multiplier=1.0 if dp else None, patient_ids=patients)
        if r > 0:  # first call warms up
            times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def bench_serialisation(preset: str, packed: bool = True, repeats: int = 5) -> tuple[float, float, int]:
    """(ms per message for the ArrayRecord + deflate + inflate + decode, MB on the wire, Flower objects per
    message) for the model's weights, in the packed wire form (fedecg.wire) or one Array per parameter."""
    cfg = ScenarioConfig.from_dict({"model": {"preset": preset}})
    state = initial_state(cfg)
    times, size, objects = [], 0, 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec = (to_record(state) if packed
               else ArrayRecord(array_dict={k: Array(np.asarray(v)) for k, v in state.items()}))
        size, objects, arrays = 0, 1, {}
        for name, arr in rec.items():  # Flower's object tree: an Array head + its ArrayChunk children
            chunks = {cid: (type(ch), ch.deflate()) for cid, ch in arr.children.items()}
            head = arr.deflate()
            size += len(head) + sum(len(b) for _, b in chunks.values())
            objects += 1 + len(chunks)
            children = {cid: cls.inflate(b) for cid, (cls, b) in chunks.items()}
            arrays[name] = Array.inflate(head, children)
        from_record(ArrayRecord(array_dict=arrays))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, size / 1e6, objects


def bench_round(dataset: Path, preset: str, steps: int, batch: int, engine: str, rounds: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        scen = _scenario(Path(tmp), dataset, preset, steps, batch, False, rounds)
        t0 = time.perf_counter()
        run = simulate(scen, Path(tmp) / "run", engine=engine)
        total = time.perf_counter() - t0
        rows = [json.loads(x) for x in RunLayout(run).metrics_path.read_text().splitlines()]
    last = rows[-1]
    compute = sum(m.get("train-seconds", 0.0) for m in last["sites"].values())
    return {"engine": engine, "total_s": total, "round_s": last["server"]["round-seconds"],
            "train_phase_s": last["server"]["train-phase-seconds"], "site_compute_sum_s": compute}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--records", type=int, default=120)
    ap.add_argument("--local-steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_demo_dataset(Path(tmp) / "ptbxl", n_records=args.records, n_sites=args.sites, seed=0)
        plain = bench_local(ds, args.preset, args.local_steps, args.batch, dp=False)
        private = bench_local(ds, args.preset, args.local_steps, args.batch, dp=True)
        ser_ms, wire_mb, n_objects = bench_serialisation(args.preset)
        named_ms, _, named_objects = bench_serialisation(args.preset, packed=False)
        rounds = [bench_round(ds, args.preset, args.local_steps, args.batch, "inprocess")]
        if not args.no_ray:
            rounds.append(bench_round(ds, args.preset, args.local_steps, args.batch, "ray"))

    t = Table(title=f"federated round cost — preset {args.preset}, batch {args.batch}, "
                    f"{args.local_steps} local steps, {args.sites} sites")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("plain step (s)", f"{plain:.3f}")
    t.add_row("DP-SGD step (s)", f"{private:.3f}")
    t.add_row("DP / plain", f"{private / plain:.2f}x")
    t.add_row("weights on the wire (MB / message)", f"{wire_mb:.3f}")
    t.add_row("ArrayRecord + (de)serialise (ms / message), packed | one Array per parameter",
              f"{ser_ms:.1f} | {named_ms:.1f}")
    t.add_row("Flower objects per model (each a request per hop), packed | one Array per parameter",
              f"{n_objects} | {named_objects}")
    for r in rounds:
        t.add_row(f"({r['engine']}) round wall time (s)", f"{r['round_s']:.2f}")
        t.add_row(f"({r['engine']}) train phase (s)", f"{r['train_phase_s']:.2f}")
        t.add_row(f"({r['engine']}) sum of site compute (s)", f"{r['site_compute_sum_s']:.2f}")
        t.add_row(f"({r['engine']}) whole run incl. start-up (s)", f"{r['total_s']:.1f}")
    if len(rounds) == 2:
        t.add_row("Flower/Ray overhead per round (s) = ray − inprocess round",
                  f"{rounds[1]['round_s'] - rounds[0]['round_s']:.2f}")
    console.print(t)


if __name__ == "__main__":
    main()
