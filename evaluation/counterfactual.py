"""Counterfactual personalisation: change one demographic of the conditioning, keep everything else (labels,
the other demographics and the sampling noise: same seed), and measure how the generated ECGs move.

For factor *f* with a low and a high value (``SWEEPS``: age 30 → 75 years, sex male → female, height 160 →
185 cm, weight 60 → 95 kg), ``n`` ECGs are sampled twice with identical noise. Per measure of
``evaluation.intervals`` the paired differences ``d_i = m(high)_i − m(low)_i`` give ``mean_diff`` (unit of the
measure) and the paired effect size ``d_z = mean(d) / sd(d)``. ``real_effect`` is the same factor's effect in
a real dataset (``evaluation.personalisation.effect_sizes``: Spearman ρ, or Cohen's d for sex) and
``same_direction`` compares signs; ``direction_agreement`` counts only non-negligible real effects
(|ρ| ≥ 0.1, |d| ≥ 0.2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation import synthesize  # generate looked up at call time (tests stub synthesize.generate)
from evaluation.intervals import ecg_measures
from evaluation.personalisation import EFFECT_MEASURES

log = logging.getLogger(__name__)
SWEEPS: dict[str, tuple[float, float]] = {"age": (30.0, 75.0), "sex": (0.0, 1.0), "height": (160.0, 185.0),
                                           "weight": (60.0, 95.0)}
BASE = {"age": 55.0, "sex": 0.0, "height": 172.0, "weight": 78.0}


def counterfactual_effects(checkpoint: str | Path, n: int = 16, labels: Sequence[str] = ("NORM",),
                           steps: int = 20, seed: int = 0, real_effects: dict | None = None,
                           device=None) -> dict:
    """Paired low/high sweeps of every factor (module docstring); ``real_effects`` as returned by
    ``personalisation.effect_sizes`` on a real set adds the direction comparison."""
    settings = synthesize.SamplerSettings(steps=steps, seed=seed)
    out: dict = {"n": n, "labels": list(labels), "base": BASE, "sweeps": {k: list(v) for k, v in SWEEPS.items()},
                 "effects": {}}
    agree = counted = 0
    for factor, (lo, hi) in SWEEPS.items():
        x = {}
        for tag, value in (("low", lo), ("high", hi)):
            cond = synthesize.explicit_conditions(n, labels, **{**BASE, factor: value})
            x[tag], _ = synthesize.generate(checkpoint, cond, settings, device)
        m_lo, m_hi = ecg_measures(x["low"]), ecg_measures(x["high"])
        out["effects"][factor] = {}
        for m in EFFECT_MEASURES:
            d = (m_hi[m] - m_lo[m]).dropna().to_numpy()
            sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
            row = {"mean_diff": float(d.mean()) if d.size else float("nan"),
                   "d_z": float(d.mean() / sd) if d.size > 1 and sd > 0 else float("nan"), "n_valid": int(d.size)}
            if real_effects is not None:
                r = real_effects.get(factor, {}).get(m, float("nan"))
                row["real_effect"] = r
                ok = np.isfinite(r) and np.isfinite(row["mean_diff"]) and row["mean_diff"] != 0
                row["same_direction"] = bool(np.sign(r) == np.sign(row["mean_diff"])) if ok else None
                if ok and abs(r) >= (0.2 if factor == "sex" else 0.1):
                    counted += 1
                    agree += int(row["same_direction"])
            out["effects"][factor][m] = row
        log.info("counterfactual %s: %s", factor, {m: round(v["mean_diff"], 3) for m, v in
                                                   out["effects"][factor].items()})
    out["direction_agreement"] = agree / counted if counted else float("nan")
    out["n_effects_compared"] = counted
    return out
