"""Fidelity of the samplers against their number of denoiser calls, on a trained model (default the built-in
base ``builtin:dipole-small``, EMA weights), with DDPM-200 as the reference.

Arms (``sssd.sampling.sample``; each point is one seeded run, the same conditions and the same x_T for all):

    ddpm        ancestral DDPM, all T = 200 steps (the reference)
    ddim-eta1   DDIM, eta = 1 (stochastic; the product's default), steps --steps
    ddim-eta0   DDIM, eta = 0 (deterministic: the probability-flow ODE, first order), steps --eta0-steps
    dpmpp2m     DPM-Solver++(2M) (the same ODE, second order multistep, logSNR-spaced steps), steps --steps
    dpmpp2m-sde DPM-Solver++(2M) SDE (stochastic; first order it is DDIM eta = 1), logSNR steps, --steps

Conditions: --n rows of PTB-XL's folds 1-8 in --data (labels, age, sex, height, weight; seeded draw as
``evaluation.synthesize.conditions_like_dataset``). Reference: the held-out folds 9-10 of --data (at most
--max-real, as ``simulations.finish.write_fidelity`` with ``output.fidelity_reference: heldout``).
Metrics: ``evaluation.realism.realism_metrics`` (beat rate, pooled inter-lead correlation error, HF power ratio,
amplitude ratio, heart-rate distance, spectral distance). 95 % percentile bootstrap intervals (--n-boot
resamples of both the synthetic and the real ECGs, with replacement; the same resample indices for every arm,
so the arms are paired) for the first five, from per-ECG features computed once (``realism`` building
blocks; the full-sample values equal ``realism_metrics``'s, checked). A point "matches DDPM-200" when each of
those five metrics lies inside DDPM-200's interval; ``paired_diff_ci95`` is the interval of (arm - DDPM-200)
over the same resamples.

``--ode-check`` adds the ODE accuracy of the deterministic samplers on the same model: relative L2 distance
(model units, fp32) of DDIM(eta=0) and DPM-Solver++(2M) (logSNR steps, and DDIM's evenly spaced steps) at k
steps to DPM-Solver++(2M) on all T steps, for --ode-n ECGs.

    python bench/bench_sampler_steps.py [--n 32] [--steps 10,15,20,25,50] [--eta0-steps 10,20,50]
        [--data $PTBXL_DIR] [--out runs/bench-sampler-steps] [--png docs/img/bench-sampler-steps.png]
        [--only dpmpp2m,ddpm] [--resume] [--ode-check] [--threads 2]

Outputs: OUT/sampler_steps.json (settings, machine, per point metrics + intervals + wall time), OUT/<point>.npz
(the synthetic ECGs, for --resume), the plot (--png) and a printed table. With --resume, points already in
OUT (same settings) are reused, so the curve can be computed in several shorter runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

if __package__ in (None, ""):  # run as a script: make the repository importable (bench.bench_quality)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_quality import machine_info  # noqa: E402
from evaluation import fidelity  # noqa: E402
from evaluation.realism import (  # noqa: E402
    CRITERIA,
    RhythmConfig,
    beat_features,
    hf_power_share,
    realism_metrics,
    robust_amplitude,
)
from evaluation.synthesize import conditions_like_dataset  # noqa: E402
from fedecg.io import atomic_write_json  # noqa: E402
from ptbxl.constants import HELDOUT_FOLDS, TRAIN_FOLDS  # noqa: E402
from ptbxl.dataset import load_arrays  # noqa: E402
from ptbxl.demographics import encode_demographics  # noqa: E402
from ptbxl.labels import LabelVocab  # noqa: E402
from ptbxl.layout import read_database  # noqa: E402
from ptbxl.signals import derive_12_leads  # noqa: E402
from sssd.checkpoint import build_model  # noqa: E402
from sssd.config import ModelConfig  # noqa: E402
from sssd.diffusion import Schedule  # noqa: E402
from sssd.pretrained import load_base  # noqa: E402
from sssd.s4 import cached_kernels  # noqa: E402
from sssd.sampling import _ddim_loop, ddim_timesteps, dpmpp2m_loop, resolve_precision, sample  # noqa: E402

KEYS = ("beat_rate", "inter_lead_correlation_error", "hf_power_ratio", "amplitude_ratio", "heart_rate_distance")
LABELS = {"beat_rate": "beat rate", "inter_lead_correlation_error": "ILC error (pooled)",
          "hf_power_ratio": "HF power ratio (syn / real)", "amplitude_ratio": "amplitude ratio (syn / real)",
          "heart_rate_distance": "heart-rate distance (bpm)", "spectral_distance": "spectral distance (dB)"}
ARMS = ("ddpm", "ddim-eta1", "ddim-eta0", "dpmpp2m", "dpmpp2m-sde")


# ---- per-ECG features and the bootstrap ------------------------------------------------------------------


def ecg_features(x: np.ndarray, fs: float = 100.0) -> dict[str, np.ndarray]:
    """Per-ECG quantities behind ``realism_metrics`` (its building blocks), for the bootstrap."""
    cfg = RhythmConfig()
    b = beat_features(x, fs, cfg)
    return {"regular": b["regular"].astype(np.float64), "hr": b["hr_bpm"],
            "amp": robust_amplitude(x, cfg.lead), "hf": hf_power_share(x, fs, cfg.hf_cutoff_hz),
            "corr": fidelity.correlation_matrices(x)}


def aggregate(real: dict, syn: dict, r_idx: np.ndarray | None = None, s_idx: np.ndarray | None = None) -> dict:
    """The five metrics of ``KEYS`` from per-ECG features (optionally of resampled ECGs), as realism_metrics
    defines them; NaN where undefined."""
    r = real if r_idx is None else {k: v[r_idx] for k, v in real.items()}
    s = syn if s_idx is None else {k: v[s_idx] for k, v in syn.items()}

    def ratio(a: float, b: float) -> float:
        return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")

    def finite(v: np.ndarray) -> np.ndarray:
        return v[np.isfinite(v)]

    hr_r, hr_s = finite(r["hr"]), finite(s["hr"])
    hf_r, hf_s = finite(r["hf"]), finite(s["hf"])
    off = ~np.eye(r["corr"].shape[1], dtype=bool)
    return {
        "beat_rate": float(s["regular"].mean()),
        "inter_lead_correlation_error": float(np.abs(r["corr"].mean(0) - s["corr"].mean(0))[off].mean()),
        "hf_power_ratio": ratio(float(hf_s.mean()) if hf_s.size else math.nan,
                                float(hf_r.mean()) if hf_r.size else math.nan),
        "amplitude_ratio": ratio(float(np.median(s["amp"])), float(np.median(r["amp"]))),
        "heart_rate_distance": float(wasserstein_distance(hr_r, hr_s)) if hr_r.size and hr_s.size else math.nan,
    }


def bootstrap_indices(n_real: int, n_syn: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_boot, n_real) and (n_boot, n_syn) resample indices, the same for every arm (paired)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_real, (n_boot, n_real)), rng.integers(0, n_syn, (n_boot, n_syn))


def bootstrap(real: dict, syn: dict, idx: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Per metric: the (n_boot,) bootstrap replicates."""
    reps = [aggregate(real, syn, ri, si) for ri, si in zip(*idx)]
    return {k: np.array([rep[k] for rep in reps]) for k in KEYS}


