"""Where a deployed round's time goes: the loopback deployment with the real apps, measured per round and site.

Starts (and stops) everything itself: a SuperLink and ``--sites`` SuperNodes on 127.0.0.1 with TLS and node
authentication (deploy.local.LocalDeployment, the machinery of ``fedecg deploy local``), the site folders split
by recording site from a PTB-XL-layout folder, the real fedecg ServerApp and ClientApp, a tiny DP-SGD scenario.
Then it reads what the run left:

- the ServerApp's ``metrics.jsonl`` (server/loop.py): per round the wall time, the train phase, each site's
  ``train-seconds`` (the training steps alone, client/training.py) and, if present, ``val-seconds``;
- the SuperNodes' logs, timestamped line by line by the launcher (deploy.processes): per message (train,
  evaluate) when the SuperNode received it, when its fresh ``flwr-clientapp`` process logged its first line,
  when the reply was sent;
- a cold-start probe per site afterwards (a fresh Python process, as Flower starts one per message): how long
  the interpreter + Flower import, the fedecg ClientApp import, torch/Opacus import, the site's data load, the
  model build, one training call and one evaluation take.

    python bench/bench_deploy.py --sites 3 --rounds 3 --preset tiny --json [--dataset DIR] [--polls flower]
        [--no-worker] [--evaluate separate]

Defaults are the deployment defaults: resident site workers (deploy.worker) and one message per round
(``strategy.evaluate: with-train``); ``--no-worker --evaluate separate`` is the configuration before them.

The last line printed with ``--json`` is one JSON object: ``round_s`` (median wall time per round),
``compute_s`` (median over rounds of the slowest site's train + evaluate compute), ``overhead_s``
(= round_s - compute_s), ``rounds`` (per round and site: segments in seconds) and ``cold_start`` (per site).
The same object goes to ``--out/<name>.json``, and a stacked bar plot of the segments to ``--out/<name>.png``.

Segments of one message at one site (from the SuperNode's log):
  ``pull``     SuperNode received the message → its objects (the global model) were pulled
  ``launch``   → the new flwr-clientapp process logged its first line: SuperExec's task poll, process start,
               Python + Flower import
  ``app``      → the reply was handed back: FAB install, fedecg + torch imports, data load, model build, the
               compute itself, pushing the reply to the SuperNode (+ its 0.5 s reply poll)
  ``push``     → the SuperNode sent the reply to the SuperLink
Per round and site, ``compute`` = train-seconds + evaluation seconds, ``startup`` = the two messages'
``launch`` + ``app`` minus compute, ``transfer`` = pulls + pushes, and ``waiting`` = the round's wall time minus
all of these: the polls (the ServerApp pulls replies every 0.5 s, an idle SuperNode pulls every 3 s by default),
the server's aggregation, checkpointing, and waiting for slower sites.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script (or imported from bench/ as a top-level module)
    sys.path.insert(0, str(ROOT))

from deploy.local import FLOWER_DEFAULT_POLLS, TUNED_POLLS, LocalDeployment  # noqa: E402
from deploy.provision import ConsortiumSpec, provision_consortium  # noqa: E402
from deploy.runstatus import read_status_file  # noqa: E402
from deploy.sites import split_sites  # noqa: E402
from fedecg.errors import FedECGError  # noqa: E402
from server.rundir import RunDir  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) (.*)$")
ROUND_RE = re.compile(r"\[RUN (\d+), ROUND (\d+)\]")
RECV_RE = re.compile(r"Receiving: (\w+) message")
SEND_RE = re.compile(r"Sending: (\w+) message")


# ---- scenario and sites --------------------------------------------------------------------------------------


def write_scenario(path: Path, dataset: Path, *, rounds: int, preset: str, min_records: int, n_sites: int,
                   local_steps: int, batch_size: int, round_timeout: float, evaluate: str = "with-train") -> Path:
    """The bench scenario: partition by site (sites below ``min_records`` dropped: exactly the sites started),
    DP-SGD with a fixed sigma, one thread per site, no synthesis at the end."""
    path.write_text(yaml.safe_dump({
        "name": "bench-deploy", "dataset": str(dataset), "rounds": rounds, "seed": 0,
        "partition": {"by": "site", "min_records": min_records, "tail": "drop"},
        "model": {"preset": preset},
        "train": {"local_steps": local_steps, "batch_size": batch_size, "lr": 0.001, "threads": 1},
        "dp": {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0},
        "strategy": {"name": "fedavg", "min_train_nodes": n_sites, "min_available_nodes": n_sites,
                     "min_replies": n_sites, "round_timeout_s": round_timeout, "evaluate": evaluate},
        "output": {"synthesize": 0}}, sort_keys=False))
    return path


def choose_sites(dataset: Path, out: Path, n_sites: int) -> tuple[dict[str, Path], int]:
    """Split ``dataset`` by recording site; the ``n_sites`` largest sites and the ``min_records`` that keeps
    exactly them in the server's partition."""
    folders = sorted(split_sites(dataset, out), key=lambda f: (-f.n_records, f.client_id))
    if len(folders) < n_sites:
        raise FedECGError(f"{dataset} has {len(folders)} recording sites, fewer than --sites {n_sites}")
    chosen = folders[:n_sites]
    min_records = chosen[-1].n_records
    if len(folders) > n_sites and folders[n_sites].n_records >= min_records:
        raise FedECGError(f"sites {chosen[-1].client_id} and {folders[n_sites].client_id} have the same size: "
                          "cannot choose exactly --sites of them by size")
    return {f.client_id: f.path for f in sorted(chosen, key=lambda f: f.client_id)}, min_records


