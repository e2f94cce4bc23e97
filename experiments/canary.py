"""The empirical DP audit as an experiment: insert canaries into a copy of a dataset, train a federation on it
(simulations.runner), score every canary and bound ε from below with privacy.canary's one-run bound (Steinke,
Nasr & Jagielski 2023). The bound itself, the canaries and their records are privacy.canary's (functions over
arrays and folders); this module is what runs a federation on their behalf."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fedecg.io import atomic_write_json
from fedecg.rundir import RunLayout
from privacy.accounting import compute_epsilon
from privacy.canary import audit_bound, canary_demographics, make_canaries, write_canary_dataset
from privacy.inputs import load_model
from privacy.ledger import load_ledger
from privacy.mia import MIAConfig, denoising_errors
from ptbxl.demographics import encode_one
from ptbxl.labels import LabelVocab
from ptbxl.partition import Manifest
from simulations.runner import simulate
from sssd.model import SSSDDenoiser


def run_canary_audit(
    scenario: str | Path,
    dataset: str | Path,
    work_dir: str | Path,
    n_canaries: int = 64,
    overrides: list[str] | None = None,
    seed: int = 0,
    beta: float = 0.05,
    delta: float | None = None,
    device: str = "cpu",
) -> dict:
    """Insert canaries (each w.p. 1/2) into a copy of ``dataset``, train ``scenario`` through the federation
    runner, score every canary with the denoising-error attack and bound ε from below.

    Writes ``work_dir/run/canary_audit.json`` (picked up by `fedecg audit` of that run) and returns it.
    ``delta`` defaults to the run's largest site δ (1e-5 when the run has no DP sites). The accounted ε is
    the released model's (worst site) at that same δ, ∞ when any client trained without DP."""
    work_dir = Path(work_dir)
    rng = np.random.default_rng(seed)
    x, labels = make_canaries(n_canaries, seed=seed)
    included = rng.random(n_canaries) < 0.5
    ds = work_dir / "dataset"
    ids = write_canary_dataset(dataset, ds, x, labels, included, list(LabelVocab.default().codes), seed)
    run = RunLayout(simulate(scenario, work_dir / "run", [*(overrides or []), f"dataset={ds.resolve()}"]))
    model, schedule, cfg = load_model(run.latest_checkpoint, device)
    ages, sexes = canary_demographics(n_canaries, seed)
    enc = [encode_one(age=a, sex=sx) for a, sx in zip(ages, sexes, strict=True)]
    demo, mask = np.stack([e[0] for e in enc]), np.stack([e[1] for e in enc])
    mia = MIAConfig(timesteps=(2, 5, 10, 20), n_noise=4, seed=seed)
    errors = denoising_errors(model, schedule, cfg, x, labels, demo, mask, mia, device)
    # reference calibration: the same canary's error under the run's initial weights (fixed by
    # model_config.init_seed, never trained on anything) removes per-canary difficulty
    reference = SSSDDenoiser(cfg).to(device).eval()
    errors_ref = denoising_errors(reference, schedule, cfg, x, labels, demo, mask, mia, device)
    scores = errors_ref - errors  # how much training lowered this canary's error
    ledger = load_ledger(run.path) if run.ledger_path.is_file() else None
    clients = {c.client_id for c in Manifest.load(run.manifest_path).clients}
    private = ledger is not None and bool(ledger.sites) and not clients - set(ledger.sites)
    site_delta = max(e.delta for e in ledger.sites.values()) if private else None
    d = delta if delta is not None else (site_delta or 1e-5)
    # accounted ε of the released model at the bound's δ (worst site; ∞ when a client trained without DP)
    accounted = (
        max(
            compute_epsilon(e.mechanism_history(), d, e.accountant if e.accountant in ("rdp", "prv") else "rdp")
            for e in ledger.sites.values()
        )
        if private
        else math.inf
    )
    bound = audit_bound(scores, included, d, beta)
    out = {
        **bound.to_dict(),
        "accounted_epsilon": "inf" if math.isinf(accounted) else accounted,
        # each canary is a new patient with one record, so the bound tests the unit the sites accounted in
        "unit": (("patient" if {e.unit for e in ledger.sites.values()} == {"patient"} else "record")
                 if private else None),
        "consistent": bool(bound.epsilon_lower_bound <= accounted),
        "n_included": int(included.sum()),
        "canary_ecg_ids": ids,
        "included": included.tolist(),
        "scores": scores.tolist(),
        "errors": errors.tolist(),
        "reference_errors": errors_ref.tolist(),
        "score": "error under initial weights − error under trained weights (timesteps 2, 5, 10, 20 × 4 draws)",
        "dataset": str(ds),
        "run_dir": str(run.path),
        "seed": seed,
        "method": "Steinke, Nasr & Jagielski 2023 (one run), denoising-error scores",
    }
    atomic_write_json(run.canary_audit_path, out)
    return out
