"""A small, fast reader for WFDB headers and format-16 signal files (what PTB-XL uses).

``wfdb.rdheader`` spends ~10-30 ms per header (it parses through pandas); checking or loading 21,799 × 2
PTB-XL records needs something quicker. ``parse_header`` follows the WFDB header spec for the fields we use
and ``read_format16`` returns exactly ``wfdb.rdsamp``'s physical values ((digital − baseline) / gain,
float64). Anything unusual (other formats, multi-file or multi-segment records) is left to ``wfdb``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedecg.errors import FedECGError

_GAIN = re.compile(r"^(?P<gain>[-+0-9.eE]+)(?:\((?P<baseline>[-+0-9]+)\))?(?:/(?P<units>\S+))?$")
_FMT = re.compile(r"^(?P<fmt>\d+)(?:x\d+)?(?::\d+)?(?:\+(?P<offset>\d+))?$")


@dataclass(frozen=True)
class Header:
    record_name: str
    n_sig: int
    fs: float
    sig_len: int
    file_name: tuple[str, ...]
    fmt: tuple[str, ...]
    byte_offset: tuple[int, ...]
    adc_gain: tuple[float, ...]
    baseline: tuple[int, ...]
    units: tuple[str, ...]
    sig_name: tuple[str, ...]


def parse_header(path: str | Path) -> Header:
    """Parse a ``.hea`` file (single-segment records). FedECGError naming the file on anything malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except UnicodeDecodeError as exc:
        raise FedECGError(f"{path}: header is not ASCII text") from exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise FedECGError(f"{path}: empty header")
    rec = lines[0].split()
    try:
        name, n_sig = rec[0], int(rec[1])
        fs = float(rec[2].split("/")[0].split("(")[0]) if len(rec) > 2 else 250.0
        sig_len = int(rec[3]) if len(rec) > 3 else 0
    except (IndexError, ValueError) as exc:
        raise FedECGError(f"{path}: malformed record line {lines[0]!r}") from exc
    if "/" in name:
        raise FedECGError(f"{path}: multi-segment records are not supported")
    sig_lines = lines[1 : 1 + n_sig]
    if len(sig_lines) != n_sig:
        raise FedECGError(f"{path}: header declares {n_sig} signals but has {len(sig_lines)} signal lines")
    files, fmts, offsets, gains, baselines, units, names = [], [], [], [], [], [], []
    for ln in sig_lines:
        parts = ln.split(maxsplit=8)
        try:
            fm = _FMT.match(parts[1])
            gm = _GAIN.match(parts[2]) if len(parts) > 2 else None
            if fm is None or (len(parts) > 2 and gm is None):
                raise ValueError(ln)
            gain = float(gm["gain"]) if gm else 200.0
            adc_zero = int(parts[4]) if len(parts) > 4 else 0
            base = int(gm["baseline"]) if gm and gm["baseline"] is not None else adc_zero
        except (IndexError, ValueError) as exc:
            raise FedECGError(f"{path}: malformed signal line {ln!r}") from exc
        files.append(parts[0])
        fmts.append(fm["fmt"])
        offsets.append(int(fm["offset"] or 0))
        gains.append(gain if gain != 0 else 200.0)
        baselines.append(base)
        units.append(gm["units"] if gm and gm["units"] else "mV")
        names.append(parts[8] if len(parts) > 8 else "")
    return Header(
        name,
        n_sig,
        fs,
        sig_len,
        tuple(files),
        tuple(fmts),
        tuple(offsets),
        tuple(gains),
        tuple(baselines),
        tuple(units),
        tuple(names),
    )


def is_simple_format16(h: Header) -> bool:
    """True when all signals are interleaved 16-bit samples in one file starting at byte 0."""
    return len(set(h.file_name)) == 1 and set(h.fmt) == {"16"} and set(h.byte_offset) == {0} and h.sig_len > 0


def read_format16(h: Header, folder: Path) -> np.ndarray:
    """Physical signal (sig_len, n_sig) float64 = (digital − baseline) / gain, as ``wfdb.rdsamp`` returns.

    Digital −32768 is WFDB's "invalid sample" and becomes NaN, as in wfdb."""
    dat = folder / h.file_name[0]
    expected = h.sig_len * h.n_sig
    digital = np.fromfile(dat, dtype="<i2", count=expected)
    if digital.size != expected:
        raise FedECGError(f"{dat}: truncated: {digital.size * 2} bytes, expected {expected * 2}")
    digital = digital.reshape(h.sig_len, h.n_sig)
    phys = (digital - np.asarray(h.baseline, dtype=np.float64)) / np.asarray(h.adc_gain, dtype=np.float64)
    invalid = digital == -32768
    if invalid.any():
        phys[invalid] = np.nan
    return phys


def write_format16(
    folder: str | Path,
    record_name: str,
    digital: np.ndarray,
    fs: int,
    sig_name: list[str] | tuple[str, ...],
    adc_gain: float = 1000.0,
    units: str = "mV",
) -> None:
    """Write a record as PTB-XL does: ``<name>.hea`` + ``<name>.dat`` (interleaved little-endian int16).

    ``digital`` is (sig_len, n_sig) int16; header lines carry gain, baseline 0, resolution 16, initial value
    and the WFDB checksum (sum of samples mod 65536), e.g. ``00001_lr.dat 16 1000.0(0)/mV 16 0 -119 1508 0
    I``."""
    folder = Path(folder)
    digital = np.asarray(digital)
    if digital.dtype != np.int16 or digital.ndim != 2 or digital.shape[1] != len(sig_name):
        raise FedECGError(
            f"write_format16: need (sig_len, {len(sig_name)}) int16, got {digital.shape} {digital.dtype}"
        )
    n_len, n_sig = digital.shape
    checksums = (digital.astype(np.int64).sum(axis=0) % 65536).tolist()
    lines = [f"{record_name} {n_sig} {fs} {n_len}"]
    for j, name in enumerate(sig_name):
        lines.append(
            f"{record_name}.dat 16 {adc_gain:.1f}(0)/{units} 16 0 {int(digital[0, j])} "
            f"{checksums[j]} 0 {name}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    digital.astype("<i2").tofile(folder / f"{record_name}.dat")
    (folder / f"{record_name}.hea").write_text("\n".join(lines) + "\n", encoding="ascii")
