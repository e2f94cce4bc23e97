"""The federated round loop run by the ServerApp.

Per round: configure (Flower strategy: node sampling, FedProx mu) → send the global weights and the run config →
validate every reply (server.validation) → aggregate the accepted ones with the strategy, in a fixed site order →
federated evaluation (validation loss at the sites) → append metrics, update the privacy ledger, write the
checkpoint atomically. A round with fewer than ``strategy.min_replies`` accepted replies keeps the previous model.
Starting from an existing run directory continues after its last checkpointed round (``--resume``); with the same
seed the result equals an uninterrupted run.

Round 1 starts from the scenario's ``init`` base (sssd.pretrained; recorded in RUN_DIR/base.json) or, with
``init: none``, from a seeded fresh initialisation. After every round's aggregation the server updates an EMA of
the global model (server.ema, ``strategy.ema_decay``; 0 = off), saved as ``ema_state_dict`` in every checkpoint
and restored on resume. A resumed run never re-reads the base: it continues from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord
from tqdm import tqdm

from fedecg import protocol as P
from fedecg.config import ScenarioConfig
from fedecg.errors import FedECGError
from fedecg.io import append_jsonl
from fedecg.wire import to_record
from privacy.ledger import PrivacyLedger, SiteLedger, ledger_from_dict, save_ledger
from ptbxl import demographics
from ptbxl.labels import LabelVocab
from server.admit import VAL_KEYS, admit_replies, update_ledger
from server.ema import update_ema
from server.robust import aggregation_replies, parse_robust
from server.rundir import RunDir, check_resume_config
from server.strategies import build_strategy, restore_strategy_state, strategy_state
from server.validation import (
    ExampleCounts,
    attribute_replies,
    reported_metrics,
    site_of,
    site_problems,
)
from sssd.checkpoint import build_model
from sssd.pretrained import file_sha256, load_base

log = logging.getLogger(__name__)


REPLY_POLL_S = 0.5  # Flower 1.41's deployment Grid (HttpGrid.send_and_receive) sleeps 3 s between reply pulls


def send_and_receive(grid, messages, timeout: float | None):  # noqa: ANN001, ANN201 - flwr Grid, Messages
    """Grid.send_and_receive, with replies pulled every REPLY_POLL_S s on the deployment Grid (Flower's own
    loop waits 3 s between pulls, on average 1.5 s per phase lost); other Grids keep their own loop."""
    # local: heavy (~0.9 s, pulls the SuperLink's fastapi/sqlalchemy); only the deployment Grid is an HttpGrid
    from flwr.superlink.grid.http_grid import HttpGrid

    if not isinstance(grid, HttpGrid):
        return grid.send_and_receive(messages, timeout=timeout)
    pending = set(grid.push_messages(messages))
    end = time.time() + (timeout if timeout is not None else 0.0)
    replies = []
    while pending and (timeout is None or time.time() < end):
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if pending:
            time.sleep(REPLY_POLL_S)
    return replies


@dataclass(frozen=True)
class ServerSettings:
    run_dir: str
    run_name: str
    simulation: bool  # send manifest path / node-state root to simulated nodes
    show_progress: bool = False


def initial_state(cfg: ScenarioConfig, base=None) -> dict[str, np.ndarray]:
    """The round-1 global weights: the ``init`` base's weights (``base``: an already loaded
    sssd.pretrained.Base, else it is loaded and checked against the scenario's model), or with ``init: none``
    freshly initialised denoiser weights, deterministic in the run config (global RNG untouched)."""
    if cfg.init != "none":
        if base is None:
            base = load_base(cfg.init, cfg.model.resolve())
        return {k: np.array(v, copy=True) for k, v in base.state.items()}
    model = build_model(cfg.model.resolve())  # model.init_seed is derived from the root seed (fedecg.seeds)
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def run_federation(grid, settings: ServerSettings) -> dict[str, np.ndarray]:
    """Run (or continue) the rounds of a prepared run directory. Returns the final global weights."""
    rd = RunDir(settings.run_dir)
    cfg = rd.read_config()
    ckpt = rd.load_latest()
    try:
        if ckpt is not None:
            check_resume_config(rd, cfg, ckpt)  # config.yaml must be the checkpoint's run_config
            start = int(ckpt["round"])
            weights = {k: v.detach().cpu().numpy() for k, v in ckpt["state_dict"].items()}
            ledger = _resumed_ledger(cfg, ckpt, rd)
            base_info = check_base_unchanged(rd, cfg, ckpt.get("base"))
            ema = _resumed_ema(cfg, ckpt, weights)
            rd.truncate_metrics(start)
            log.info("resuming %s after round %d of %d", rd.path, start, cfg.rounds)
        else:
            base = start_base(rd, cfg)
            start, weights, ledger = 0, initial_state(cfg, base), _new_ledger(cfg)
            base_info = {"init": cfg.init, "sha256": base.sha256 if base is not None else None}
            ema = _copy(weights) if cfg.strategy.ema_decay > 0 else None
    except FedECGError as exc:
        rd.write_status("failed", round=rd.latest_round(), error=f"{type(exc).__name__}: {exc}")
        raise
    n_expected = _expected_sites(rd)
    strategy = build_strategy(cfg, num_sampled=n_expected or cfg.strategy.min_train_nodes,
                              max_nodes=n_expected or None)
    if ckpt is not None:
        restore_strategy_state(strategy, ckpt.get("strategy_state", {}))
    rule = parse_robust(cfg.strategy.robust)
    counts = ExampleCounts(cfg.strategy.max_examples, _registered_counts(rd), (ckpt or {}).get("example_counts"))
    stale = rd.remove_stale_temporaries()
    if stale:
        log.info("removed %d temporary file(s) an interrupted run left in %s", len(stale), rd.path)
    rd.write_status("running", round=start)

    # the sites get the config without the server's base path: the base reaches them as round 1's weights,
    # and a path on the server means nothing (and would not validate) at a hospital
    site_cfg = dataclasses.replace(cfg, init="none")
    if cfg.site_policy:  # simulation only, it becomes the simulated nodes' own node config; no site reads it here
        site_cfg = dataclasses.replace(site_cfg, site_policy={})
    base_config = {P.RUN_CONFIG_JSON: site_cfg.to_json(), P.RUN_NAME: settings.run_name}
    if settings.simulation:
        base_config[P.MANIFEST_PATH] = str(rd.manifest_path.resolve())
        base_config[P.SIM_STATE_ROOT] = str(rd.node_state_dir.resolve())

    fused = cfg.strategy.evaluate == "with-train"  # one message per round (the last round also evaluates)
    progress = _progress(settings.show_progress, cfg.rounds, start)
    board = _tensorboard(rd)
    empty_rounds: list[int] = []
    node_names: dict[int, str] = {}  # node id → the site name it reported
    try:
        for rnd in range(start + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            random.seed(json.dumps([cfg.seed, rnd]))  # Flower samples nodes with `random`: make it reproducible
            arrays = ArrayRecord(array_dict={k: Array(v) for k, v in weights.items()})  # the strategy's view
            round_config = dict(base_config)
            if fused and rnd > 1:  # the sites score the model they receive (round rnd - 1's), then train
                round_config[P.EVALUATE_FIRST] = True
            train_msgs = _packed(strategy.configure_train(rnd, arrays, ConfigRecord(round_config), grid), weights)
            replies = list(send_and_receive(grid, train_msgs, timeout=cfg.strategy.round_timeout_s))
            t_train = time.perf_counter() - t0
            sent_to = {m.metadata.message_id: m.metadata.dst_node_id for m in train_msgs if m.metadata.message_id}
            sites, problems = attribute_replies(replies, node_names, sent_to)
            if fused and rnd > 1:
                evaluation = _evaluation_line(rnd - 1, replies, sites)
                append_jsonl(rd.metrics_path, evaluation)
                log.info("round %d (scored at the start of round %d): val-loss %s", rnd - 1, rnd,
                         _fmt(evaluation["evaluation"]["server"]["val-loss"]))
                if board is not None:
                    _to_tensorboard(board, {"round": rnd - 1, **evaluation["evaluation"]})
            admitted = admit_replies(replies, sites, problems, weights, cfg, counts, rnd)
            accepted, verdicts = admitted.accepted, admitted.verdicts
            if len(accepted) >= cfg.strategy.min_replies:
                agg, _ = strategy.aggregate_train(rnd, aggregation_replies(rule, accepted, weights))
                if agg is not None:
                    weights = {k: np.asarray(a.numpy(), dtype=weights[k].dtype) for k, a in agg.items()}
            else:
                empty_rounds.append(rnd)
                log.error("round %d: only %d accepted replies (< min_replies %d): model unchanged",
                          rnd, len(accepted), cfg.strategy.min_replies)
            if ema is not None:  # every round, after aggregation (an unchanged model pulls the EMA towards it)
                ema = update_ema(ema, weights, cfg.strategy.ema_decay, rnd)
            site_metrics = admitted.site_metrics
            ledger = update_ledger(ledger, rnd, site_metrics, n_expected or len(site_metrics),
                                   cfg.strategy.client_dp_noise)

            arrays = ArrayRecord(array_dict={k: Array(v) for k, v in weights.items()})
            eval_msgs = _packed(strategy.configure_evaluate(rnd, arrays, ConfigRecord(dict(base_config)), grid),
                                weights) if not fused or rnd == cfg.rounds else []
            eval_replies = list(send_and_receive(grid, eval_msgs, timeout=cfg.strategy.round_timeout_s)) \
                if eval_msgs else []
            _merge_eval_metrics(site_metrics, eval_replies, node_names)
            row = {"round": rnd, "time": time.time(), "sites": site_metrics,
                   "server": _server_summary(site_metrics, verdicts, time.perf_counter() - t0, t_train)}
            payload = _checkpoint_payload(cfg, rnd, weights, strategy, ledger, rd, settings, ema, base_info)
            payload["example_counts"] = dict(counts.first_seen)  # deployment: the sites' first counts
            append_jsonl(rd.metrics_path, row)
            save_ledger(rd.ledger_path, ledger)
            rd.save_checkpoint(rnd, payload, keep=cfg.output.keep_checkpoints)
            rd.write_status("running", round=rnd)
            _log_round(rnd, cfg.rounds, row)
            if board is not None:
                _to_tensorboard(board, row)
            if progress is not None:
                progress.update(1)
    except BaseException as exc:
        rd.write_status("failed", round=rd.latest_round(), error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if progress is not None:
            progress.close()
        if board is not None:
            board.close()
    rd.write_status("completed", round=cfg.rounds, rounds_without_update=empty_rounds, **site_problems(rd.metrics()))
    return weights


def _packed(messages, weights: dict[str, np.ndarray]) -> list:
    """The strategy's messages with the model in its packed wire form (fedecg.wire: a few Arrays instead of one
    per parameter; the strategy itself keeps the named ArrayRecord it was given, FedOpt and client-level DP
    remember it)."""
    messages = list(messages)
    if messages:
        packed = to_record(weights)
        for m in messages:
            if P.ARRAYS in m.content.array_records:
                m.content[P.ARRAYS] = packed
    return messages


# ---- base and EMA -----------------------------------------------------------------------------------------


def start_base(rd: RunDir, cfg: ScenarioConfig):
    """A new run's base (sssd.pretrained.Base, checked against the scenario's model), or None for
    ``init: none``. Writes RUN_DIR/base.json unless prepare_run already did; if it did, the base file must
    still be the one it recorded."""
    if cfg.init == "none":
        return None
    base = load_base(cfg.init, cfg.model.resolve())
    recorded = rd.read_base()
    if recorded is None:
        rd.write_base(base.record(cfg.init))
    elif recorded.get("sha256") != base.sha256:
        raise FedECGError(_changed(rd, recorded, base.sha256))
    return base


def check_base_unchanged(rd: RunDir, cfg: ScenarioConfig, ckpt_base: dict | None) -> dict:
    """On resume: if RUN_DIR/base.json exists, its base file must still hash to the recorded SHA-256
    (FedECGError otherwise); a vanished file only gets a warning, resuming needs the checkpoint alone.
    Returns the ``base`` entry for the next checkpoints."""
    recorded = rd.read_base()
    if recorded is not None:
        path = Path(str(recorded.get("path", "")))
        if not path.is_file():
            log.warning("base %s (%s) recorded in %s is gone; resuming from the checkpoint, which does not "
                        "need it", recorded.get("init"), path, rd.base_path)
        elif (sha := file_sha256(path)) != recorded.get("sha256"):
            raise FedECGError(_changed(rd, recorded, sha))
    if isinstance(ckpt_base, dict):
        return {"init": ckpt_base.get("init"), "sha256": ckpt_base.get("sha256")}
    if recorded is not None:
        return {"init": recorded.get("init"), "sha256": recorded.get("sha256")}
    return {"init": cfg.init, "sha256": None}


def _changed(rd: RunDir, recorded: dict, sha: str) -> str:
    return (f"base {recorded.get('init')} ({recorded.get('path')}) changed since this run started: sha256 "
            f"{str(recorded.get('sha256'))[:16]}... in {rd.base_path}, now {sha[:16]}...; put the original file "
            "back (or remove it: resuming needs only the checkpoint), or start a new run directory")


def _resumed_ema(cfg: ScenarioConfig, ckpt: dict, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    if cfg.strategy.ema_decay <= 0:
        return None
    sd = ckpt.get("ema_state_dict")
    if sd is None:  # a run directory written before the server kept an EMA
        log.warning("checkpoint of round %s has no EMA: the EMA restarts from its global weights", ckpt["round"])
        return _copy(weights)
    return {k: v.detach().cpu().numpy().copy() for k, v in sd.items()}


def _copy(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in weights.items()}


# ---- helpers -------------------------------------------------------------------------------------------


def _registered_counts(rd: RunDir) -> dict[str, int] | None:
    """Simulation: each client's train record count from the manifest (the most it may claim); else None."""
    if not rd.manifest_path.exists():
        return None
    clients = json.loads(rd.manifest_path.read_text()).get("clients", [])
    return {str(c["client_id"]): len(c.get("train", [])) for c in clients}


