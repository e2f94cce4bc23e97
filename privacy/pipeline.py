"""`fedecg audit`: from a run directory (and optional synthetic/holdout folders) to audit.json and
report.html."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from evaluation.realism import realism_criteria, realism_metrics
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from fedecg.rundir import RunLayout
from privacy.accounting import run_budget
from privacy.audit import AuditConfig, base_corpus_audit, memorization_audit
from privacy.inputs import (
    DEFAULT_BASE_MAX_RECORDS,
    base_overlap,
    check_holdout_unseen,
    holdout_patients,
    load_base_corpus,
    load_holdout,
    load_model,
    load_records,
    load_synthetic,
    read_run,
    synthesize_like,
)
from privacy.ledger import LEDGER_FILE, load_ledger
from privacy.mia import MIAConfig, attack_metrics, denoising_errors
from privacy.plots import ecg_pairs_png, histograms_png, roc_png
from privacy.report import verdict, write_report
from ptbxl.constants import FS, MODEL_LEADS
from ptbxl.signals import derive_12_leads

log = logging.getLogger(__name__)
AUDIT_FORMAT = "fedecg-audit/1"


@dataclass(frozen=True)
class AuditRunConfig:
    """Everything `fedecg audit` needs besides paths."""

    n_synthetic: int = 200
    n_mia: int = 200  # members and non-members scored (each at most this many)
    sampling_steps: int = 50
    seed: int = 0
    audit: AuditConfig = field(default_factory=AuditConfig)
    mia: MIAConfig = field(default_factory=MIAConfig)
    cache_dir: str | None = None
    base_max_records: int = DEFAULT_BASE_MAX_RECORDS  # public base-corpus records compared at most
    realism_reference: int = 1000  # training records the realism metrics compare the synthetic ECGs with


def epsilon_section(run_dir: Path, client_ids: list[str]) -> dict | None:
    """Accounted ε of the run (privacy.accounting) plus the clients that trained without DP (no ledger)."""
    if not (run_dir / LEDGER_FILE).is_file():
        return None
    budget = run_budget(load_ledger(run_dir), accountants=("rdp",), primary=None)
    out = budget.to_dict()
    for s in out["sites"].values():
        s.pop("history", None)
    out["non_private_sites"] = [c for c in client_ids if c not in budget.sites]
    if out["non_private_sites"]:
        out["release"]["epsilon"] = "inf"
    return out


BASE_NOTE = (
    "The base's training records are public data: the sites' checks (near copies, DCR, membership inference) "
    "use the sites' records only; near copies of public base records are reported here and do not fail the "
    "audit. A record that is both public and a site's training record counts as private."
)


def base_section(base, mem, synthetic, train, hold, holdout_folder, run, cfg: AuditRunConfig, device):
    """``audit["base_corpus"]``: where the base's records come from, their overlap with the sites' training
    records and the holdout, and (when the records are available here) the synthetic ECGs' distances to them.
    Returns (block, DCR_base or None)."""
    rec = base.record
    card = rec.get("card") or {}
    data = card.get("data") or {}
    out: dict = {
        "init": rec.get("init"),
        "sha256": rec.get("sha256"),
        "source": base.source,
        "available": base.available,
        "reason": base.reason,
        "n_records_card": base.n_card,
        "n_records": len(base.arrays) if base.available else 0,
        "max_records": base.max_records,
        "capped": base.capped,
        "selection": base.selection,
        "note": BASE_NOTE,
        "notes": list(base.notes),
    }
    if base.source == "synthetic":
        out["generator_seed"] = data.get("generator_seed")
    if base.source == "folder":
        out["root"] = base.root_named
        out["folds"] = data.get("folds")
    out["overlap_with_sites"] = base_overlap(base, train, run.dataset, cfg.cache_dir)
    out["overlap_with_holdout"] = base_overlap(base, hold, holdout_folder, cfg.cache_dir)
    dcr_b = None
    if base.available:
        block, dcr_b = base_corpus_audit(
            synthetic, np.asarray(base.arrays.x), mem, np.asarray(hold.x), cfg.audit, device, base.arrays.ecg_ids
        )
        out.update(block)
    return out, dcr_b


def realism_section(synthetic: np.ndarray, train, cfg: AuditRunConfig) -> dict:
    """``audit["realism"]``: evaluation.realism's metrics and acceptance criteria of the audited synthetic ECGs
    against (a seeded random subset of at most ``cfg.realism_reference``) training records, both as 12 leads.
    Failed criteria make the verdict UNINFORMATIVE instead of PASS (privacy.report)."""
    rng = np.random.default_rng(cfg.seed)
    n = min(len(train), cfg.realism_reference)
    idx = np.sort(rng.choice(len(train), n, replace=False))
    try:
        block = realism_metrics(derive_12_leads(np.asarray(train.x)[idx]), derive_12_leads(synthetic), fs=FS)
    except FedECGError as exc:
        return {"error": str(exc), "reference": "training records", "n_real": n}
    block["criteria"] = realism_criteria(block)
    block["passed"] = all(block["criteria"].values())
    block["reference"] = "training records"
    return block


def _figures(mem, audit: dict, synthetic: np.ndarray, train_x: np.ndarray, roc: dict | None,
             dcr_base: np.ndarray | None = None) -> dict[str, bytes]:
    figs = {
        "dcr": histograms_png(
            {"synthetic → train": mem.dcr_train, "synthetic → holdout": mem.dcr_holdout},
            "distance to closest record (normalised RMS)",
            "DCR: train vs holdout",
        ),
        "nndr": histograms_png(
            {"synthetic → train": mem.nndr, "real holdout → train": mem.baseline_nndr},
            "NNDR = d1 / d2",
            "Nearest-neighbour distance ratio",
            vline=audit["near_copy"]["threshold"],
        ),
    }
    pairs = [
        (
            synthetic[w["synthetic_index"]],
            train_x[w["train_index"]],
            f"syn {w['synthetic_index']} ~ ecg {w['train_ecg_id']} (NNDR {w['nndr']:.2f})",
        )
        for w in audit["near_copy"]["worst"][:4]
    ]
    figs["near_copies"] = ecg_pairs_png(pairs, MODEL_LEADS)
    if dcr_base is not None:
        figs["base_dcr"] = histograms_png(
            {"synthetic → site training records": mem.dcr_train, "synthetic → public base corpus": dcr_base},
            "distance to closest record (normalised RMS)",
            "Closest record: sites' (private) vs base corpus (public)",
        )
    if roc is not None:
        figs["roc"] = roc_png(np.array(roc["fpr"]), np.array(roc["tpr"]), roc["auc"])
    return figs


def run_audit(
    run_dir: str | Path,
    out_dir: str | Path,
    holdout: str | Path | None = None,
    synthetic: str | Path | None = None,
    cfg: AuditRunConfig | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Memorization audit + MIA + ε table of a run; writes ``out_dir/audit.json`` and ``out_dir/report.html``
    and returns the audit dict. Synthetic ECGs come from ``synthetic`` or are sampled from the run's latest
    checkpoint with the training records' label/demographic mix."""
    cfg = cfg or AuditRunConfig()
    out_dir = Path(out_dir)
    run = read_run(run_dir)
    train = load_records(run.dataset, list(run.train_ids), cfg.cache_dir)
    hold = load_holdout(holdout, run, cfg.cache_dir)
    check_holdout_unseen(train, hold, str(holdout or f"{run.dataset} (test fold)"))  # by content, not ecg_id
    patients = holdout_patients(run, hold, holdout)  # and by patient: the privacy unit
    base = load_base_corpus(run.run_dir, cfg.base_max_records, cfg.cache_dir, cfg.seed)  # None: no base.json
    model = None
    if run.checkpoint is not None:
        model, schedule, mcfg = load_model(run.checkpoint, device)
    if synthetic is not None:
        syn = load_synthetic(synthetic)
        source = str(synthetic)
    elif model is not None:
        syn, _ = synthesize_like(model, schedule, train, cfg.n_synthetic, cfg.seed, cfg.sampling_steps, device=device)
        source = f"sampled from {run.checkpoint} (DDIM {cfg.sampling_steps} steps, seed {cfg.seed})"
    else:
        raise FedECGError(f"{run.run_dir}: no checkpoint to synthesize from; pass --synthetic")
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "synthetic.npz", signals=syn)  # the audited ECGs (8 model leads, mV)
    mem = memorization_audit(syn, np.asarray(train.x), np.asarray(hold.x), cfg.audit, device, train.ecg_ids)
    audit: dict = {
        "format": AUDIT_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run.run_dir),
        "checkpoint": None if run.checkpoint is None else str(run.checkpoint),
        "synthetic_source": source,
        "holdout_source": str(holdout or f"{run.dataset} (test fold)"),
        "holdout_patients": patients,
        **mem.summary,
    }
    dcr_base = None
    if base is not None:  # the run started from a pretrained base: its (public) records apart from the sites'
        hold_folder = run.dataset if holdout is None else Path(holdout)
        audit["base_corpus"], dcr_base = base_section(base, mem, syn, train, hold, hold_folder, run, cfg, device)
    roc = None
    audit["mia_auc"] = None
    if model is not None:
        rng = np.random.default_rng(cfg.seed)
        mi = rng.choice(len(train), min(cfg.n_mia, len(train)), replace=False)
        hi = rng.choice(len(hold), min(cfg.n_mia, len(hold)), replace=False)
        m_sub, h_sub = train.subset(mi), hold.subset(hi)
        e_m = denoising_errors(
            model, schedule, mcfg, m_sub.x, m_sub.labels, m_sub.demo, m_sub.demo_mask, cfg.mia, device
        )
        e_h = denoising_errors(
            model, schedule, mcfg, h_sub.x, h_sub.labels, h_sub.demo, h_sub.demo_mask, cfg.mia, device
        )
        met = attack_metrics(-e_m, -e_h)
        roc = {**met["roc"], "auc": met["auc"]}
        audit["mia_auc"] = met["auc"]
        audit["mia"] = {
            **{k: v for k, v in met.items() if k != "roc"},
            "timesteps": list(cfg.mia.timesteps),
            "n_noise": cfg.mia.n_noise,
            "score": "−mean denoising loss (higher = member)",
            "member_error_mean": float(e_m.mean()),
            "nonmember_error_mean": float(e_h.mean()),
        }
    client_ids = sorted(set(run.site_of_id.values()))
    audit["epsilon"] = epsilon_section(run.run_dir, client_ids)
    canary_file = RunLayout(run.run_dir).canary_audit_path
    if canary_file.is_file():
        audit["canary"] = json.loads(canary_file.read_text(encoding="utf-8"))
    audit["realism"] = realism_section(syn, train, cfg)
    audit["config"] = asdict(cfg)
    audit["verdict"] = verdict(audit)
    figs = _figures(mem, audit, syn, np.asarray(train.x), roc, dcr_base)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in figs.items():
        (out_dir / f"{name}.png").write_bytes(png)
    atomic_write_json(out_dir / "audit.json", audit)
    write_report(out_dir, audit, figs)
    return audit
