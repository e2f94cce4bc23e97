"""How fast does a federation's generator draw ECG-like ECGs? Realism metrics (evaluation.realism) of each
round's synthetic ECGs against the federated training wall time, for four arms of the demo scenario:

    scratch-dp    init=none, train.lr=--scratch-lr, train.local_steps=--scratch-local-steps, DP-SGD as in demo
    scratch-nodp  the same with dp.enabled=false
    base-dp       init=--base (default builtin:dipole-small), the demo's own settings (DP-SGD)
    base-nodp     the same with dp.enabled=false

Every arm is a federated run (same model preset, data, partition, seed) in the in-process engine
(simulations.inprocess: the same ServerApp loop and ClientApp, sites one after another, no Ray); each site
trains with --threads torch threads. Before each round (and after the last) the benchmark pauses the
federation and evaluates the latest checkpoint: --n-synthetic ECGs drawn with its EMA weights (DDIM,
--sampler-steps, conditions and noise fixed across rounds), realism metrics against up to --max-real of the
run's training records (as simulations.finish.write_fidelity). Round 0 = the weights round 1 starts from (for
from-base arms the base itself). The evaluation time is NOT counted in the training minutes, nor is the set-up
before the clock starts (run directory, demo data, reading every site's records into the run's array cache).

An arm stops at the first round boundary at or after --minutes of training wall time, or after its planned
rounds: --rounds for the from-base arms, ceil(rounds * L / L_scratch) for the from-scratch arms (L = the
scenario's local steps), so every arm is planned for the same number of local optimizer steps: the same
compute and, under DP, the same horizon over which dp.target_epsilon is spent (an arm stopped by the clock
has spent less; each row reports the epsilon reached). ``--set rounds=N`` gives every arm N rounds.

    python bench/bench_quality.py [--arms scratch-dp,scratch-nodp,base-dp,base-nodp] [--minutes 8]
        [--rounds 6] [--out runs/bench-quality] [--set key=value ...] [--json]

Outputs: OUT/quality.json (settings, machine, per arm the rows {round, train_minutes, metrics...}),
OUT/quality.png (beat rate, ILC error, HF power ratio, amplitude ratio vs training minutes, criteria dashed),
OUT/<arm>/ (the arm's run directory), and a printed table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import flwr.common.logger  # noqa: F401  (quiet_flower: creates Flower's handler and level first)
import numpy as np
import torch

import simulations
from client.app import app as client_app
from evaluation.realism import CRITERIA, realism_criteria, realism_metrics
from evaluation.synthesize import SamplerSettings, conditions_like_dataset, generate
from fedecg import protocol as P
from fedecg.config import load_scenario
from fedecg.device import torch_threads
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from fedecg.rundir import RunLayout
from fedecg.wire import from_record
from ptbxl.constants import TRAIN_FOLDS
from ptbxl.dataset import load_arrays
from ptbxl.labels import LabelVocab
from ptbxl.layout import read_database
from ptbxl.partition import Manifest
from ptbxl.signals import derive_12_leads
from server.loop import ServerSettings, run_federation
from server.prepare import prepare_run
from simulations.inprocess import InProcessGrid
from simulations.runner import simulated_node_configs  # each simulated site's own policy
from sssd.checkpoint import save_checkpoint

ARMS = ("scratch-dp", "scratch-nodp", "base-dp", "base-nodp")
PANELS = (("beat_rate", "beat rate"), ("inter_lead_correlation_error", "ILC error (pooled)"),
          ("hf_power_ratio", "HF power ratio (syn / real)"), ("amplitude_ratio", "amplitude ratio (syn / real)"))
TABLE_KEYS = ("beat_rate", "inter_lead_correlation_error", "hf_power_ratio", "amplitude_ratio")


def default_scenario() -> Path:
    return Path(simulations.__file__).resolve().parent / "scenarios" / "demo.yaml"


# ---- the arms ---------------------------------------------------------------------------------------------


def arm_overrides(arm: str, base: str, scratch_lr: float, scratch_steps: int, rounds: int, threads: int,
                  extra: list[str]) -> list[str]:
    """The ``--set`` overrides of one arm on top of the scenario; ``extra`` (the user's) come last, so they win."""
    if arm not in ARMS:
        raise SystemExit(f"bench_quality: unknown arm {arm!r} (choose from {', '.join(ARMS)})")
    start, privacy = arm.split("-")
    out = ["output.synthesize=0", f"rounds={rounds}"]  # the benchmark draws its own ECGs; no finish step
    if threads > 0:
        out.append(f"train.threads={threads}")
    if start == "scratch":
        out += ["init=none", f"train.lr={scratch_lr:g}", f"train.local_steps={scratch_steps}"]
    else:
        out.append(f"init={base}")
    if privacy == "nodp":
        out += ["dp.enabled=false", "site_policy.dp_required=false"]  # the simulated sites allow it
    return out + list(extra)


def planned_rounds(scenario: Path, extra: list[str], rounds: int, scratch_steps: int) -> dict[str, int]:
    """Rounds of from-base / from-scratch arms: the same number of local steps for both."""
    steps = load_scenario(scenario, ["output.synthesize=0", "init=none", *extra]).train.local_steps
    return {"base": rounds, "scratch": max(1, math.ceil(rounds * steps / scratch_steps)), "local_steps": steps}


# ---- evaluation helpers -----------------------------------------------------------------------------------


def training_reference(rd, max_real: int = 1000):
    """(real (N, 12, L) mV, description): up to ``max_real`` of the run's training records, drawn with the
    run's seed from the manifest's training ids (the idea of simulations.finish.write_fidelity)."""
    cfg = rd.read_config()
    manifest = Manifest.load(rd.manifest_path)
    pool = sorted(int(e) for c in manifest.clients for e in c.ecg_ids("train"))
    if not pool:
        raise FedECGError(f"{rd.path}: no training records to compare the synthetic ECGs with")
    rng = np.random.default_rng(cfg.seed)
    pick = sorted(rng.choice(pool, size=min(max_real, len(pool)), replace=False).tolist())
    real = np.asarray(derive_12_leads(np.asarray(load_arrays(manifest.dataset, pick).x)), dtype=np.float64)
    return real, f"{len(pick)} training records of the run's sites (of {len(pool)})"


class Evaluator:
    """Draws the synthetic set of one checkpoint and scores it against the run's training records."""

    def __init__(self, rd, n: int, sampler_steps: int, max_real: int, threads: int) -> None:
        cfg = rd.read_config()
        manifest = Manifest.load(rd.manifest_path)
        self.real, self.reference = training_reference(rd, max_real)
        # as simulations.finish.synthesize_examples: conditions of training-fold rows, the run's seed
        self.conditions = conditions_like_dataset(manifest.dataset, n, seed=cfg.seed, folds=TRAIN_FOLDS)
        self.settings = SamplerSettings(sampler="ddim", steps=sampler_steps, seed=cfg.seed, ema=True)
        self.threads = threads

    def __call__(self, checkpoint: Path) -> dict:
        t0 = time.perf_counter()
        with torch_threads(self.threads if self.threads > 0 else None):
            syn, info = generate(checkpoint, self.conditions, self.settings)
        t1 = time.perf_counter()
        error = None
        try:
            metrics = realism_metrics(self.real, np.asarray(syn, dtype=np.float64), fs=100.0)
        except FedECGError as exc:  # e.g. a diverged model's NaN ECGs: a row that fails every criterion
            error = str(exc)
            metrics = dict.fromkeys(("beat_rate", "inter_lead_correlation_error", "hf_power_ratio",
                                     "amplitude_ratio", "heart_rate_distance"))
        crit = realism_criteria(metrics)
        out = {"weights": info["weights"], "sampling_seconds": t1 - t0,
               "metrics_seconds": time.perf_counter() - t1, "metrics": metrics, "criteria": crit,
               "criteria_met": int(sum(crit.values()))}
        if error:
            out["error"] = error
        return out


def warm_site_caches(rd) -> None:
    """Read every site's records once into the run's array cache before the clock starts, so the first round's
    WFDB reading is not counted as training. Mirrors where simulated sites look (client.data._from_manifest:
    RUN_DIR/.cache, content-hashed); if that ever moves, the sites just read the records themselves."""
    manifest = Manifest.load(rd.manifest_path)
    meta = read_database(manifest.dataset)
    for client in manifest.clients:
        for ids in (client.train, client.val):
            if ids:
                load_arrays(manifest.dataset, ids, cache_dir=rd.cache_dir, meta=meta)


def _round0_checkpoint(messages, cfg, path: Path) -> Path:
    """The weights round 1 starts from (what the server sent to the sites) as a checkpoint file."""
    arrays = from_record(messages[0].content.array_records[P.ARRAYS])  # packed or named, checked
    sd = {k: torch.from_numpy(a.copy()) for k, a in arrays.items()}
    save_checkpoint(path, {"round": 0, "model_config": cfg.model.resolve().to_dict(), "state_dict": sd,
                           "ema_state_dict": None, "label_codes": list(LabelVocab.default().codes)})
    return path


class _TimeUp(Exception):
    """Raised between rounds once an arm has used its training minutes."""


def _make_grid(client_app, n_clients: int, on_train, node_configs: list[dict]):
    class BenchGrid(InProcessGrid):
        """The in-process grid, calling ``on_train(messages)`` before it delivers a round's train messages
        (at that point the previous round's checkpoint is on disk)."""

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            if messages and messages[0].metadata.message_type == "train":
                on_train(messages)
            return super().send_and_receive(messages, timeout=timeout)

    return BenchGrid(client_app, n_clients, node_config=lambda i: node_configs[i])


# ---- one arm ----------------------------------------------------------------------------------------------


def run_arm(name: str, scenario: Path, overrides: list[str], run_dir: Path, args, log, on_row,
            entry: dict | None = None) -> dict:
    """Run one arm's federation, evaluating between rounds; fills and returns the arm's JSON entry
    (``entry``, updated in place so a caller saving it after every row sees the progress)."""
    entry = {} if entry is None else entry
    entry.update({"overrides": overrides, "run_dir": str(run_dir), "rows": [], "status": "running"})
    t_prep = time.perf_counter()
    rd = prepare_run(scenario, overrides, run_dir, partition=True)
    cfg = rd.read_config()
    entry.update({"init": cfg.init, "dp": cfg.dp.enabled, "rounds_planned": cfg.rounds,
                  "local_steps": cfg.train.local_steps, "lr": cfg.train.lr, "model": cfg.model.preset,
                  "target_epsilon": cfg.dp.target_epsilon if cfg.dp.enabled else None,
                  "noise_multiplier": cfg.dp.noise_multiplier if cfg.dp.enabled and not cfg.dp.target_epsilon
                  else None})
    evaluate = Evaluator(rd, args.n_synthetic, args.sampler_steps, args.max_real, args.threads)
    entry["reference"] = evaluate.reference
    entry["prepare_seconds"] = time.perf_counter() - t_prep
    t_warm = time.perf_counter()
    warm_site_caches(rd)
    entry["site_data_seconds"] = time.perf_counter() - t_warm
    log(f"[{name}] {cfg.model.preset} model, init {cfg.init}, DP {'on' if cfg.dp.enabled else 'off'}, "
        f"{cfg.rounds} rounds x {cfg.train.local_steps} local steps, lr {cfg.train.lr:g}; "
        f"reference: {evaluate.reference}; run dir {rd.path}")

    clock = {"start": None, "end": None, "paused": 0.0, "last_eval": -1}

    def train_seconds() -> float:
        return (clock["end"] or time.perf_counter()) - clock["start"] - clock["paused"]

    def evaluate_round(rnd: int, checkpoint: Path) -> None:
        t_train = train_seconds()
        res = evaluate(checkpoint)
        row = {"round": rnd, "train_minutes": t_train / 60.0, **_round_metrics(rd, rnd), **res}
        entry["rows"].append(row)
        clock["last_eval"] = rnd
        m = res["metrics"]
        log(f"[{name}] round {rnd}: {row['train_minutes']:.2f} training min, beat {_f(m['beat_rate'])}, "
            f"ILC {_f(m['inter_lead_correlation_error'])}, HF {_f(m['hf_power_ratio'])}, "
            f"amp {_f(m['amplitude_ratio'])}, HR dist {_f(m['heart_rate_distance'])} bpm -> "
            f"{res['criteria_met']}/4 criteria"
            + (f", epsilon {row['epsilon']:.2f}" if row.get("epsilon") is not None else "")
            + f" (eval {res['sampling_seconds'] + res['metrics_seconds']:.1f} s, not counted)")
        on_row()

    def on_train(messages) -> None:
        t0 = time.perf_counter()
        trained = train_seconds()  # before this pause's evaluation
        try:
            done = rd.latest_round()
            if done == 0:
                with tempfile.TemporaryDirectory(dir=rd.path) as tmp:
                    evaluate_round(0, _round0_checkpoint(messages, cfg, Path(tmp) / "round-0000.pt"))
            elif done % args.eval_every == 0:
                evaluate_round(done, rd.checkpoint_path(done))
            if done > 0 and trained >= args.minutes * 60.0:
                raise _TimeUp(f"{trained / 60:.2f} training minutes >= {args.minutes:g} after round {done}")
        finally:
            clock["paused"] += time.perf_counter() - t0

    n_clients = len(Manifest.load(rd.manifest_path).clients)
    settings = ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True)
    clock["start"] = time.perf_counter()
    try:
        run_federation(_make_grid(client_app, n_clients, on_train, simulated_node_configs(rd)), settings)
        status = rd.status()
        if status.get("rounds_without_update"):
            entry["warning"] = f"no site update accepted in round(s) {status['rounds_without_update']}"
        entry["status"] = "completed"
    except _TimeUp as stop:
        entry["status"] = f"stopped: {stop}"
        rd.write_status("stopped", round=rd.latest_round(), reason=f"bench_quality time limit: {stop}")
    clock["end"] = time.perf_counter()  # the clock stops with the federation
    entry["train_minutes"] = train_seconds() / 60.0
    last = rd.latest_round()
    if last > 0 and clock["last_eval"] != last:
        evaluate_round(last, rd.checkpoint_path(last))
    entry["rounds_done"] = last
    entry["eval_minutes"] = sum(r["sampling_seconds"] + r["metrics_seconds"] for r in entry["rows"]) / 60.0
    log(f"[{name}] {entry['status']}: {last} rounds in {entry['train_minutes']:.2f} training min "
        f"(+ {entry['eval_minutes']:.2f} min of evaluation)")
    return entry


