"""Empirical DP audit in one training run (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023).

Game. m canaries; each is inserted into the training data independently with probability 1/2
(S_i = +1 in, −1 out). After training, an attacker scores every canary (here: −denoising error of the model,
:mod:`privacy.mia`) and guesses T_i ∈ {+1, −1, 0}: "in" for the k₊ highest scores, "out" for the k₋ lowest,
abstains otherwise. r = k₊ + k₋ guesses, v of them correct.

Bound. If training is (ε, δ)-DP with respect to every canary's inclusion, the number of correct guesses W
satisfies (their Theorem for approximate DP):

    P[W ≥ v] ≤ P[Binomial(r, q) ≥ v] + 2·m·δ·α,      q = e^ε / (1 + e^ε),
    α = max_{1 ≤ i ≤ v} (1/i) · P[v − i ≤ Binomial(r, q) < v].

(δ = 0 gives the pure-DP statement: W is dominated by r fair-ish coin flips of accuracy q, the accuracy of
ε-randomized response.) The right side, :func:`p_value`, increases with ε. The lower bound at confidence
1 − β is the largest ε whose p-value is still < β (:func:`epsilon_lower_bound`, bisection): any smaller ε is
rejected. Several (k₊, k₋) choices are tried; each is tested at β / (number of choices) (Bonferroni), so the
reported maximum holds at confidence 1 − β overall. The result can never exceed the true ε of the training
algorithm except with probability β; a lower bound above the accounted ε therefore means the accounting
(or the DP implementation) is wrong.

Canaries (:func:`make_canaries`) are out-of-distribution ECGs: per lead a random sum of sinusoids
(0.5–15 Hz) plus sharp random spikes, about 1 mV, with random SCP labels; independent of each other so the
model learning one tells little about another. :func:`write_canary_dataset` writes the included ones as extra
WFDB records (train folds, random existing sites) into a copy of a PTB-XL-layout folder whose original
records are symlinked, never copied.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

from fedecg.errors import FedECGError
from ptbxl.constants import DATABASE_CSV, FS, FS_HIGH, TRAIN_FOLDS
from ptbxl.signals import derive_12_leads
from ptbxl.writer import write_ptbxl_folder

log = logging.getLogger(__name__)


def p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """Upper bound on P[≥ v correct of r guesses] for an (ε, δ)-DP algorithm with m canaries (docstring)."""
    if not 0 <= v <= r <= m:
        raise FedECGError(f"canary bound needs 0 <= v <= r <= m (got v={v}, r={r}, m={m})")
    if eps < 0 or not 0 <= delta <= 1:
        raise FedECGError(f"canary bound needs eps >= 0 and delta in [0, 1] (got {eps}, {delta})")
    if v == 0:
        return 1.0
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    alpha, mass = 0.0, 0.0
    if delta > 0:
        pmf = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[Bin = v-1], P[Bin = v-2], ..., P[Bin = 0]
        mass_i = np.cumsum(pmf)  # i = 1..v : P[v - i <= Bin < v]
        alpha = float(np.max(mass_i / np.arange(1, v + 1)))
        mass = 2.0 * m * delta * alpha
    return min(1.0, tail + mass)


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float = 0.0, beta: float = 0.05, eps_max: float = 50.0, iters: int = 60
) -> float:
    """Largest ε with p_value(m, r, v, ε, δ) < β (0 when even ε = 0 cannot be rejected)."""
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, eps_max
    if p_value(m, r, v, hi, delta) < beta:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guess_counts(scores: np.ndarray, included: np.ndarray, k_pos: int, k_neg: int) -> tuple[int, int]:
    """(r, v): guess "in" for the k_pos highest scores, "out" for the k_neg lowest; count correct guesses."""
    scores, included = np.asarray(scores, float), np.asarray(included, bool)
    if k_pos + k_neg > len(scores):
        raise FedECGError(f"{k_pos} + {k_neg} guesses exceed {len(scores)} canaries")
    order = np.argsort(-scores, kind="stable")
    pos, neg = order[:k_pos], order[len(order) - k_neg :] if k_neg else order[:0]
    return k_pos + k_neg, int(included[pos].sum() + (~included[neg]).sum())


def default_guess_grid(m: int) -> list[tuple[int, int]]:
    """Symmetric (k, k) guesses for k = m/16, m/8, m/4, m/2 (fixed in advance, not tuned on the data)."""
    ks = sorted({max(1, m // d) for d in (16, 8, 4)} | {m // 2})
    return [(k, k) for k in ks if 0 < 2 * k <= m]


@dataclass(frozen=True)
class CanaryBound:
    """The audit's outcome (all fields go into canary_audit.json)."""

    epsilon_lower_bound: float
    n_canaries: int
    guesses: int
    correct: int
    k_pos: int
    k_neg: int
    delta: float
    beta: float
    n_choices: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def audit_bound(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    beta: float = 0.05,
    grid: list[tuple[int, int]] | None = None,
) -> CanaryBound:
    """Best Bonferroni-corrected ε lower bound over the guess grid (higher score = "member")."""
    m = len(scores)
    grid = grid or default_guess_grid(m)
    best = None
    for k_pos, k_neg in grid:
        r, v = guess_counts(scores, included, k_pos, k_neg)
        eps = epsilon_lower_bound(m, r, v, delta, beta / len(grid))
        if best is None or eps > best.epsilon_lower_bound:
            best = CanaryBound(eps, m, r, v, k_pos, k_neg, delta, beta, len(grid))
    assert best is not None
    return best