def ci95(v: np.ndarray) -> list[float] | None:
    v = v[np.isfinite(v)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else None


# ---- data, model, sampling -----------------------------------------------------------------------------------


def heldout_reference(data: Path, max_real: int, seed: int) -> tuple[np.ndarray, str]:
    """Folds 9-10 of ``data`` (at most ``max_real``, drawn with ``seed``), (N, 12, L) mV, as
    ``simulations.finish.write_fidelity``'s held-out reference."""
    meta = read_database(data)
    pool = sorted(int(e) for e in meta.index[meta["strat_fold"].isin(HELDOUT_FOLDS)])
    if not pool:
        raise SystemExit(f"bench_sampler_steps: {data} has no records in folds 9-10 for the reference")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(pool, size=min(max_real, len(pool)), replace=False).tolist())
    real = np.asarray(derive_12_leads(np.asarray(load_arrays(data, pick).x)), dtype=np.float64)
    return real, f"{len(pick)} held-out records (folds 9-10) of {data} (of {len(pool)})"


def load_model(spec: str):
    """(model in eval mode, its ModelConfig, the Base) from ``sssd.pretrained.load_base`` (EMA weights)."""
    base = load_base(spec)
    cfg = ModelConfig.from_dict(base.model_config)
    return build_model(cfg, base.state).eval(), cfg, base


