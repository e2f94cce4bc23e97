"""ECG signals: read a WFDB record in mV, take the model view, derive the 4 dependent limb leads.

Formulas (Einthoven / Goldberger, exact for ideal leads):
    III = II − I,  aVR = −(I + II)/2,  aVL = I − II/2,  aVF = II − I/2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from fedecg.errors import FedECGError
from ptbxl.constants import DURATION_S, FS, FS_HIGH, LEADS_12, MODEL_LEAD_INDEX, N_SAMPLES
from ptbxl.header import is_simple_format16, parse_header, read_format16
from ptbxl.layout import dataset_root

# PhysioNet's folders and what their records must be: (sampling rate in Hz, samples) for 10 s
FOLDER_FORMATS: dict[str, tuple[int, int]] = {
    "records100": (FS, int(round(FS * DURATION_S))),
    "records500": (FS_HIGH, int(round(FS_HIGH * DURATION_S))),
}


def folder_format(filename: str) -> tuple[str, int, int] | None:
    """(folder, Hz, samples) a record named like ``records100/00000/00001_lr`` must have; None elsewhere."""
    folder = Path(filename).parts[0] if Path(filename).parts else ""
    fmt = FOLDER_FORMATS.get(folder)
    return None if fmt is None else (folder, *fmt)


def check_header_format(filename: str, fs: float, sig_len: int) -> str | None:
    """The problem with a header's sampling rate / length for its folder (records100: 100 Hz, 1000 samples;
    records500: 500 Hz, 5000 samples), or None."""
    expected = folder_format(filename)
    if expected is None:
        return None
    folder, rate, n = expected
    if fs != rate:
        return f"header says {fs:g} Hz, but {folder}/ holds {rate} Hz records"
    if sig_len != n:
        return f"header says {sig_len} samples, but {folder}/ records have {n} ({DURATION_S:g} s at {rate} Hz)"
    return None


def read_record(root: str | Path, filename: str) -> np.ndarray:
    """Read one PTB-XL WFDB record (``filename`` relative to ``root``, no extension) as (12, L) float32 mV.

    Leads come in PTB-XL order ``LEADS_12`` (names compared case-insensitively); values equal
    ``wfdb.rdsamp(...)[0].T`` cast to float32 (format-16 records are decoded by ``ptbxl.header``, others by
    ``wfdb``). A record under records100/ or records500/ must have that folder's sampling rate and length
    (``check_header_format``): a 500 Hz or 900-sample header there is refused, not cropped or padded. Raises
    FedECGError naming the record when it is missing, unreadable, of the wrong rate or length, or has other
    leads. Invalid samples (WFDB's −32768) come back as NaN; ``ptbxl.dataset`` refuses them."""
    path = dataset_root(root) / filename
    hea = path.with_name(path.name + ".hea")
    if not hea.is_file():
        raise FedECGError(f"record {filename}: header {hea} not found")
    header = parse_header(hea)
    problem = check_header_format(filename, header.fs, header.sig_len)
    if problem:
        raise FedECGError(f"record {filename}: {problem}")
    names = [str(n).upper() for n in header.sig_name]
    if names != [n.upper() for n in LEADS_12]:
        raise FedECGError(
            f"record {filename}: leads {list(header.sig_name)} are not PTB-XL's {list(LEADS_12)}"
        )
    try:
        if is_simple_format16(header):
            phys = read_format16(header, hea.parent)
        else:  # other WFDB formats: let wfdb decode them
            import wfdb  # heavy: wfdb (~0.4 s, requests/pandas), only for records not in plain format 16

            phys = wfdb.rdrecord(str(path)).p_signal
    except FedECGError as exc:
        raise FedECGError(f"record {filename}: {exc}") from exc
    except Exception as exc:  # wfdb/numpy raise assorted errors on corrupt files
        raise FedECGError(f"record {filename}: cannot read signal: {exc}") from exc
    return np.ascontiguousarray(phys.T, dtype=np.float32)


def model_view(sig12: np.ndarray, fs: int = FS) -> np.ndarray:
    """The 8 model leads (I, II, V1..V6) at 100 Hz, 1000 samples from (..., 12, L) sampled at ``fs`` Hz.

    A 500 Hz input is resampled with a polyphase anti-alias filter (scipy ``resample_poly``); shorter records
    are zero-padded and longer ones cropped at the end to ``N_SAMPLES``. Returns float32."""
    sig12 = np.asarray(sig12)
    if sig12.shape[-2] != len(LEADS_12):
        raise FedECGError(f"model_view expects 12 leads on axis -2, got shape {sig12.shape}")
    x = sig12[..., list(MODEL_LEAD_INDEX), :]
    if fs != FS:
        x = resample_poly(x, FS, fs, axis=-1)
    n = x.shape[-1]
    if n > N_SAMPLES:
        x = x[..., :N_SAMPLES]
    elif n < N_SAMPLES:
        pad = [(0, 0)] * (x.ndim - 1) + [(0, N_SAMPLES - n)]
        x = np.pad(x, pad)
    return np.ascontiguousarray(x, dtype=np.float32)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def derive_12_leads(x8: Any) -> Any:
    """Full 12-lead view (..., 12, L) from the model view (..., 8, L) [I, II, V1..V6]; numpy or torch, any
    batch.

    III = II − I, aVR = −(I + II)/2, aVL = I − II/2, aVF = II − I/2; same dtype/device as the input."""
    if x8.shape[-2] != 8:
        raise FedECGError(f"derive_12_leads expects 8 leads on axis -2, got shape {tuple(x8.shape)}")
    lead_i, lead_ii, chest = x8[..., 0, :], x8[..., 1, :], x8[..., 2:, :]
    limb = [
        lead_i,
        lead_ii,
        lead_ii - lead_i,
        -(lead_i + lead_ii) / 2,
        lead_i - lead_ii / 2,
        lead_ii - lead_i / 2,
    ]
    if _is_torch(x8):
        import torch  # only for a tensor input (torch is loaded then): the numpy path stays torch-free

        return torch.cat([torch.stack(limb, dim=-2), chest], dim=-2)
    return np.concatenate([np.stack(limb, axis=-2), chest], axis=-2)
