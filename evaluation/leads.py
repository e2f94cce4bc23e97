"""Lead bookkeeping for evaluation: 8- or 12-lead arrays to the 12-lead view and to the model view.

The lead names and order (``ptbxl.constants.LEADS_12``) and the derivation (``ptbxl.signals.derive_12_leads``)
belong to the data layer (Einthoven/Goldberger):
III = II − I, aVR = −(I + II)/2, aVL = I − II/2, aVF = II − I/2 (all in mV).
"""

from __future__ import annotations

import numpy as np

from fedecg.errors import FedECGError
from ptbxl.constants import MODEL_LEAD_INDEX
from ptbxl.signals import derive_12_leads


def to_12_leads(signals: np.ndarray) -> np.ndarray:
    """Return ``(N, 12, L)`` float32 mV from ``(N, 8, L)`` (model view) or ``(N, 12, L)`` (passed through)."""
    x = np.asarray(signals, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] not in (8, 12):
        raise FedECGError(f"ECG array must have shape (N, 8|12, L), got {tuple(np.shape(signals))}")
    if x.shape[1] == 12:
        return x
    return np.asarray(derive_12_leads(x), dtype=np.float32)


def to_model_view(signals: np.ndarray) -> np.ndarray:
    """``(N, 12, L)`` → ``(N, 8, L)``: leads I, II, V1..V6 (already-8-lead input is passed through)."""
    x = np.asarray(signals, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] not in (8, 12):
        raise FedECGError(f"ECG array must have shape (N, 8|12, L), got {tuple(np.shape(signals))}")
    if x.shape[1] == 8:
        return x
    return x[:, list(MODEL_LEAD_INDEX)]