def _expected_sites(rd: RunDir) -> int:
    if rd.manifest_path.exists():
        return len(json.loads(rd.manifest_path.read_text()).get("clients", []))
    return 0


def _new_ledger(cfg: ScenarioConfig) -> PrivacyLedger:
    client_level = None
    if cfg.strategy.client_dp:  # user-level DP over sites (Flower's server-side fixed clipping)
        client_level = SiteLedger(site="client_level", delta=0.0, history=(), n_records=0,
                                  max_grad_norm=cfg.strategy.client_dp_clip, accountant=cfg.dp.accountant,
                                  unit="client")
    return PrivacyLedger(delta_policy="per site: dp.delta, or 1/n_site_train when 0", accountant=cfg.dp.accountant,
                         client_level=client_level)


def _resumed_ledger(cfg: ScenarioConfig, ckpt: dict, rd: RunDir) -> PrivacyLedger:
    """The run's ledger as the checkpoint holds it (validated; older checkpoints hold the same JSON form)."""
    saved = ckpt.get("privacy_ledger")
    if not saved:
        return _new_ledger(cfg)
    ledger = ledger_from_dict(saved, f"{rd.checkpoint_path(int(ckpt['round']))}: privacy_ledger")
    return ledger if ledger.accountant is not None else dataclasses.replace(ledger, accountant=cfg.dp.accountant)