# ---------------------------------------------------------------- canaries as ECG records


def make_canaries(
    m: int, n_labels: int = 71, seed: int = 0, leads: int = 8, samples: int = 1000, fs: float = 100.0
) -> tuple[np.ndarray, np.ndarray]:
    """m out-of-distribution ECGs (m, leads, samples) mV and random multi-hot labels (m, n_labels).
    Canary i's age/sex are :func:`canary_demographics` (fixed, so included and excluded canaries are scored
    under the same conditions)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / fs
    x = np.zeros((m, leads, samples))
    for _ in range(4):
        f = rng.uniform(0.5, 15.0, (m, leads, 1))
        x += rng.uniform(0.1, 0.4, (m, leads, 1)) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (m, leads, 1)))
    spikes = rng.random((m, leads, samples)) < 0.01
    x += spikes * rng.normal(0, 1.5, (m, leads, samples))
    labels = np.zeros((m, n_labels), np.float32)
    for i in range(m):
        labels[i, rng.choice(n_labels, 2, replace=False)] = 1.0
    return x.astype(np.float32), labels


def canary_demographics(m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ages in years, sexes 0/1) of the m canaries."""
    rng = np.random.default_rng([seed, 1])
    return rng.integers(20, 80, m).astype(float), rng.integers(0, 2, m).astype(float)


def write_canary_dataset(
    source: str | Path,
    dest: str | Path,
    canaries: np.ndarray,
    labels: np.ndarray,
    included: np.ndarray,
    label_codes: list[str],
    seed: int = 0,
) -> list[int]:
    """Copy ``source``'s PTB-XL layout to ``dest`` (records symlinked) and add the included canaries as
    train-fold WFDB records at random existing sites (``ptbxl.writer.write_ptbxl_folder``: the folder is
    complete or absent). Returns the canaries' ecg_ids (−1 for excluded ones)."""
    source, dest = Path(source).resolve(), Path(dest)
    csv = source / DATABASE_CSV
    if not csv.is_file():
        raise FedECGError(f"{source}: not a PTB-XL-layout folder (no {DATABASE_CSV})")
    if dest.exists():
        raise FedECGError(f"{dest}: exists; choose a new folder for the canary dataset")
    meta = pd.read_csv(csv)
    rng = np.random.default_rng(seed)
    sites = sorted(meta["site"].dropna().unique())
    next_id, next_patient = int(meta["ecg_id"].max()) + 1, float(meta["patient_id"].max()) + 1
    ages, sexes = canary_demographics(len(canaries), seed)
    rows, ids = [], []
    for i in range(len(canaries)):
        if not included[i]:
            ids.append(-1)
            continue
        ecg_id = next_id + len(rows)
        lr, hr = f"records100/canary/{ecg_id:05d}_lr", f"records500/canary/{ecg_id:05d}_hr"
        codes = {label_codes[j]: 100.0 for j in np.flatnonzero(labels[i])}
        row = meta.iloc[0].to_dict()
        row.update(
            ecg_id=ecg_id,
            patient_id=next_patient + len(rows),
            site=float(rng.choice(sites)),
            strat_fold=TRAIN_FOLDS[int(rng.integers(len(TRAIN_FOLDS)))],
            scp_codes=str(codes),
            filename_lr=lr,
            filename_hr=hr,
            age=float(ages[i]),
            sex=int(sexes[i]),
            height=np.nan,
            weight=np.nan,
        )
        rows.append(row)
        ids.append(ecg_id)

    def records():  # the included canaries, 12 leads at 100 Hz and (repeated) at 500 Hz
        for i, row in zip(np.flatnonzero(included), rows, strict=True):
            sig12 = derive_12_leads(canaries[i])
            yield row["filename_lr"], sig12, FS
            yield row["filename_hr"], np.repeat(sig12, FS_HIGH // FS, axis=-1), FS_HIGH

    write_ptbxl_folder(dest, pd.concat([meta, pd.DataFrame(rows)], ignore_index=True), records(), link_from=source)
    return ids