def encoded_conditions(data: Path, n: int, seed: int):
    """Labels, demographics and mask (torch) of ``n`` training-fold rows of ``data`` (as
    ``evaluation.synthesize.generate`` encodes them, with the default label vocabulary)."""
    cond = conditions_like_dataset(data, n, seed=seed, folds=TRAIN_FOLDS)
    labels = LabelVocab.default().encode_many(cond.scp_codes)
    demo, mask = encode_demographics(cond.demographics)
    return tuple(torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (labels, demo, mask))


def draw(model, sched, conditions, sampler: str, steps: int, eta: float, seed: int, batch: int,
         precision: str = "auto") -> np.ndarray:
    """One seeded sampling run over all conditions, (N, 12, L) mV, in batches (one generator: the first
    batch's x_T is the same for every arm)."""
    gen = torch.Generator().manual_seed(seed)
    labels, demo, mask = conditions
    out = []
    for s in range(0, len(labels), batch):
        sl = slice(s, s + batch)
        x = sample(model, sched, labels[sl], demo[sl], mask[sl], sampler=sampler, steps=steps, eta=eta,
                   generator=gen, precision=precision)
        out.append(x.float().numpy())
    return np.concatenate(out).astype(np.float64)


# ---- the benchmark -------------------------------------------------------------------------------------------


def plan(steps: list[int], eta0_steps: list[int], T: int, only: set[str] | None) -> list[dict]:
    points = [{"name": f"ddpm-{T}", "arm": "ddpm", "sampler": "ddpm", "eta": 1.0, "steps": T}]
    points += [{"name": f"ddim-eta1-{k}", "arm": "ddim-eta1", "sampler": "ddim", "eta": 1.0, "steps": k}
               for k in steps]
    points += [{"name": f"ddim-eta0-{k}", "arm": "ddim-eta0", "sampler": "ddim", "eta": 0.0, "steps": k}
               for k in eta0_steps]
    points += [{"name": f"dpmpp2m-{k}", "arm": "dpmpp2m", "sampler": "dpmpp2m", "eta": 0.0, "steps": k}
               for k in steps]
    points += [{"name": f"dpmpp2m-sde-{k}", "arm": "dpmpp2m-sde", "sampler": "dpmpp2m-sde", "eta": 1.0,
                "steps": k} for k in steps]
    return [p for p in points if only is None or p["arm"] in only]


def evaluate_points(result: dict, real_feat: dict, idx, out: Path) -> None:
    """Metrics, own intervals, DDPM-200 comparison of every point with ECGs on disk (fills ``result``)."""
    real = result["_real"]
    boots = {}
    for name, point in result["points"].items():
        with np.load(out / f"{name}.npz") as z:
            syn = np.asarray(z["signals"], dtype=np.float64)
        metrics = realism_metrics(real, syn, fs=100.0)
        feat = ecg_features(syn)
        mine = aggregate(real_feat, feat)
        for k in KEYS:  # the bootstrap's statistic is realism_metrics's
            a, b = mine[k], metrics[k]
            if not ((b is None and not math.isfinite(a)) or (b is not None and math.isclose(a, b, rel_tol=1e-9,
                                                                                            abs_tol=1e-12))):
                raise AssertionError(f"{name}: bootstrap statistic {k} = {a} differs from realism_metrics {b}")
        boots[name] = bootstrap(real_feat, feat, idx)
        point["metrics"] = metrics
        point["ci95"] = {k: ci95(boots[name][k]) for k in KEYS}
    ref = next((n for n, p in result["points"].items() if p["arm"] == "ddpm"), None)
    if ref is None:
        return
    ref_ci = result["points"][ref]["ci95"]
    for name, point in result["points"].items():
        m = point["metrics"]
        within = {k: bool(ref_ci[k] is not None and m[k] is not None and ref_ci[k][0] <= m[k] <= ref_ci[k][1])
                  for k in KEYS}
        point["within_ddpm_ci"] = within
        point["matches_ddpm"] = all(within.values())
        point["paired_diff_ci95"] = {k: ci95(boots[name][k] - boots[ref][k]) for k in KEYS}