# ---- logs ------------------------------------------------------------------------------------------------------


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def parse_supernode_log(text: str, run_id: int | None = None) -> list[dict]:
    """Messages a SuperNode handled, from its timestamped log: ``{"round", "type", "recv", "received",
    "launched", "sending", "sent"}`` (epoch seconds; a missing event is None)."""
    messages: list[dict] = []
    current_round: int | None = None
    current_run: int | None = None
    open_msg: dict | None = None
    for raw in text.splitlines():
        m = STAMPED.match(ANSI.sub("", raw))
        if not m:
            continue
        t, line = _ts(m.group(1)), m.group(2)
        if r := ROUND_RE.search(line):
            current_run, current_round = int(r.group(1)), int(r.group(2))
            continue
        if run_id is not None and current_run is not None and current_run != run_id:
            continue
        if r := RECV_RE.search(line):
            open_msg = {"round": current_round, "type": r.group(1), "recv": t, "received": None,
                        "launched": None, "sending": None, "sent": None}
            messages.append(open_msg)
        elif open_msg is None:
            continue
        elif "Received successfully" in line and open_msg["received"] is None:
            open_msg["received"] = t
        elif "Start `flwr-clientapp` process" in line and open_msg["launched"] is None:
            open_msg["launched"] = t
        elif (r := SEND_RE.search(line)) and open_msg["sending"] is None:
            open_msg["sending"] = t
        elif "Sent successfully" in line and open_msg["sending"] is not None and open_msg["sent"] is None:
            open_msg["sent"] = t
            open_msg = None
    return messages


WORKER_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO fedecg\.worker: run \d+ (train|evaluate) .* in "
                       r"([0-9.]+) s$")


def parse_worker_log(text: str) -> list[dict]:
    """What a resident worker served, from its log: ``{"type", "done" (epoch s), "seconds"}``."""
    out = []
    for line in text.splitlines():
        m = WORKER_RE.match(line.strip())
        if m:
            done = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
            out.append({"type": m.group(3), "done": done, "seconds": float(m.group(4))})
    return out