def _merge_eval_metrics(site_metrics: dict[str, dict], eval_replies, node_names: dict[int, str]) -> None:
    for msg in eval_replies:
        metrics = reported_metrics(msg)  # {} for error or malformed replies
        if not metrics:
            continue
        site = site_of(msg, node_names)
        dest = site_metrics.setdefault(site, {"status": "evaluated-only"})
        for k in VAL_KEYS[:3]:
            if k in metrics:
                dest[k] = float(metrics[k])
        if P.NUM_EXAMPLES in metrics:
            dest["val-examples"] = float(metrics[P.NUM_EXAMPLES])


def _evaluation_line(of_round: int, replies, sites: list[str]) -> dict:
    """The metrics.jsonl line of a round's model scored at the start of the next round (``strategy.evaluate:
    with-train``): each site's val-* from its train reply; RunDir.metrics() merges it into that round's row, so
    readers see the same rows as with separate evaluate messages."""
    per_site: dict[str, dict] = {}
    for msg, site in zip(replies, sites):
        metrics = reported_metrics(msg)  # {} for error or malformed replies
        vals = {k: float(metrics[k]) for k in VAL_KEYS if k in metrics}
        if vals:
            per_site[site] = vals
    scored = {s: {**m, "status": "evaluated-only"} for s, m in per_site.items()}
    return {"round": of_round, "evaluation": {"sites": dict(sorted(per_site.items())),
                                              "server": {"val-loss": _weighted(scored, "val-loss", "val-examples")}}}


