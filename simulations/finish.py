"""What a finished run leaves for people to look at: synthetic ECGs (npz + PNG grid on ECG paper), training
curves, and the per-site privacy budget (JSON + table + plot), all inside the run directory."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np

from evaluation.realism import beat_features, format_realism, realism_criteria, realism_metrics, robust_amplitude
from evaluation.synthesize import SamplerSettings, conditions_like_dataset, generate, write_synthetic_dataset
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json, atomic_write_text
from privacy.accounting import epsilon_over_rounds, run_budget
from privacy.ledger import load_ledger
from privacy.plots import epsilon_rounds_png
from ptbxl.constants import HELDOUT_FOLDS, TRAIN_FOLDS
from ptbxl.dataset import load_arrays
from ptbxl.layout import read_database
from ptbxl.partition import Manifest
from ptbxl.signals import derive_12_leads
from server.rundir import RunDir

log = logging.getLogger(__name__)


def finish_run(run_dir: str | Path) -> str:
    """Write synthetic ECGs, curves and the budget table into ``run_dir``; return a short text report."""
    # Known-harmless library chatter at this stage (Flower's Ray transport re-enables DeprecationWarnings
    # process-wide): wfdb's pandas `inplace=` calls, and log(0) inside Opacus' PRV accountant at q = 1.
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.filterwarnings("ignore", message="The inplace keyword")
        return _finish_run(run_dir)


def _finish_run(run_dir: str | Path) -> str:
    rd = RunDir(run_dir)
    cfg = rd.read_config()
    lines = [f"run directory: {rd.path}"]
    if cfg.output.synthesize > 0:
        grid = synthesize_examples(rd, cfg.output.synthesize, cfg.output.sampler, cfg.output.sampler_steps,
                                   cfg.seed, eta=cfg.output.sampler_eta)
        lines.append(f"synthetic ECGs: {grid} (+ WFDB records, synthetic.npz, png/ in {grid.parent})")
        fidelity, fid_png = write_fidelity(rd)
        ref = "held-out folds 9-10" if cfg.output.fidelity_reference == "heldout" else "the run's training data"
        lines.append(f"realism of the synthetic ECGs vs {ref}: {rd.fidelity_path}, {fid_png}")
        lines.append(fidelity)
    curves = plot_curves(rd)
    lines.append(f"training curves: {curves}")
    table, budget_png = write_budget(rd)
    if budget_png is not None:
        lines.append(f"privacy budget: {rd.privacy_budget_path}, {budget_png}")
    lines.append(table)
    report = "\n".join(lines)
    atomic_write_text(rd.summary_path, report + "\n")
    return report


def synthesize_examples(rd: RunDir, n: int, sampler: str, steps: int, seed: int, eta: float = 1.0) -> Path:
    """Sample ``n`` ECGs from the last checkpoint, conditioned like ``n`` training-fold records of the run's
    dataset, into RUN_DIR/synthetic (PTB-XL layout + npz + PNGs; see evaluation.synthesize). Returns the grid."""
    manifest = Manifest.load(rd.manifest_path)
    checkpoint = rd.latest_checkpoint
    conditions = conditions_like_dataset(manifest.dataset, n, seed=seed, folds=TRAIN_FOLDS)
    settings = SamplerSettings(sampler=sampler, steps=steps, seed=seed, eta=eta)
    signals, info = generate(checkpoint, conditions, settings)
    out = write_synthetic_dataset(rd.synthetic_dir, signals, conditions, info["label_codes"],
                                  provenance={"checkpoint": str(checkpoint), "round": info["round"],
                                              "sampler": sampler, "steps": steps, "eta": eta, "seed": seed,
                                              "weights": info.get("weights")},
                                  overwrite=True)
    return out / "grid.png"


def write_fidelity(rd: RunDir, max_real: int = 1000) -> tuple[str, Path]:
    """RUN_DIR/fidelity.json + fidelity.png: realism metrics (evaluation.realism) of RUN_DIR/synthetic against
    the run's training records, or with ``output.fidelity_reference: heldout`` the dataset's folds 9-10 (at most
    ``max_real`` of them, drawn with the run's seed)."""
    cfg = rd.read_config()
    manifest = Manifest.load(rd.manifest_path)
    if cfg.output.fidelity_reference == "heldout":
        meta = read_database(manifest.dataset)
        pool = sorted(int(e) for e in meta.index[meta["strat_fold"].isin(HELDOUT_FOLDS)])
        what = "held-out records (folds 9-10) of the dataset"
    else:
        pool = sorted(int(e) for c in manifest.clients for e in c.ecg_ids("train"))
        what = "training records of the run's sites"
    if not pool:
        raise FedECGError(f"{rd.path}: no {what} to compare the synthetic ECGs with")
    rng = np.random.default_rng(cfg.seed)
    pick = sorted(rng.choice(pool, size=min(max_real, len(pool)), replace=False).tolist())
    real = np.asarray(derive_12_leads(np.asarray(load_arrays(manifest.dataset, pick).x)), dtype=np.float64)
    with np.load(rd.synthetic_npz) as z:
        syn = np.asarray(z["signals"], dtype=np.float64)
    metrics = realism_metrics(real, syn, fs=100.0)
    criteria = realism_criteria(metrics)
    out = dict(metrics)
    out.update({"criteria": criteria, "passed": all(criteria.values()),
                "reference": f"{len(pick)} {what} (of {len(pool)})",
                "synthetic": str(rd.synthetic_npz)})
    atomic_write_json(rd.fidelity_path, out)
    png = plot_fidelity(rd.fidelity_png, real, syn,
                        "held-out data" if cfg.output.fidelity_reference == "heldout" else "training data")
    return format_realism(metrics), png


def plot_fidelity(path: Path, real, syn, real_name: str = "training data") -> Path:
    """Lead II of real and synthetic ECGs side by side, and their heart-rate and amplitude distributions."""
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 5.5))
    t = np.arange(real.shape[-1]) / 100.0
    for ax, x, name in ((axes[0, 0], real, real_name), (axes[0, 1], syn, "synthetic")):
        for i in range(min(3, len(x))):
            ax.plot(t, x[i, 1] - 2.5 * i, linewidth=0.7)
        ax.set_title(f"lead II, {name} (offset 2.5 mV each)")
        ax.set_xlabel("s")
    hr_r, hr_s = (beat_features(x, 100.0)["hr_bpm"] for x in (real, syn))
    bins = np.linspace(30, 180, 31)
    axes[1, 0].hist(hr_r[np.isfinite(hr_r)], bins=bins, density=True, alpha=0.5, label=real_name)
    axes[1, 0].hist(hr_s[np.isfinite(hr_s)], bins=bins, density=True, alpha=0.5, label="synthetic")
    axes[1, 0].set_xlabel("heart rate (bpm), lead II")
    axes[1, 0].legend(fontsize=8)
    amp_r, amp_s = robust_amplitude(real), robust_amplitude(syn)
    bins = np.linspace(0, max(4.0, float(np.nanpercentile(np.r_[amp_r, amp_s], 99))), 31)
    axes[1, 1].hist(amp_r, bins=bins, density=True, alpha=0.5, label=real_name)
    axes[1, 1].hist(amp_s, bins=bins, density=True, alpha=0.5, label="synthetic")
    axes[1, 1].set_xlabel("lead II robust amplitude (mV)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(rd: RunDir) -> Path:
    """Per-site training loss and validation loss over rounds (PNG)."""
    import matplotlib  # local: Agg is chosen only when drawing, never as a side effect of importing this module

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = rd.metrics()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sites = sorted({s for r in rows for s in r.get("sites", {})})
    for ax, key, title in ((axes[0], "train-loss", "local training loss"), (axes[1], "val-loss",
                                                                            "validation loss (global model)")):
        for site in sites:
            pts = [(r["round"], r["sites"][site][key]) for r in rows if key in r["sites"].get(site, {})]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=site)
        server_key = "train-loss" if key == "train-loss" else "val-loss"
        pts = [(r["round"], r["server"][server_key]) for r in rows if r["server"].get(server_key) is not None]
        if pts:
            ax.plot(*zip(*pts), "k--", linewidth=2, label="weighted mean")
        ax.set_xlabel("round")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path = rd.training_curves_png
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_budget(rd: RunDir) -> tuple[str, Path | None]:
    """privacy_budget.json, epsilon_over_rounds.png and a text table of the per-site epsilon."""
    ledger = load_ledger(rd.path)
    if not ledger.sites:
        return "privacy: DP-SGD was off in this run (no record-level guarantee).", None
    budget = run_budget(ledger)
    atomic_write_json(rd.privacy_budget_path, budget.to_dict())
    curves = {s: epsilon_over_rounds(e, budget.sites[s].accountant) for s, e in ledger.sites.items()}
    png = rd.epsilon_png
    png.write_bytes(epsilon_rounds_png(curves, {s: e.delta for s, e in ledger.sites.items()},
                                       next(iter(budget.sites.values())).accountant))
    head = f"{'site':<16}{'unit':>8}{'units':>7}{'steps':>7}{'sigma':>7}{'q':>8}{'delta':>10}{'epsilon':>9}"
    rows = [head, "-" * len(head)]
    for s, b in budget.sites.items():
        rows.append(f"{s:<16}{b.level:>8}{b.n_records or 0:>7}{b.steps:>7}{b.noise_multiplier or 0:>7.2f}"
                    f"{b.sample_rate or 0:>8.4f}{b.delta:>10.2e}{b.epsilon:>9.3f}")
    rows.append(f"released model ({budget.release_level} level, max over sites): "
                f"epsilon = {budget.release_epsilon:.3f} "
                f"at delta = {budget.release_delta:.2e}")
    return "\n".join(rows), png


def load_summary(run_dir: str | Path) -> dict:
    return json.loads(RunDir(run_dir).privacy_budget_path.read_text())