def message_segments(msg: dict) -> dict[str, float]:
    """pull / launch / app / push seconds of one message (0 where an event is missing)."""
    def gap(a: str, b: str) -> float:
        return max(0.0, msg[b] - msg[a]) if msg.get(a) is not None and msg.get(b) is not None else 0.0

    launched_from = "received" if msg.get("received") is not None else "recv"
    if msg.get("received") is not None and msg.get("launched") is not None and msg["launched"] < msg["received"]:
        launched_from = "recv"  # the process started while the objects were still arriving
    return {"pull": gap("recv", "received") if launched_from == "received" else 0.0,
            "launch": gap(launched_from, "launched"),
            "app": gap("launched", "sending"), "push": gap("sending", "sent")}


# ---- cold-start probe -------------------------------------------------------------------------------------------

PROBE = r'''
import json, os, sys, time
t_start = float(os.environ["BENCH_T0"])
t = {"python_start": time.time() - t_start}
def lap(name, t0):
    t[name] = time.time() - t0
    return time.time()
t0 = time.time()
import flwr.app, flwr.clientapp  # what flwr-clientapp imports before it logs its first line
t0 = lap("import_flwr", t0)
import client.app  # the ClientApp module Flower loads
t0 = lap("import_client_app", t0)
import torch  # noqa: F401
from client.data import load_site_data
from client.training import initial_weights_for_test, train_local, validate_local
from sssd.checkpoint import build_model
t0 = lap("import_torch_training", t0)
from fedecg import protocol as P
from fedecg.config import ScenarioConfig, load_scenario
cfg = load_scenario(sys.argv[2])
site_cfg = ScenarioConfig.from_json(cfg.to_json(), "probe").validate(check_files=False)
torch.set_num_threads(1)
t0 = time.time()
site = load_site_data({"data-dir": sys.argv[1], "site-name": "probe"}, {P.RUN_CONFIG_JSON: site_cfg.to_json()})
t0 = lap("data_load", t0)
weights = initial_weights_for_test(site_cfg)
t0 = time.time()
build_model(site_cfg.model.resolve(), weights, torch.device("cpu"))
t0 = lap("model_build", t0)
r = train_local(weights, site.train, site_cfg, server_round=1, site="probe", device=torch.device("cpu"),
                noise_multiplier=1.0, patient_ids=site.train_patients)
t0 = lap("train_call", t0)
t["train_seconds_metric"] = r.metrics.get("train-seconds", 0.0)
if site.val is not None and len(site.val.ecg_ids):
    validate_local(weights, site.val, site_cfg, site="probe", device=torch.device("cpu"))
    t0 = lap("eval_call_cold", t0)
    validate_local(weights, site.val, site_cfg, site="probe", device=torch.device("cpu"))
    t0 = lap("eval_call", t0)
print("PROBE " + json.dumps(t))
'''


def cold_start_probe(site_dir: Path, scenario: Path, env: dict) -> dict:
    """Phases of one fresh process doing what a ClientApp process does (after the deployment, so the site's
    data cache exists, as it does from round 2 on)."""
    penv = {**env, "BENCH_T0": repr(time.time()), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", PROBE, str(site_dir), str(scenario)], capture_output=True,
                         text=True, env=penv, cwd=ROOT, timeout=900)
    for line in res.stdout.splitlines():
        if line.startswith("PROBE "):
            return {k: round(float(v), 3) for k, v in json.loads(line[6:]).items()}
    return {"error": (res.stdout + res.stderr).strip()[-500:]}


