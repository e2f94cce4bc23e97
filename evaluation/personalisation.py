"""Personalisation effect sizes: does a demographic factor move measurable ECG properties the same way in
synthetic ECGs as in real ones?

For each factor and measure (from ``evaluation.intervals.ecg_measures``):
- sex (0 male, 1 female): Cohen's d = (mean_female − mean_male) / pooled SD;
- age, height, weight: Spearman's ρ between the factor and the measure.
An effect is *agreeing* when real and synthetic effects have the same sign; only real effects that are not
negligible (|d| ≥ 0.2 or |ρ| ≥ 0.1) count towards ``direction_agreement`` (fraction, NaN when none qualify).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

FACTORS = ("age", "sex", "height", "weight")
EFFECT_MEASURES = ("hr_bpm", "qrs_ms", "qt_ms", "r_amp_mv", "qrs_amp_mv")
_MIN_N = 4


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """(mean(a) − mean(b)) / pooled SD; NaN with fewer than 2 values on a side or zero spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return float("nan")
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def effect_sizes(demo: pd.DataFrame, measures: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{factor: {measure: effect}} for one ECG set (rows of ``demo`` and ``measures`` aligned)."""
    demo = demo.reset_index(drop=True)
    measures = measures.reset_index(drop=True)
    out: dict[str, dict[str, float]] = {}
    for factor in FACTORS:
        out[factor] = {}
        f = pd.to_numeric(demo[factor], errors="coerce") if factor in demo else pd.Series(np.nan, demo.index)
        for m in EFFECT_MEASURES:
            v = measures[m] if m in measures else pd.Series(np.nan, measures.index)
            ok = f.notna() & v.notna()
            if ok.sum() < _MIN_N:
                out[factor][m] = float("nan")
            elif factor == "sex":
                out[factor][m] = cohens_d(v[ok & (f == 1)], v[ok & (f == 0)])
            elif f[ok].nunique() < 2 or v[ok].nunique() < 2:
                out[factor][m] = float("nan")
            else:
                out[factor][m] = float(spearmanr(f[ok], v[ok]).statistic)
    return out


def compare_effects(real: dict, synthetic: dict) -> dict:
    """Side-by-side effects with sign agreement, plus the overall ``direction_agreement`` fraction."""
    table: dict[str, dict[str, dict]] = {}
    agree, counted = 0, 0
    for factor, per_measure in real.items():
        table[factor] = {}
        threshold = 0.2 if factor == "sex" else 0.1
        for m, r in per_measure.items():
            s = synthetic.get(factor, {}).get(m, float("nan"))
            same = bool(np.sign(r) == np.sign(s)) if np.isfinite(r) and np.isfinite(s) else None
            table[factor][m] = {"real": r, "synthetic": s, "same_direction": same}
            if same is not None and abs(r) >= threshold:
                counted += 1
                agree += int(same)
    return {
        "effects": table,
        "direction_agreement": agree / counted if counted else float("nan"),
        "n_effects_compared": counted,
    }