def _weighted(site_metrics: dict[str, dict], key: str, weight: str) -> float | None:
    pairs = [(m[key], m.get(weight, 0.0)) for m in site_metrics.values()
             if key in m and m.get("status") in ("accepted", "evaluated-only") and m.get(weight, 0) > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total > 0 else None


def _server_summary(site_metrics, verdicts, seconds: float, train_seconds: float) -> dict:
    eps = [m["epsilon"] for m in site_metrics.values() if "epsilon" in m]
    return {"accepted": sum(v.accepted for v in verdicts), "rejected": sum(not v.accepted for v in verdicts),
            "train-loss": _weighted(site_metrics, "train-loss", P.NUM_EXAMPLES),
            "val-loss": _weighted(site_metrics, "val-loss", "val-examples"),
            "max-epsilon": max(eps) if eps else None,
            "round-seconds": seconds, "train-phase-seconds": train_seconds,
            "max-site-train-seconds": max((m.get("train-seconds", 0.0) for m in site_metrics.values()),
                                          default=0.0)}


def _checkpoint_payload(cfg, rnd, weights, strategy, ledger, rd: RunDir, settings: ServerSettings,
                        ema: dict[str, np.ndarray] | None = None, base_info: dict | None = None) -> dict:
    # "format" is filled in by sssd.checkpoint.save_checkpoint, the one owner of the checkpoint format
    return {"round": rnd, "model_config": cfg.model.resolve().to_dict(),
            "state_dict": {k: torch.from_numpy(np.array(v)) for k, v in weights.items()},
            "ema_state_dict": None if ema is None else {k: torch.from_numpy(np.array(v)) for k, v in ema.items()},
            "ema_decay": float(cfg.strategy.ema_decay),
            "base": dict(base_info) if base_info is not None else {"init": cfg.init, "sha256": None},
            "label_codes": list(LabelVocab.default().codes),
            "demographics": _demographics_spec(), "run_config": cfg.to_dict(),
            "run_name": settings.run_name, "privacy_ledger": ledger.to_dict(),
            "strategy_state": strategy_state(strategy), "rng_state": {"python_random": random.getstate()},
            "manifest_path": str(rd.manifest_path) if rd.manifest_path.exists() else None}


def _demographics_spec() -> dict:
    spec = getattr(demographics, "NORMALISATION", None)
    return dict(spec) if isinstance(spec, dict) else {"module": "ptbxl.demographics"}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _log_round(rnd: int, total: int, row: dict) -> None:
    s = row["server"]
    fmt = _fmt
    eps = f", max epsilon {s['max-epsilon']:.3f}" if s["max-epsilon"] is not None else ""
    log.info("round %d/%d: %d accepted, %d rejected, train-loss %s, val-loss %s%s (%.1f s)", rnd, total,
             s["accepted"], s["rejected"], fmt(s["train-loss"]), fmt(s["val-loss"]), eps, s["round-seconds"])


def _progress(show: bool, total: int, start: int):
    if not show:
        return None
    return tqdm(total=total, initial=start, desc="federated rounds", unit="round")


def _tensorboard(rd: RunDir):
    """A SummaryWriter into RUN_DIR/tensorboard when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # local: tensorboard is optional
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(rd.tensorboard_dir))


def _to_tensorboard(board, row: dict) -> None:
    rnd = row["round"]
    for key, value in row["server"].items():
        if isinstance(value, (int, float)):
            board.add_scalar(f"server/{key}", value, rnd)
    for site, metrics in row["sites"].items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                board.add_scalar(f"{site}/{key}", value, rnd)
    board.flush()