# ---- analysis ------------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def analyse(metrics: list[dict], site_logs: dict[str, str], probes: dict[str, dict], run_id: int | None,
            worker_logs: dict[str, str] | None = None) -> dict:
    """Per-round, per-site breakdown and the headline numbers (see the module docstring). The evaluation
    compute is the reply's ``val-seconds`` if the ClientApp sends it, else what a resident worker logged for
    that round's evaluate, else the cold-start probe's warm evaluation call."""
    by_site = {site: parse_supernode_log(text, run_id) for site, text in site_logs.items()}
    served = {site: parse_worker_log(text) for site, text in (worker_logs or {}).items()}
    rounds = []
    prev_time = None
    for row in metrics:
        rnd = int(row["round"])
        server = row.get("server", {})
        wall = (row["time"] - prev_time) if prev_time is not None else float(server.get("round-seconds", 0.0))
        prev_time = row["time"]
        sites = {}
        for site, msgs in by_site.items():
            m = row.get("sites", {}).get(site, {})
            train_s = float(m.get("train-seconds", 0.0))
            start = row["time"] - float(server.get("round-seconds", wall))
            probe_eval = float(probes.get(site, {}).get("eval_call", 0.0))
            worker_eval = [w["seconds"] for w in served.get(site, [])
                           if w["type"] == "evaluate" and start - 1.0 <= w["done"] <= row["time"]]
            eval_s = float(m["val-seconds"]) if "val-seconds" in m else (worker_eval[-1] if worker_eval else probe_eval)
            seg = {"pull": 0.0, "launch": 0.0, "app": 0.0, "push": 0.0}
            per_type = {}
            for msg in msgs:
                # the fedecg ServerApp sets no group id, so a message belongs to the round whose window
                # (train sent .. metrics written) holds its arrival
                in_window = start - 1.0 <= msg["recv"] <= row["time"]
                in_round = msg["round"] == rnd if msg["round"] is not None else in_window
                if not in_round:
                    continue
                s = message_segments(msg)
                per_type[msg["type"]] = {k: round(v, 3) for k, v in s.items()}
                for k, v in s.items():
                    seg[k] += v
            compute = train_s + eval_s
            startup = max(0.0, seg["launch"] + seg["app"] - compute)
            transfer = seg["pull"] + seg["push"]
            sites[site] = {"compute": round(compute, 3), "train": round(train_s, 3), "evaluate": round(eval_s, 3),
                           "startup": round(startup, 3), "transfer": round(transfer, 3),
                           "launch": round(seg["launch"], 3), "app": round(seg["app"], 3),
                           "waiting": round(max(0.0, wall - compute - startup - transfer), 3),
                           "messages": per_type, "status": m.get("status")}
        slowest = max((s["compute"] for s in sites.values()), default=0.0)
        rounds.append({"round": rnd, "wall_s": round(wall, 3),
                       "server_round_s": round(float(server.get("round-seconds", 0.0)), 3),
                       "server_train_phase_s": round(float(server.get("train-phase-seconds", 0.0)), 3),
                       "compute_s": round(slowest, 3), "overhead_s": round(wall - slowest, 3), "sites": sites})
    round_s = _median([r["wall_s"] for r in rounds])
    compute_s = _median([r["compute_s"] for r in rounds])
    return {"round_s": round(round_s, 3), "compute_s": round(compute_s, 3), "overhead_s": round(round_s - compute_s, 3),
            "rounds": rounds}