def choose_default(result: dict, arm: str = "dpmpp2m") -> int | None:
    """Smallest step count of ``arm`` whose metrics all lie inside DDPM-200's intervals (None if none does)."""
    ks = sorted(p["steps"] for p in result["points"].values() if p["arm"] == arm and p.get("matches_ddpm"))
    return ks[0] if ks else None


def ode_check(model, sched, conditions, ks: list[int], n: int, seed: int) -> dict:
    """Relative L2 error (model units, fp32, conditional, guidance 1) of the deterministic samplers at k steps
    against DPM-Solver++(2M) on all T steps, from the same x_T."""
    labels, demo, mask = (c[:n] for c in conditions)
    cfg, T = model.cfg, sched.T
    x_t = torch.randn(n, cfg.out_channels, cfg.seq_len, generator=torch.Generator().manual_seed(seed))

    def eps_fn(x, t):
        return model(x, torch.full((n,), t, dtype=torch.long), labels, demo, mask).float()

    def solve(method: str, k: int) -> np.ndarray:
        with torch.no_grad(), cached_kernels(model, cfg.seq_len):
            if method == "ddim_eta0":
                x = _ddim_loop(x_t.clone(), sched, eps_fn, k, 0.0, None, torch.device("cpu"))
            else:
                grid = ddim_timesteps(T, k) if method == "dpmpp2m_even" else None
                x = dpmpp2m_loop(x_t.clone(), sched, eps_fn, k, timesteps=grid)
        return x.double().numpy()

    t0 = time.perf_counter()
    ref = solve("dpmpp2m_logsnr", T)
    norm = float(np.linalg.norm(ref))
    out = {"n": n, "reference": f"dpmpp2m on all {T} steps, fp32", "reference_seconds": time.perf_counter() - t0,
           "ddim_eta0_all_steps_vs_reference": float(np.linalg.norm(solve("ddim_eta0", T) - ref)) / norm,
           "rows": []}
    for k in ks:
        row = {"steps": k, **{m: float(np.linalg.norm(solve(m, k) - ref)) / norm
                              for m in ("ddim_eta0", "dpmpp2m_logsnr", "dpmpp2m_even")}}
        out["rows"].append(row)
        print(f"ode-check k={k}: " + ", ".join(f"{a} {row[a]:.4f}" for a in row if a != "steps"), flush=True)
    return out


# ---- report ----------------------------------------------------------------------------------------------------


def _f(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3g}"


