"""Lead bookkeeping for evaluation: the 12 PTB-XL lead names and the 8 → 12 lead derivation.

Delegates to ``ptbxl.signals.derive_12_leads`` (Einthoven/Goldberger):
III = II − I, aVR = −(I + II)/2, aVL = I − II/2, aVF = II − I/2 (all in mV).
"""

from __future__ import annotations

import numpy as np

from fedecg.errors import FedECGError

LEADS_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
MODEL_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def to_12_leads(signals: np.ndarray) -> np.ndarray:
    """Return ``(N, 12, L)`` float32 mV from ``(N, 8, L)`` (model view) or ``(N, 12, L)`` (passed through)."""
    x = np.asarray(signals, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] not in (8, 12):
        raise FedECGError(f"ECG array must have shape (N, 8|12, L), got {tuple(np.shape(signals))}")
    if x.shape[1] == 12:
        return x
    from ptbxl.signals import derive_12_leads

    return np.asarray(derive_12_leads(x), dtype=np.float32)


def to_model_view(signals: np.ndarray) -> np.ndarray:
    """``(N, 12, L)`` → ``(N, 8, L)``: leads I, II, V1..V6 (already-8-lead input is passed through)."""
    x = np.asarray(signals, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] not in (8, 12):
        raise FedECGError(f"ECG array must have shape (N, 8|12, L), got {tuple(np.shape(signals))}")
    if x.shape[1] == 8:
        return x
    return x[:, [0, 1, 6, 7, 8, 9, 10, 11]]