def plot(result: dict, path: Path) -> None:
    """Stacked bars, one per round and site: compute, startup, transfer, waiting."""
    import matplotlib  # only to draw the plot, with the Agg backend (no display)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [("compute", "#2a9d8f"), ("startup", "#e76f51"), ("transfer", "#8d99ae"), ("waiting", "#f4a261")]
    labels, stacks = [], {p: [] for p, _ in parts}
    for r in result["rounds"]:
        for site, s in sorted(r["sites"].items()):
            labels.append(f"r{r['round']}\n{site}")
            for p, _ in parts:
                stacks[p].append(s[p])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2), 4.2))
    bottom = [0.0] * len(labels)
    for p, colour in parts:
        ax.bar(range(len(labels)), stacks[p], bottom=bottom, color=colour, label=p)
        bottom = [b + v for b, v in zip(bottom, stacks[p])]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("seconds")
    cfg = result["config"]
    ax.set_title(f"deployed round, {cfg['sites']} sites, {cfg['preset']}, polls {cfg['polls']}"
                 f"{', resident workers' if cfg.get('worker') else ''}"
                 f"{', 0.5 s server poll' if cfg.get('server_poll') else ''}"
                 f"{', evaluate with train' if cfg.get('evaluate') == 'with-train' else ''}:\n"
                 f"round {result['round_s']:.1f} s, compute {result['compute_s']:.1f} s, "
                 f"overhead {result['overhead_s']:.1f} s", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main -------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    dataset = Path(args.dataset or os.environ.get("PTBXL_DIR", "")).expanduser()
    if not str(args.dataset or os.environ.get("PTBXL_DIR", "")) or not (dataset / "ptbxl_database.csv").is_file():
        raise FedECGError("name a PTB-XL-layout folder with --dataset DIR or $PTBXL_DIR")
    dataset = dataset.resolve()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    folders, min_records = choose_sites(dataset, work / "sites", args.sites)
    scenario = write_scenario(work / "scenario.yaml", dataset, rounds=args.rounds, preset=args.preset,
                              min_records=min_records, n_sites=args.sites, local_steps=args.local_steps,
                              batch_size=args.batch_size, round_timeout=args.round_timeout,
                              evaluate=args.evaluate)
    cons = provision_consortium(work / "consortium", ConsortiumSpec(sites=tuple(folders),
                                                                    superlink_host="127.0.0.1"))
    polls = dict(FLOWER_DEFAULT_POLLS if args.polls == "flower" else TUNED_POLLS)
    if args.superexec_poll is not None:
        polls["superexec_task_poll_s"] = args.superexec_poll
    if args.supernode_poll is not None:
        polls["supernode_idle_poll_s"] = args.supernode_poll
    env = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    run_dir = work / "run"
    t0 = time.time()
    with LocalDeployment(cons, work / "deploy", folders, env=env, polls=polls, timestamps=True,
                         database=args.superlink_db, workers=args.worker) as dep:
        dep.start()
        t_started = time.time()
        run_config = {"scenario": str(scenario), "run-dir": str(run_dir)}
        if _declares_mode():
            run_config["mode"] = "deployment"
        run_id = dep.submit_run(ROOT, run_config)
        result = dep.wait_for_run(run_id, timeout=args.timeout, poll=5.0)
        t_done = time.time()
        site_logs = {s: dep.procs[f"supernode-{s}"].log_text() for s in folders}
        worker_health = {s: dep.worker_health(s) for s in folders} if args.worker else {}
        superlink_log = dep.procs["superlink"].log_text()
    status = read_status_file(run_dir)
    metrics = RunDir(run_dir).metrics()  # one row per round (with-train evaluations merged in)
    probes = {}
    if not args.no_probe:
        probe_env = {**os.environ, **env}
        probes = {s: cold_start_probe(p, scenario, probe_env) for s, p in folders.items()}
    worker_logs = {s: p.read_text() for s in folders
                   if (p := work / "deploy" / "logs" / f"worker-{s}.log").is_file()}
    out = analyse(metrics, site_logs, probes, run_id, worker_logs)
    out.update({
        "ok": result.ok and status.get("status") == "completed" and len(metrics) == args.rounds,
        "flower_status": result.status, "run_dir_status": status.get("status"),
        "config": {"sites": args.sites, "site_names": sorted(folders), "rounds": args.rounds, "preset": args.preset,
                   "local_steps": args.local_steps, "batch_size": args.batch_size, "polls": args.polls, **polls,
                   # the ServerApp always pulls replies every 0.5 s (server/loop.py REPLY_POLL_S)
                   "superlink_db": args.superlink_db, "worker": args.worker, "server_poll": True,
                   "evaluate": args.evaluate,
                   "label": args.label},
        "startup_s": round(t_started - t0, 1), "run_s": round(t_done - t_started, 1),
        "cold_start": probes, "workers": worker_health,
        "superlink_db_locked": superlink_log.count("database is locked"),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "python": sys.version.split()[0]},
        "work_dir": str(work),
    })
    return out