def format_table(result: dict) -> str:
    head = (f"{'point':<16}{'calls':>6}{'s/ECG':>7}  " + "".join(f"{k[:14]:>24}" for k in KEYS) + "  match")
    lines = [head, "-" * len(head)]
    for name, p in sorted(result["points"].items(), key=lambda kv: (ARMS.index(kv[1]["arm"]), kv[1]["steps"])):
        m, ci = p.get("metrics", {}), p.get("ci95", {})
        cells = []
        for k in KEYS:
            c = ci.get(k)
            mark = "" if p.get("within_ddpm_ci", {}).get(k, True) else "*"
            cells.append(f"{_f(m.get(k)) + mark} [{_f(c[0]) if c else '-'}, {_f(c[1]) if c else '-'}]".rjust(24))
        match = {True: "yes", False: "no"}.get(p.get("matches_ddpm"), "-")
        lines.append(f"{name:<16}{p['calls']:>6}{p['seconds_per_ecg']:>7.2f}  {''.join(cells)}  {match}")
    lines.append("value [95 % bootstrap interval]; * = outside DDPM-200's interval; match = all five inside")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib  # only to draw the plot, with the Agg backend (no display)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    styles = {"ddim-eta1": ("tab:blue", "o", "DDIM, eta = 1"), "ddim-eta0": ("tab:orange", "s", "DDIM, eta = 0"),
              "dpmpp2m": ("tab:green", "^", "DPM-Solver++(2M)"),
              "dpmpp2m-sde": ("tab:purple", "v", "DPM-Solver++(2M) SDE")}
    panels = (*KEYS, "spectral_distance")
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    pts = result["points"]
    ref = next((p for p in pts.values() if p["arm"] == "ddpm"), None)
    dodge = {arm: 1.0 + 0.015 * (i - 1.5) for i, arm in enumerate(styles)}  # side by side at the same k
    for ax, key in zip(axes.ravel(), panels):
        for arm, (colour, marker, label) in styles.items():
            rows = sorted((p for p in pts.values() if p["arm"] == arm and "metrics" in p), key=lambda p: p["steps"])
            xs = [p["steps"] * dodge[arm] for p in rows]
            ys = [p["metrics"].get(key) for p in rows]
            if not xs:
                continue
            ys = [np.nan if y is None else y for y in ys]
            if key in KEYS:
                lo = [y - (p["ci95"][key] or [y, y])[0] for y, p in zip(ys, rows)]
                hi = [(p["ci95"][key] or [y, y])[1] - y for y, p in zip(ys, rows)]
                ax.errorbar(xs, ys, yerr=[lo, hi], color=colour, marker=marker, markersize=4, capsize=2,
                            label=label, alpha=0.85)
            else:
                ax.plot(xs, ys, color=colour, marker=marker, markersize=4, label=label)
        if ref is not None and "metrics" in ref and ref["metrics"].get(key) is not None:
            ax.axhline(ref["metrics"][key], color="k", linewidth=1.2, label=f"DDPM-{ref['steps']}")
            if key in KEYS and ref["ci95"].get(key):
                ax.axhspan(*ref["ci95"][key], color="k", alpha=0.1)
        if key in CRITERIA:
            for bound in CRITERIA[key]:
                if bound is not None:
                    ax.axhline(bound, color="r", linestyle="--", linewidth=0.8, alpha=0.6)
        ax.set_xscale("log")
        ticks = sorted({p["steps"] for p in pts.values() if p["arm"] != "ddpm"})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("denoiser calls (steps)")
        ax.set_title(LABELS[key], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    s = result["settings"]
    fig.suptitle(f"{s['base']}: {s['n']} synthetic ECGs per point vs {result['reference']}; "
                 "95 % bootstrap intervals, DDPM-200 band grey, criteria red", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="builtin:dipole-small", help="builtin:NAME or a checkpoint file")
    ap.add_argument("--data", type=Path, default=os.environ.get("PTBXL_DIR"),
                    help="PTB-XL folder (conditions: folds 1-8, reference: folds 9-10); default $PTBXL_DIR")
    ap.add_argument("--n", type=int, default=32, help="synthetic ECGs per point")
    ap.add_argument("--max-real", type=int, default=1000)
    ap.add_argument("--steps", type=_ints, default=[10, 15, 20, 25, 50], help="DDIM eta=1 and DPM-Solver++")
    ap.add_argument("--eta0-steps", type=_ints, default=[10, 20, 50], help="DDIM eta=0")
    ap.add_argument("--only", default=None, help="comma-separated arms: " + ",".join(ARMS))
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32, help="ECGs per sampling call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sampler-steps"))
    ap.add_argument("--png", type=Path, default=None, help="plot (default OUT/sampler_steps.png)")
    ap.add_argument("--resume", action="store_true", help="reuse points already in OUT (same settings)")
    ap.add_argument("--ode-check", action="store_true", help="also the ODE accuracy table")
    ap.add_argument("--ode-n", type=int, default=4)
    ap.add_argument("--ode-steps", type=_ints, default=[10, 20, 50])
    ap.add_argument("--no-sample", action="store_true", help="only re-evaluate / re-plot the points in OUT")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.data is None:
        raise SystemExit("bench_sampler_steps: give --data or set PTBXL_DIR")
    only = None if args.only is None else {a.strip() for a in args.only.split(",") if a.strip()}
    if only is not None and not only <= set(ARMS):
        raise SystemExit(f"bench_sampler_steps: unknown arm(s) {sorted(only - set(ARMS))} (choose from {ARMS})")
    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model, cfg, base = load_model(args.base)
    sched = Schedule.from_config(cfg)
    conditions = encoded_conditions(args.data, args.n, args.seed)
    real, reference = heldout_reference(args.data, args.max_real, args.seed)
    settings = {"base": args.base, "base_sha256": base.sha256, "weights": base.weights, "data": str(args.data),
                "n": args.n, "seed": args.seed, "n_boot": args.n_boot, "max_real": args.max_real,
                "precision": resolve_precision("auto", torch.device("cpu")), "threads": args.threads,
                "batch": args.batch, "guidance": 1.0, "T": sched.T}
    json_path = out / "sampler_steps.json"
    result = {"benchmark": "bench_sampler_steps", "settings": settings, "reference": reference, "points": {}}
    if (args.resume or args.no_sample) and json_path.exists():
        old = json.loads(json_path.read_text())
        if old.get("settings") != settings:
            raise SystemExit(f"bench_sampler_steps: {json_path} has other settings; use another --out")
        result["points"] = {n: p for n, p in old["points"].items() if (out / f"{n}.npz").exists()}
        result.update({k: old[k] for k in ("ode_check",) if k in old})
    result["machine"] = machine_info(args.threads)
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def save() -> None:
        atomic_write_json(json_path, {k: v for k, v in result.items() if not k.startswith("_")})

    todo = [] if args.no_sample else plan(args.steps, args.eta0_steps, sched.T, only)
    for point in todo:
        name = point["name"]
        if name in result["points"]:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        syn = draw(model, sched, conditions, point["sampler"], point["steps"], point["eta"], args.seed, args.batch)
        wall = time.perf_counter() - t0
        np.savez_compressed(out / f"{name}.npz", signals=syn.astype(np.float32))
        calls = sched.T if point["sampler"] == "ddpm" else point["steps"]
        result["points"][name] = {**point, "calls": calls, "wall_seconds": wall,
                                  "cpu_seconds_per_thread": (time.process_time() - c0) / args.threads,
                                  "seconds_per_ecg": wall / args.n,
                                  "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
        print(f"{datetime.now().strftime('%H:%M:%S')} {name}: {wall:.1f} s ({wall / args.n:.2f} s per ECG)",
              flush=True)
        save()
    if args.ode_check and "ode_check" not in result:
        result["ode_check"] = ode_check(model, sched, conditions, args.ode_steps, args.ode_n, args.seed)
        save()
    result["_real"] = real
    real_feat = ecg_features(real)
    idx = bootstrap_indices(len(real), args.n, args.n_boot, args.seed)
    evaluate_points(result, real_feat, idx, out)
    result["chosen_steps"] = {arm: choose_default(result, arm) for arm in ("dpmpp2m", "dpmpp2m-sde", "ddim-eta1")}
    save()
    png = plot(result, args.png or out / "sampler_steps.png")
    print(format_table(result), flush=True)
    print(f"smallest step count inside all DDPM-200 intervals: {result['chosen_steps']}")
    print(f"wrote {json_path} and {png}", file=sys.stderr)
    result.pop("_real")
    return result


if __name__ == "__main__":
    main()
