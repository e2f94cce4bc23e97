"""Robust aggregation: what one bad site can do to the global model is bounded.

``strategy.robust`` (config) names the rule applied to the accepted, validated replies of a round before
Flower's strategy (FedAvg / FedProx / FedAdam / FedYogi) turns them into the next global model:

- ``none``: the strategy sees every accepted reply, weighted by its (capped) example count (FedAvg).
- ``median``: coordinate-wise median of the sites' weights (unweighted, like Flower's FedMedian).
- ``trimmed-mean:β``: coordinate-wise mean after dropping the ⌊β·n⌋ largest and ⌊β·n⌋ smallest values of each
  coordinate (unweighted, like Flower's FedTrimmedAvg), 0 ≤ β < 0.5.
- ``norm-bound:C``: every update ``w_site − w_global`` is scaled down to L2 norm ≤ C, then the strategy
  averages them as usual (weighted by examples).

``median`` and ``trimmed-mean`` hand the strategy one combined reply (weight = the sum of the sites' capped
example counts), so FedAdam/FedYogi apply their server optimizer to the robust aggregate.

What is guaranteed (tested in tests/test_robustness.py): with f malicious sites among n, the coordinate-wise
median (f < n/2) and the trimmed mean (f ≤ ⌊β·n⌋) lie, in every coordinate, between the smallest and the
largest honest value, so ``‖robust − honest mean‖₂ ≤ ‖max_honest − min_honest‖₂`` whatever the malicious sites
send (any scale, sign flip, any example count).

Independently of the rule, :func:`relative_norm_outliers` rejects in a round with ≥ 3 accepted replies any update
whose norm exceeds ``strategy.relative_norm_factor`` × the median update norm of the round (0 = off).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedecg import protocol as P
from fedecg.errors import FedECGError
from fedecg.specs import KINDS, RobustRule, parse_robust  # noqa: F401 - server.robust's public names
from fedecg.wire import from_record

MIN_REPLIES_FOR_RELATIVE_BOUND = 3


def _stack(updates: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.stack([np.asarray(u[name], dtype=np.float64) for u in updates])


def coordinate_median(weights: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Coordinate-wise median (an even count averages the two middle values)."""
    return {k: np.median(_stack(weights, k), axis=0) for k in weights[0]}


def trimmed_mean(weights: list[dict[str, np.ndarray]], beta: float) -> dict[str, np.ndarray]:
    """Coordinate-wise mean without the ⌊β·n⌋ smallest and ⌊β·n⌋ largest values of each coordinate."""
    n = len(weights)
    cut = int(math.floor(beta * n))
    if n - 2 * cut < 1:
        raise FedECGError(f"trimmed-mean:{beta} leaves no value of {n}")
    out = {}
    for k in weights[0]:
        s = np.sort(_stack(weights, k), axis=0)
        out[k] = s[cut:n - cut].mean(axis=0)
    return out


def update_norm(w: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum((np.asarray(w[k], np.float64) - np.asarray(ref[k], np.float64)) ** 2))
                         for k in ref))


def clip_update(w: dict[str, np.ndarray], ref: dict[str, np.ndarray], bound: float) -> dict[str, np.ndarray]:
    """``ref + (w − ref) · min(1, bound / ‖w − ref‖)``, in the reference's dtypes."""
    norm = update_norm(w, ref)
    if norm <= bound:
        return w
    scale = bound / norm
    return {k: (np.asarray(ref[k], np.float64) + (np.asarray(w[k], np.float64) - ref[k]) * scale).astype(ref[k].dtype)
            for k in ref}


def combine(rule: RobustRule, weights: list[dict[str, np.ndarray]], ref: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
    """The combined model of a median / trimmed-mean rule, in the reference's dtypes."""
    if not weights:
        raise FedECGError("robust aggregation of no replies")
    if rule.kind == "median":
        out = coordinate_median(weights)
    elif rule.kind == "trimmed-mean":
        out = trimmed_mean(weights, rule.param)
    else:
        raise FedECGError(f"robust rule {rule.kind} does not combine replies")
    return {k: out[k].astype(ref[k].dtype) for k in ref}


def relative_norm_outliers(norms: dict[str, float], factor: float,
                           min_replies: int = MIN_REPLIES_FOR_RELATIVE_BOUND) -> dict[str, str]:
    """Sites whose update norm exceeds ``factor`` × the round's median norm (site → reason); nothing when fewer
    than ``min_replies`` norms are given or ``factor`` ≤ 0."""
    if factor <= 0 or len(norms) < min_replies:
        return {}
    median = float(np.median(list(norms.values())))
    if not math.isfinite(median) or median <= 0:
        return {}
    return {s: f"update norm {n:.3g} exceeds {factor:g} x the round's median update norm {median:.3g}"
            for s, n in norms.items() if n > factor * median}


def aggregation_replies(rule: RobustRule, accepted: list, ref: dict[str, np.ndarray]) -> list:
    """The Flower Messages the strategy aggregates, from the accepted ``(site, message, verdict)`` triples (fixed
    order): each reply's arrays with its capped example count (``none``), the clipped updates (``norm-bound``),
    or one combined reply weighted by the sum of the counts (``median``, ``trimmed-mean``)."""
    def reply(arrays, n: float, node: int):
        if not isinstance(arrays, ArrayRecord):
            arrays = ArrayRecord(array_dict={k: Array(np.ascontiguousarray(arrays[k])) for k in ref})
        content = RecordDict({P.ARRAYS: arrays, P.METRICS: MetricRecord({P.NUM_EXAMPLES: float(n)})})
        return Message(content=content, dst_node_id=node, message_type="train")

    def arrays_of(m, v):  # the validated, decoded full model (a partial reply counts as the model it stands for)
        return v.arrays if getattr(v, "arrays", None) is not None else from_record(m.content.array_records[P.ARRAYS])

    if rule.kind == "none":
        return [reply(arrays_of(m, v), v.num_examples, m.metadata.src_node_id) for _, m, v in accepted]
    decoded = [arrays_of(m, v) for _, m, v in accepted]
    if rule.kind == "norm-bound":
        return [reply(clip_update(w, ref, rule.param), v.num_examples, m.metadata.src_node_id)
                for w, (_, m, v) in zip(decoded, accepted)]
    total = sum(v.num_examples for _, _, v in accepted)
    return [reply(combine(rule, decoded, ref), total, 0)]