def reanalyse(path: Path) -> dict:
    """An earlier result with its per-round breakdown recomputed from the logs and metrics in its work folder."""
    result = json.loads(path.read_text())
    work = Path(result["work_dir"])
    metrics = RunDir(work / "run").metrics()
    logs = {s: (work / "deploy" / "logs" / f"supernode-{s}.log").read_text() for s in result["config"]["site_names"]}
    workers = {s: p.read_text() for s in result["config"]["site_names"]
               if (p := work / "deploy" / "logs" / f"worker-{s}.log").is_file()}
    result.update(analyse(metrics, logs, result.get("cold_start", {}), None, workers))
    return result


def _declares_mode() -> bool:
    keys = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("flwr", {}).get("app", {})
    return "mode" in keys.get("config", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--dataset", default=None, help="PTB-XL-layout folder (default $PTBXL_DIR)")
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--polls", choices=("tuned", "flower"), default="tuned",
                        help="Flower's poll intervals: tuned (deploy.local.TUNED_POLLS) or Flower's defaults")
    parser.add_argument("--superexec-poll", type=float, default=None, help="override the SuperExec task poll (s)")
    parser.add_argument("--supernode-poll", type=float, default=None, help="override the SuperNode idle poll (s)")
    parser.add_argument("--superlink-db", choices=("memory", "file"), default="memory",
                        help="SuperLink state: in memory (default here) or an SQLite file as in production; "
                             "on a saturated machine the file failed pushes with 'database is locked'")
    parser.add_argument("--round-timeout", type=float, default=300.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the run")
    parser.add_argument("--worker", action=argparse.BooleanOptionalAction, default=True,
                        help="resident site workers (deploy.worker, the deployment default): the ClientApp forwards "
                             "train/evaluate to them; --no-worker: a fresh ClientApp process does all the work")
    parser.add_argument("--evaluate", choices=("with-train", "separate"), default="with-train",
                        help="strategy.evaluate: one message per round (with-train, the deployment default) or an "
                             "evaluate message after every round's aggregation (separate)")
    parser.add_argument("--server-poll", action="store_true",
                        help="no effect, accepted for old command lines: the ServerApp always pulls replies every "
                             "0.5 s instead of Flower's 3 s (server/loop.py)")
    parser.add_argument("--no-probe", action="store_true", help="skip the per-site cold-start probe")
    parser.add_argument("--work", default=None, help="working folder (default: a new temporary folder)")
    parser.add_argument("--out", default=None, help="folder for <name>.json and <name>.png (default: --work)")
    parser.add_argument("--name", default="bench-deploy")
    parser.add_argument("--label", default="")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    parser.add_argument("--reanalyse", default=None, metavar="JSON",
                        help="recompute the breakdown of an earlier result from its work folder's logs")
    args = parser.parse_args(argv)
    if args.reanalyse:
        result = reanalyse(Path(args.reanalyse))
        out_dir, args.name = Path(args.reanalyse).parent, Path(args.reanalyse).stem
    else:
        def _term(signum, frame):  # noqa: ANN001 - SIGTERM stops every process the bench started, like Ctrl-C
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _term)
        result = run(args)
        out_dir = Path(args.out) if args.out else Path(result["work_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    if result["rounds"]:
        plot(result, out_dir / f"{args.name}.png")
    for r in result["rounds"]:
        cells = "  ".join(f"{s}: compute {v['compute']:.1f} startup {v['startup']:.1f} transfer {v['transfer']:.1f} "
                          f"wait {v['waiting']:.1f}" for s, v in sorted(r["sites"].items()))
        print(f"round {r['round']}: wall {r['wall_s']:.1f} s, slowest compute {r['compute_s']:.1f} s | {cells}")
    for s, p in result["cold_start"].items():
        print(f"cold start {s}: " + ", ".join(f"{k} {v}" for k, v in p.items()))
    print(f"round_s {result['round_s']:.1f}  compute_s {result['compute_s']:.1f}  overhead_s {result['overhead_s']:.1f}"
          f"  ok {result['ok']} ({result['flower_status']}, run dir {result['run_dir_status']})")
    if args.json:
        print(json.dumps({k: v for k, v in result.items()}, separators=(",", ":")))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