def _round_metrics(rd, rnd: int) -> dict:
    """What metrics.jsonl says about round ``rnd`` (epsilon, losses, round time)."""
    for row in reversed(rd.metrics()):
        if row.get("round") == rnd:
            s = row.get("server", {})
            return {"epsilon": s.get("max-epsilon"), "train_loss": s.get("train-loss"),
                    "val_loss": s.get("val-loss"), "round_seconds": s.get("round-seconds"),
                    "accepted": s.get("accepted")}
    return {}


# ---- report -----------------------------------------------------------------------------------------------


def machine_info(threads: int) -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model, "cores": os.cpu_count(), "usable_cores": usable,
            "torch_threads": threads if threads > 0 else torch.get_num_threads(),
            "torch_threads_default": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def plot_quality(result: dict, path: Path) -> Path:
    import matplotlib  # only to draw the plot, with the Agg backend (no display)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    colours = {"scratch-dp": "tab:red", "scratch-nodp": "tab:orange", "base-dp": "tab:blue",
               "base-nodp": "tab:cyan"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (key, title) in zip(axes.ravel(), PANELS):
        for arm, entry in result["arms"].items():
            pts = [(r["train_minutes"], r["metrics"].get(key)) for r in entry.get("rows", [])]
            pts = [(x, y) for x, y in pts if isinstance(y, (int, float)) and math.isfinite(y)]
            if pts:
                ax.plot(*zip(*pts), marker="o" if arm.endswith("-dp") else "s", markersize=4,
                        color=colours.get(arm), label=arm)
        lo, hi = CRITERIA[key]
        for bound in (lo, hi):
            if bound is not None:
                ax.axhline(bound, color="k", linestyle="--", linewidth=1, alpha=0.7)
        if key in ("hf_power_ratio", "amplitude_ratio"):  # ratios: log scale, plain tick labels
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        crit = f">= {lo:g}" if hi is None else f"<= {hi:g}" if lo is None else f"{lo:g} .. {hi:g}"
        ax.set_title(f"{title}  (criterion {crit}, dashed)", fontsize=10)
        ax.set_xlabel("federated training wall time (min)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(-0.03, 1.03)
    axes[0, 0].legend(fontsize=8)
    s = result["settings"]
    fig.suptitle(f"realism of {s['n_synthetic']} synthetic ECGs per round (DDIM {s['sampler_steps']}) vs "
                 f"training time — {result['machine']['cpu_model']}, torch threads {s['threads']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(result: dict) -> str:
    head = f"{'arm':<14}{'minutes':>9}{'round':>7}{'beat':>7}{'ILC':>8}{'HF':>8}{'amp':>8}{'eps':>7}{'met':>6}"
    lines = [head, "-" * len(head)]
    for arm, entry in result["arms"].items():
        if entry.get("error"):
            lines.append(f"{arm:<14}  failed: {entry['error']}")
        for r in entry.get("rows", []):
            m = r["metrics"]
            vals = "".join(f"{_f(m.get(k)):>8}" for k in TABLE_KEYS[1:])
            eps = _f(r.get("epsilon")) if r.get("epsilon") is not None else "-"
            lines.append(f"{arm:<14}{r['train_minutes']:>9.2f}{r['round']:>7}{_f(m.get('beat_rate')):>7}{vals}"
                         f"{eps:>7}{r['criteria_met']:>4}/4")
    lines.append("criteria: beat >= 0.9, ILC <= 0.15, HF <= 2, 0.5 <= amp <= 2; minutes = federated training "
                 "wall time (evaluation excluded); eps = max site epsilon so far")
    return "\n".join(lines)


@contextlib.contextmanager
def quiet_flower():
    """Flower's per-round INFO lines off (warnings stay), and no colour codes unless stderr is a terminal."""
    lg = logging.getLogger("flwr")
    level = lg.level
    colours = [(h, h.colored) for h in lg.handlers if hasattr(h, "colored")]
    lg.setLevel(logging.WARNING)
    for h, _ in colours:
        h.colored = bool(getattr(getattr(h, "stream", None), "isatty", lambda: False)())
    try:
        yield
    finally:
        lg.setLevel(level)
        for h, c in colours:
            h.colored = c


def _f(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


# ---- main -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS))
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall time per arm (default 8)")
    ap.add_argument("--rounds", type=int, default=6, help="planned rounds of the from-base arms (default 6)")
    ap.add_argument("--scenario", type=Path, default=None, help="default simulations/scenarios/demo.yaml")
    ap.add_argument("--base", default="builtin:dipole-small", help="init of the from-base arms (builtin:NAME "
                    "or a checkpoint file)")
    ap.add_argument("--scratch-lr", type=float, default=1e-3)
    ap.add_argument("--scratch-local-steps", type=int, default=5)
    ap.add_argument("--n-synthetic", type=int, default=32)
    ap.add_argument("--sampler-steps", type=int, default=20)
    ap.add_argument("--max-real", type=int, default=1000, help="training records in the reference set")
    ap.add_argument("--eval-every", type=int, default=1, help="evaluate every k rounds (and the last)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of each site (sites run one after another) and of sampling; 0 = the "
                         "scenario's train.threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    ap.add_argument("--overwrite", action="store_true", help="replace existing arm run directories in OUT")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="scenario override applied to every arm (repeatable)")
    ap.add_argument("--json", action="store_true", help="print quality.json to stdout (progress to stderr)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise SystemExit(f"bench_quality: unknown arm(s) {bad} (choose from {', '.join(ARMS)})")
    for flag in ("minutes", "rounds", "scratch_local_steps", "n_synthetic", "sampler_steps", "max_real",
                 "eval_every"):
        if getattr(args, flag) <= 0:
            raise SystemExit(f"bench_quality: --{flag.replace('_', '-')} must be > 0")
    scenario = (args.scenario or default_scenario()).resolve()
    base = args.base
    if not base.startswith("builtin:") and base != "none":
        base = str(Path(base).expanduser().resolve())
    stream = sys.stderr if args.json else sys.stdout

    def log(msg: str) -> None:
        print(f"{datetime.now().strftime('%H:%M:%S')} {msg}", file=stream, flush=True)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        d = out / arm
        if d.exists():
            if not args.overwrite:
                raise SystemExit(f"bench_quality: {d} exists (a previous benchmark's run): use --overwrite or "
                                 "another --out")
            if not RunLayout(d).config_path.exists() and any(d.iterdir()):
                raise SystemExit(f"bench_quality: {d} is not a run directory; not removing it")
            shutil.rmtree(d)

    plan = planned_rounds(scenario, args.overrides, args.rounds, args.scratch_local_steps)
    result = {
        "benchmark": "bench_quality", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {"scenario": str(scenario), "arms": arms, "minutes": args.minutes, "rounds": args.rounds,
                     "rounds_planned": {"base": plan["base"], "scratch": plan["scratch"]},
                     "local_steps_base": plan["local_steps"], "scratch_local_steps": args.scratch_local_steps,
                     "scratch_lr": args.scratch_lr, "base": base, "n_synthetic": args.n_synthetic,
                     "sampler": "ddim", "sampler_steps": args.sampler_steps, "weights": "ema",
                     "max_real": args.max_real, "eval_every": args.eval_every, "threads": args.threads,
                     "engine": "inprocess", "overrides": list(args.overrides),
                     "stop_rule": "first round boundary at or after --minutes of training wall time, or the "
                                  "planned rounds; evaluation time excluded"},
        "machine": machine_info(args.threads),
        "arms": {},
    }
    json_path, png_path = out / "quality.json", out / "quality.png"

    def save() -> None:
        atomic_write_json(json_path, result)

    log(f"bench_quality: arms {', '.join(arms)}; {args.minutes:g} training min or {plan['base']} (from base) / "
        f"{plan['scratch']} (from scratch) rounds per arm; {args.n_synthetic} ECGs per evaluation; "
        f"in-process engine, torch threads {args.threads}; out {out}")
    failed = False
    with torch_threads(args.threads if args.threads > 0 else None), quiet_flower():
        for arm in arms:
            rounds = plan["scratch"] if arm.startswith("scratch") else plan["base"]
            ov = arm_overrides(arm, base, args.scratch_lr, args.scratch_local_steps, rounds, args.threads,
                               args.overrides)
            entry = result["arms"][arm] = {"status": "running", "rows": []}
            try:
                run_arm(arm, scenario, ov, out / arm, args, log, save, entry)
            except Exception as exc:  # one arm failing should not lose the others
                failed = True
                entry.update({"status": "failed", "error": f"{type(exc).__name__}: {exc}", "overrides": ov})
                log(f"[{arm}] FAILED: {type(exc).__name__}: {exc}")
            result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
            save()
            plot_quality(result, png_path)
    log(f"wrote {json_path} and {png_path}")
    if args.json:
        print(json.dumps(result, indent=2, default=str), flush=True)
    else:
        print(format_table(result), flush=True)
    if failed:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
