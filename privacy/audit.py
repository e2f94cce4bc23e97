"""Memorization audit of synthetic ECGs against the training records and an unseen holdout.

Inputs are arrays ``(N, L, T)`` in mV (same leads and length for all three sets). Distances are the per-lead
normalised Euclidean distance of :mod:`privacy.distances` (optionally its shift-tolerant variant).

Metrics (s = a synthetic ECG, NN_k(s, R) = its k-th nearest record in set R, d = distance):

- **DCR** (distance to closest record): DCR_R(s) = d(s, NN_1(s, R)). A generator that did not memorise is as
  close to unseen data of the same distribution as to its training data. Two tests (H0: the generator's
  output does not depend on which records were drawn into training, i.e. train and holdout are exchangeable):
  * **primary, split-permutation test on the full sets**: with both DCRs over the *full* train (N) and holdout
    (M) sets, k = #{s : DCR_train(s) < DCR_holdout(s)}, i.e. the number of synthetic ECGs whose closest real
    record (in train ∪ holdout) is a training record. Under H0 the train/holdout split is exchangeable, so
    the null distribution of k is obtained by re-drawing which N of the N + M real records are "train"
    (``n_permutations`` random splits, keeping each record's count of synthetic ECGs it is closest to);
    p = (1 + #{k_perm ≥ k}) / (1 + n_permutations). Expected share p0 = N / (N + M). This stays valid
    when a few "hub" records are the nearest neighbour of many synthetic ECGs (common for smooth or noisy
    generators in 8,000 dimensions), where a binomial test that treats the n synthetic ECGs as independent
    is far too optimistic; that binomial p-value (``binomial``, P[Bin(n, p0) ≥ k]) is still reported.
    "Significant" = permutation p < α (0.05). With N = M this is the familiar "share closer to train vs 1/2".
  * **secondary, one-sided Mann–Whitney U** (``scipy.stats.mannwhitneyu``, alternative "less") of DCR_train vs
    DCR_holdout where the train reference is a random subset of the training records of the *same size* as
    the holdout (DCR shrinks as a reference set grows, so unequal sizes would bias a distribution test). A
    generator copying training records uniformly gives only m/(2N) + 1/2 of copies closer to the matched
    subset, so this test is weaker when N ≫ M; it is reported, not used for the verdict.
- **NNDR** (nearest-neighbour distance ratio): NNDR(s) = d(s, NN_1(s, train)) / d(s, NN_2(s, train)) over the
  *full* training set, in [0, 1]; values near 0 mean s sits on one specific training record rather than in a
  dense region. (0/0, i.e. duplicate training records, counts as 0.)
- **Near-copy share** (Carlini et al. 2023 style extraction criterion, with the 2nd nearest neighbour as the
  local scale): the share of synthetic ECGs with NNDR(s) < τ (default τ = 1/3: the nearest training record is
  at least 3× closer than any other). The same share computed for real holdout ECGs against train is the
  baseline false-positive rate of the criterion.

**Public base corpus** (:func:`base_corpus_audit`, when the federation started from a pretrained base): the same
nearest-neighbour distances of the synthetic ECGs to the records that trained the base (public data), with the
sites' lead scales so that DCR_base and DCR_train are on one scale. Each synthetic ECG's closest training
record is "base" when DCR_base(s) < DCR_train(s) (a tie, e.g. a record in both sets, counts as "site": private
wins), the base near-copy criterion is NNDR over the base corpus < τ. These are reported apart: the verdict on
the sites' records (everything above) never sees a base record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binomtest, mannwhitneyu

from fedecg.errors import FedECGError
from privacy.distances import Neighbours, lead_scales, nearest_neighbours, nearest_neighbours_shift_tolerant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditConfig:
    """Settings of the memorization audit (all thresholds stated in the report)."""

    near_copy_ratio: float = 1 / 3  # τ: NNDR below this = near-copy
    alpha: float = 0.05  # significance level of the DCR tests
    n_permutations: int = 10000  # random splits in the DCR permutation test
    shift_tolerant: bool = False
    max_lag: int = 10  # samples (100 ms at 100 Hz) for the shift-tolerant distance
    n_worst: int = 6  # near-copies shown in the report
    seed: int = 0


@dataclass(frozen=True)
class MemorizationResult:
    """Per-synthetic arrays and the summary statistics of one audit."""

    dcr_train: np.ndarray  # (N,) to the full training set
    dcr_holdout: np.ndarray  # (N,) to the full holdout set
    train_nn: Neighbours  # (N, 2) over the full training set
    nndr: np.ndarray  # (N,)
    baseline_nndr: np.ndarray  # (M,) holdout → full train
    summary: dict = field(default_factory=dict)
    scales: np.ndarray | None = None  # (L,) per-lead scales of the training set (the distance's s_l)
    baseline_dcr: np.ndarray | None = None  # (M,) holdout → full train, d to the closest training record

    @property
    def near_copy_share(self) -> float:
        return float(self.summary["near_copy_share"])


def _nndr(nn: Neighbours) -> np.ndarray:
    d1, d2 = nn.distance[:, 0], nn.distance[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d2 > 0, d1 / d2, 0.0)
    return np.clip(r, 0.0, 1.0)


def _stats(x: np.ndarray) -> dict:
    return {
        "mean": float(np.mean(x)),
        "median": float(np.median(x)),
        "p05": float(np.quantile(x, 0.05)),
        "min": float(np.min(x)),
    }


def _search(q, ref, scales, cfg: AuditConfig, k: int, device) -> Neighbours:
    if cfg.shift_tolerant:
        return nearest_neighbours_shift_tolerant(q, ref, k, scales, cfg.max_lag, device)
    return nearest_neighbours(q, ref, k=k, scales=scales, device=device)


def dcr_tests(
    dcr_train: np.ndarray,
    dcr_holdout: np.ndarray,
    n_train: int,
    n_holdout: int,
    matched_train: np.ndarray | None = None,
    matched_holdout: np.ndarray | None = None,
    alpha: float = 0.05,
    nearest_pooled: np.ndarray | None = None,
    n_permutations: int = 10000,
    seed: int = 0,
) -> dict:
    """Split-permutation and binomial tests of the share closer to train (full sets, expected share
    p0 = N/(N+M)) and Mann–Whitney U on the size-matched DCRs (module docstring).

    ``nearest_pooled[s]`` = index of s's closest real record in the pooled order (train 0..N−1, then holdout
    N..N+M−1); without it the permutation test is skipped and the binomial p-value decides."""
    closer = int(np.sum(dcr_train < dcr_holdout))
    n = len(dcr_train)
    p0 = n_train / (n_train + n_holdout)
    bt = binomtest(closer, n, p0, alternative="greater")
    out = {
        "share_closer_to_train": closer / n,
        "closer_to_train": closer,
        "n": n,
        "expected_share": p0,
        "binomial": {"p_value": float(bt.pvalue), "null_share": p0},
        "alpha": alpha,
    }
    p_decide = float(bt.pvalue)
    if nearest_pooled is not None:
        counts = np.bincount(np.asarray(nearest_pooled), minlength=n_train + n_holdout)
        hubs = np.flatnonzero(counts)
        rng = np.random.default_rng(seed)
        total = n_train + n_holdout
        null = np.empty(n_permutations, dtype=np.int64)
        for i in range(n_permutations):
            is_train = rng.permutation(total)[hubs] < n_train
            null[i] = counts[hubs][is_train].sum()
        p_perm = float((1 + np.sum(null >= closer)) / (1 + n_permutations))
        out["permutation"] = {
            "p_value": p_perm,
            "n_permutations": n_permutations,
            "null_mean_share": float(null.mean() / n),
            "null_p95_share": float(np.quantile(null, 0.95) / n),
            "max_share_of_one_record": float(counts.max() / n),
        }
        p_decide = p_perm
    out["p_value"] = p_decide
    out["significant"] = bool(p_decide < alpha)
    if matched_train is not None and matched_holdout is not None:
        mw = mannwhitneyu(matched_train, matched_holdout, alternative="less")
        out["mannwhitney_u"] = {
            "statistic": float(mw.statistic),
            "p_value": float(mw.pvalue),
            "reference_size": None,
        }
    return out


def memorization_audit(
    synthetic: np.ndarray,
    train: np.ndarray,
    holdout: np.ndarray,
    cfg: AuditConfig | None = None,
    device: torch.device | str = "cpu",
    train_ids: np.ndarray | None = None,
) -> MemorizationResult:
    """Run DCR, NNDR and near-copy metrics (module docstring) and return arrays plus a JSON-able summary."""
    cfg = cfg or AuditConfig()
    shapes = {a.shape[1:] for a in (synthetic, train, holdout)}
    if len(shapes) != 1:
        raise FedECGError(f"synthetic, train and holdout must share (leads, samples); got {sorted(shapes)}")
    if len(train) < 2:
        raise FedECGError("the memorization audit needs at least 2 training records")
    rng = np.random.default_rng(cfg.seed)
    scales = lead_scales(train)
    m = min(len(train), len(holdout))
    train_sub = np.sort(rng.choice(len(train), m, replace=False)) if len(train) > m else np.arange(len(train))
    hold_sub = np.sort(rng.choice(len(holdout), m, replace=False)) if len(holdout) > m else np.arange(m)
    log.info(
        "audit: %d synthetic vs %d train (%d size-matched) and %d holdout",
        len(synthetic),
        len(train),
        m,
        len(holdout),
    )
    nn = _search(synthetic, train, scales, cfg, 2, device)
    nndr = _nndr(nn)
    dcr_t = nn.distance[:, 0]
    nn_h = _search(synthetic, holdout, scales, cfg, 1, device)
    dcr_h = nn_h.distance[:, 0]
    pooled = np.where(dcr_t < dcr_h, nn.index[:, 0], len(train) + nn_h.index[:, 0])
    matched_t = _search(synthetic, train[train_sub], scales, cfg, 1, device).distance[:, 0]
    matched_h = _search(synthetic, holdout[hold_sub], scales, cfg, 1, device).distance[:, 0]
    base_nn = _search(holdout, train, scales, cfg, 2, device)
    base_nndr = _nndr(base_nn)
    tests = dcr_tests(
        dcr_t,
        dcr_h,
        len(train),
        len(holdout),
        matched_t,
        matched_h,
        cfg.alpha,
        pooled,
        cfg.n_permutations,
        cfg.seed,
    )
    tests["mannwhitney_u"]["reference_size"] = m
    near = nndr < cfg.near_copy_ratio
    worst = np.argsort(nndr, kind="stable")[: cfg.n_worst]
    ids = None if train_ids is None else np.asarray(train_ids)
    summary = {
        "distance": "shift-tolerant normalised Euclidean" if cfg.shift_tolerant else "normalised Euclidean",
        "max_lag_samples": cfg.max_lag if cfg.shift_tolerant else 0,
        "n_synthetic": len(synthetic),
        "n_train": len(train),
        "n_holdout": len(holdout),
        "dcr": {
            "train": _stats(dcr_t),
            "holdout": _stats(dcr_h),
            "baseline_holdout_to_train": _stats(base_nn.distance[:, 0]),
            **tests,
        },
        "nndr": {**_stats(nndr), "baseline_holdout": _stats(base_nndr)},
        "near_copy_share": float(near.mean()),
        "near_copy": {
            "threshold": cfg.near_copy_ratio,
            "criterion": "d(s, NN1_train) / d(s, NN2_train) < threshold",
            "count": int(near.sum()),
            "baseline_holdout_share": float((base_nndr < cfg.near_copy_ratio).mean()),
            "worst": [
                {
                    "synthetic_index": int(i),
                    "train_index": int(nn.index[i, 0]),
                    "train_ecg_id": None if ids is None else ids[nn.index[i, 0]].item(),
                    "d1": float(nn.distance[i, 0]),
                    "d2": float(nn.distance[i, 1]),
                    "nndr": float(nndr[i]),
                }
                for i in worst
            ],
        },
    }
    return MemorizationResult(dcr_t, dcr_h, nn, nndr, base_nndr, summary, scales, base_nn.distance[:, 0])


def base_corpus_audit(
    synthetic: np.ndarray,
    base: np.ndarray,
    mem: MemorizationResult,
    holdout: np.ndarray,
    cfg: AuditConfig | None = None,
    device: torch.device | str = "cpu",
    base_ids: np.ndarray | None = None,
) -> tuple[dict, np.ndarray]:
    """Distances of the synthetic ECGs to the public base corpus ``base`` (module docstring), next to the
    sites' audit ``mem`` (same synthetic ECGs, same distance and lead scales). Returns a JSON-able summary
    and DCR_base (N,). The real ``holdout`` ECGs give the chance baselines (their share closest to a base
    record, their base near-copy share)."""
    cfg = cfg or AuditConfig()
    if base.shape[1:] != synthetic.shape[1:]:
        raise FedECGError(f"base corpus records have shape {base.shape[1:]}, synthetic ECGs {synthetic.shape[1:]}")
    if mem.scales is None or mem.baseline_dcr is None:
        raise FedECGError("base_corpus_audit needs the sites' audit (memorization_audit) of the same ECGs")
    k = min(2, len(base))
    nn = _search(synthetic, base, mem.scales, cfg, k, device)
    dcr_b = nn.distance[:, 0]
    hold_nn = _search(holdout, base, mem.scales, cfg, k, device)
    public = dcr_b < mem.dcr_train  # ties (the same record in both sets) count as private
    ids = None if base_ids is None else np.asarray(base_ids)
    out = {
        "n_records": len(base),
        "dcr": _stats(dcr_b),
        "baseline_holdout_to_base": _stats(hold_nn.distance[:, 0]),
        "closest": {
            "rule": "base if d(s, nearest base record) < d(s, nearest site training record); ties count as site",
            "n_base": int(public.sum()),
            "n_site": int((~public).sum()),
            "share_base": float(public.mean()),
            "baseline_holdout_share_base": float(np.mean(hold_nn.distance[:, 0] < mem.baseline_dcr)),
            "nearest": ["base" if p else "site" for p in public],
        },
        "near_copy": None,
    }
    if k == 2:
        nndr = _nndr(nn)
        near = nndr < cfg.near_copy_ratio
        worst = np.argsort(nndr, kind="stable")[: cfg.n_worst]
        out["near_copy"] = {
            "threshold": cfg.near_copy_ratio,
            "criterion": "d(s, NN1_base) / d(s, NN2_base) < threshold",
            "count": int(near.sum()),
            "share": float(near.mean()),
            "count_closest_to_base": int((near & public).sum()),
            "baseline_holdout_share": float((_nndr(hold_nn) < cfg.near_copy_ratio).mean()),
            "nndr_median": float(np.median(nndr)),
            "worst": [
                {
                    "synthetic_index": int(i),
                    "base_index": int(nn.index[i, 0]),
                    "base_ecg_id": None if ids is None else ids[nn.index[i, 0]].item(),
                    "d1": float(nn.distance[i, 0]),
                    "d2": float(nn.distance[i, 1]),
                    "nndr": float(nndr[i]),
                    "closest": "base" if public[i] else "site",
                }
                for i in worst
            ],
        }
    return out, dcr_b
