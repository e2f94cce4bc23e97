"""Demographic conditioning: age, sex, height, weight with an explicit missing mask.

Normalisation (value = 0 and mask = 0 when missing or implausible):

=========  ======================================  ==================================
field      raw (PTB-XL)                             encoded value
=========  ======================================  ==================================
age        years; PTB-XL codes ages > 89 as 300     (min(age, 90) − 60) / 20
sex        0 = male, 1 = female                     0.0 or 1.0
height     cm (missing for ~68 %)                   (height − 170) / 10,  kept if 100–230
weight     kg (missing for ~57 %)                   (weight − 75) / 15,   kept if 20–250
=========  ======================================  ==================================

Ages above 89 (including the 300 code) become 90. Heights/weights outside the ranges (PTB-XL has a few typos
such as height 6 cm) are treated as missing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ptbxl.constants import DEMOGRAPHIC_FIELDS

AGE_CAP = 90.0
NORMALISATION: dict[str, dict[str, float]] = {
    "age": {"center": 60.0, "scale": 20.0, "min": 0.0, "max": 300.0},
    "sex": {"center": 0.0, "scale": 1.0, "min": 0.0, "max": 1.0},
    "height": {"center": 170.0, "scale": 10.0, "min": 100.0, "max": 230.0},
    "weight": {"center": 75.0, "scale": 15.0, "min": 20.0, "max": 250.0},
}


def normalisation_constants() -> dict[str, dict[str, float]]:
    """A copy of the constants above (stored in checkpoints as ``demographics``)."""
    return {k: dict(v) for k, v in NORMALISATION.items()} | {"age_cap": {"value": AGE_CAP}}


def _encode_field(name: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spec = NORMALISATION[name]
    raw = np.asarray(raw, dtype=np.float64)
    ok = np.isfinite(raw) & (raw >= spec["min"]) & (raw <= spec["max"])
    if name == "sex":
        ok &= np.isin(raw, (0.0, 1.0))
    if name == "age":
        raw = np.minimum(raw, AGE_CAP)
    value = np.where(ok, (raw - spec["center"]) / spec["scale"], 0.0)
    return value.astype(np.float32), ok.astype(np.float32)


def encode_demographics(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(values (N, 4), mask (N, 4)) float32 in ``DEMOGRAPHIC_FIELDS`` order; mask 1 = present."""
    n = len(df)
    values = np.zeros((n, len(DEMOGRAPHIC_FIELDS)), dtype=np.float32)
    mask = np.zeros_like(values)
    for j, name in enumerate(DEMOGRAPHIC_FIELDS):
        raw = (
            pd.to_numeric(df[name], errors="coerce").to_numpy() if name in df.columns else np.full(n, np.nan)
        )
        values[:, j], mask[:, j] = _encode_field(name, raw)
    return values, mask


def encode_one(
    age: float | None = None,
    sex: float | None = None,
    height: float | None = None,
    weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode one person (None = missing): (values (4,), mask (4,)) float32."""
    row = {"age": age, "sex": sex, "height": height, "weight": weight}
    frame = pd.DataFrame([{k: (math.nan if v is None else float(v)) for k, v in row.items()}])
    values, mask = encode_demographics(frame)
    return values[0], mask[0]


def decode_demographics(values: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """Inverse of ``encode_demographics``: raw units (years, 0/1, cm, kg), NaN where the mask is 0.

    Ages come back capped at 90; sex is rounded to 0/1."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    mask = np.atleast_2d(np.asarray(mask, dtype=np.float64))
    out = {}
    for j, name in enumerate(DEMOGRAPHIC_FIELDS):
        spec = NORMALISATION[name]
        raw = values[:, j] * spec["scale"] + spec["center"]
        if name == "sex":
            raw = np.clip(np.round(raw), 0, 1)
        out[name] = np.where(mask[:, j] > 0.5, raw, np.nan)
    return pd.DataFrame(out)
