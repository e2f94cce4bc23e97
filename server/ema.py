"""Server-side exponential moving average of the global model across rounds (pure numpy, no Flower).

After aggregation in round r (1, 2, ...): ``ema = d_r * ema + (1 - d_r) * global`` with the warm-up of
diffusers' ``EMAModel``, ``d_r = min(ema_decay, (1 + r) / (10 + r))``; the EMA starts as the initial global
weights (the base, when the run has one). Float arrays are updated in float32 (their own dtype); the EMA is
post-processing of the released global models, so it costs no privacy.
"""

from __future__ import annotations

import numpy as np


def ema_decay_at(decay: float, server_round: int) -> float:
    """``min(decay, (1 + r) / (10 + r))`` (the warm-up; ``decay`` 0 gives 0)."""
    if server_round < 1:
        raise ValueError(f"server rounds start at 1, got {server_round}")
    return min(float(decay), (1.0 + server_round) / (10.0 + server_round))


def update_ema(ema: dict[str, np.ndarray], weights: dict[str, np.ndarray], decay: float,
               server_round: int) -> dict[str, np.ndarray]:
    """The EMA after round ``server_round`` (a new dict; inputs untouched). Keys must match."""
    if ema.keys() != weights.keys():
        raise ValueError(f"EMA and weights have different keys: {sorted(set(ema) ^ set(weights))[:3]}")
    d = ema_decay_at(decay, server_round)
    out: dict[str, np.ndarray] = {}
    for k, w in weights.items():
        w = np.asarray(w)
        if not np.issubdtype(w.dtype, np.floating):
            out[k] = w.copy()  # counters and other integer state follow the model
            continue
        dt = w.dtype.type
        e = np.asarray(ema[k], dtype=w.dtype)
        out[k] = (dt(d) * e + (dt(1.0) - dt(d)) * w).astype(w.dtype, copy=False)
    return out
