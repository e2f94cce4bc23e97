"""Generate personalised ECGs from a checkpoint and write them in PTB-XL's layout (+ .npz + ECG-paper PNGs).

Conditions are either given explicitly (the same SCP labels and demographics for all N ECGs) or drawn from a
real dataset's rows (``like_dataset``: N rows sampled with a seeded RNG, with replacement only when N exceeds
the rows), so the synthetic set reproduces that dataset's label/demographic mix.

Output folder ``out``:
``ptbxl_database.csv`` (PTB-XL columns; ``scp_codes``/``age``/``sex``/``height``/``weight`` = the conditioning
used, likelihood 100 per requested code), ``scp_statements.csv`` (the checkpoint's label codes),
``records100/`` (the generated 100 Hz ECGs, 16-bit WFDB, 1 µV resolution), ``records500/`` (the same ECGs
upsampled ×5 by polyphase filtering, only so the folder satisfies the PTB-XL layout: no new information),
``synthetic.npz`` (``signals`` (N, 12, 1000) mV + the conditions), ``png/<ecg_id>.png`` and ``grid.png``,
``synthesis.json`` (checkpoint, round, sampler settings, seed; callers add ``generate``'s ``weights``: EMA or
global weights).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.signal import resample_poly

from evaluation.plots import plot_ecg, plot_ecg_grid
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from ptbxl.constants import FS_HIGH
from ptbxl.demographics import encode_demographics
from ptbxl.labels import LabelVocab
from ptbxl.layout import read_database
from ptbxl.scp_table import statements_frame
from ptbxl.writer import write_ptbxl_folder
from sssd.checkpoint import load_checkpoint, model_from_checkpoint, preferred_state
from sssd.diffusion import Schedule
from sssd.sampling import SAMPLERS, sample

log = logging.getLogger(__name__)
_SEX = {"male": 0.0, "m": 0.0, "0": 0.0, "female": 1.0, "f": 1.0, "1": 1.0}


@dataclass(frozen=True)
class SamplerSettings:
    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 1.0
    seed: int = 0
    eta: float = 1.0  # DDIM stochasticity: 1 = as noisy as DDPM (fewer rhythm errors, measured), 0 = deterministic
    batch_size: int = 16
    ema: bool = True  # the checkpoint's EMA weights when it has them (server-side EMA), else its global weights

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise FedECGError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise FedECGError("--steps and the batch size must be >= 1")
        if self.sampler.startswith("dpmpp2m") and self.steps < 2:
            raise FedECGError(f"--sampler {self.sampler} needs --steps >= 2 (one model call per step)")
        if not 0.0 <= self.eta <= 1.0:
            raise FedECGError(f"--eta must be in [0, 1], got {self.eta}")
        if not math.isfinite(self.guidance):
            raise FedECGError(f"--guidance must be a finite number, got {self.guidance}")


@dataclass(frozen=True)
class Conditions:
    """One row per ECG: ``scp_codes`` dicts and raw demographics (years, 0 male / 1 female, cm, kg; NaN =
    unknown); ``extra`` carries passthrough columns (e.g. ``site``) from a source dataset."""

    scp_codes: list[dict[str, float]]
    demographics: pd.DataFrame
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.scp_codes)


def parse_sex(value: str | float | None) -> float | None:
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in _SEX:
        raise FedECGError(f"--sex must be female/male (or 1/0), got {value!r}")
    return _SEX[key]


def explicit_conditions(
    n: int,
    labels: Sequence[str] = (),
    age: float | None = None,
    sex: float | None = None,
    height: float | None = None,
    weight: float | None = None,
) -> Conditions:
    """The same labels and demographics for ``n`` ECGs."""
    if n < 1:
        raise FedECGError(f"--n must be >= 1, got {n}")
    codes = {str(c).strip(): 100.0 for c in labels if str(c).strip()}
    demo = pd.DataFrame(
        {"age": [age] * n, "sex": [sex] * n, "height": [height] * n, "weight": [weight] * n}, dtype=float
    )
    return Conditions([dict(codes) for _ in range(n)], demo)


def conditions_like_dataset(root: str | Path, n: int, seed: int = 0,
                            folds: tuple[int, ...] | None = None) -> Conditions:
    """``n`` rows of a PTB-XL-layout folder's metadata (labels, demographics, site), sampled with a seeded
    RNG; ``folds`` restricts the rows to those ``strat_fold`` values (e.g. the training folds)."""
    meta = read_database(root, required=("ecg_id", "scp_codes"))
    if folds is not None and "strat_fold" in meta.columns:
        meta = meta[meta["strat_fold"].isin(folds)]
    if len(meta) == 0:
        raise FedECGError(f"{root}: ptbxl_database.csv has no rows to draw conditions from")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(meta), n, replace=n > len(meta))
    rows = meta.iloc[idx]
    demo = pd.DataFrame(
        {
            c: pd.to_numeric(rows[c], errors="coerce").to_numpy() if c in rows else np.nan
            for c in ("age", "sex", "height", "weight")
        }
    )
    demo.loc[demo["age"] > 89, "age"] = 90.0
    extra = pd.DataFrame(
        {
            "site": rows["site"].to_numpy() if "site" in rows else np.zeros(n),
            "source_ecg_id": rows.index.to_numpy(),
        }
    )
    return Conditions([dict(c) for c in rows["scp_codes"]], demo, extra)


def generate(
    checkpoint: str | Path,
    conditions: Conditions,
    settings: SamplerSettings = SamplerSettings(),
    device=None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Sample one ECG per condition row: ``(N, 12, L)`` float32 mV and the checkpoint's metadata
    (``label_codes``, ``round``, ``model_config``, ``weights``: ``"ema"`` or ``"state_dict"``, the weights
    sampled from, ``base``: the pretrained base the run started from, if recorded). Unknown label codes raise
    FedECGError."""
    device = torch.device(device or "cpu")
    ckpt = load_checkpoint(checkpoint)
    vocab = LabelVocab.from_list(ckpt.get("label_codes") or LabelVocab.default().to_list())
    unknown = sorted({c for codes in conditions.scp_codes for c in codes} - set(vocab.codes))
    if unknown and not len(conditions.extra):
        raise FedECGError(
            f"labels {unknown} are not in the checkpoint's label codes (e.g. {vocab.codes[:5]})"
        )
    labels = vocab.encode_many(conditions.scp_codes)
    demo, mask = encode_demographics(conditions.demographics)
    model, cfg = model_from_checkpoint(ckpt, device, ema=settings.ema)
    _, weights = preferred_state(ckpt, ema=settings.ema)
    schedule = Schedule.from_config(cfg, device)
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    if settings.sampler.startswith("dpmpp2m") and settings.steps > schedule.T:
        raise FedECGError(f"--steps {settings.steps} exceeds the model's T = {schedule.T} diffusion steps "
                          f"(sampler {settings.sampler})")
    out = []
    for start in range(0, len(conditions), settings.batch_size):
        sl = slice(start, start + settings.batch_size)
        x = sample(
            model,
            schedule,
            torch.from_numpy(labels[sl]),
            torch.from_numpy(demo[sl]),
            torch.from_numpy(mask[sl]),
            sampler=settings.sampler,
            steps=settings.steps,
            eta=settings.eta,
            guidance=settings.guidance,
            generator=gen,
        )
        out.append(x.float().cpu().numpy())
        if progress:
            progress(min(start + settings.batch_size, len(conditions)), len(conditions))
    info = {
        "label_codes": list(vocab.codes),
        "round": ckpt.get("round"),
        "model_config": ckpt["model_config"],
        "weights": weights,
        "base": ckpt.get("base"),
    }
    signals = np.concatenate(out).astype(np.float32)
    bad = ~np.isfinite(signals).all(axis=(1, 2))
    if bad.any():
        raise FedECGError(f"checkpoint {checkpoint}: {int(bad.sum())} of {len(signals)} synthetic ECGs are not "
                          "finite (NaN/Inf weights in the checkpoint?); nothing written")
    return signals, info


def write_synthetic_dataset(
    out: str | Path,
    signals: np.ndarray,
    conditions: Conditions,
    label_codes: Sequence[str],
    provenance: dict | None = None,
    fs: int = 100,
    pngs: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the PTB-XL-layout folder described in the module docstring (complete or not at all:
    ``ptbxl.writer.write_ptbxl_folder``). Returns ``out``."""
    out = Path(out)
    if signals.ndim != 3 or signals.shape[1] != 12 or len(signals) != len(conditions):
        raise FedECGError(f"signals {signals.shape} do not match {len(conditions)} conditions x 12 leads")
    meta = _database(conditions)
    rows = list(zip(signals, meta.itertuples(index=False), strict=True))

    def records():  # each ECG at fs and, upsampled, at 500 Hz (records500/ only completes the layout)
        for sig, row in rows:
            yield row.filename_lr, sig, fs
            yield row.filename_hr, _upsample(sig, fs, FS_HIGH), FS_HIGH

    def fill(folder: Path) -> None:  # the arrays, the plots and the provenance beside the records
        labels = np.stack(
            [[1.0 if c in codes else 0.0 for c in label_codes] for codes in conditions.scp_codes]
        )
        demo = conditions.demographics
        np.savez_compressed(
            folder / "synthetic.npz",
            signals=signals.astype(np.float32),
            ecg_ids=meta["ecg_id"].to_numpy(),
            labels=labels.astype(np.float32),
            label_codes=np.array(list(label_codes)),
            **{c: demo[c].to_numpy(dtype=float) for c in ("age", "sex", "height", "weight")},
        )
        titles = [_title(r, codes) for (_, r), codes in zip(rows, conditions.scp_codes, strict=True)]
        if pngs:
            for sig, ecg_id, title in zip(signals, meta["ecg_id"], titles, strict=True):
                plot_ecg(sig, folder / "png" / f"{ecg_id:05d}.png", fs=fs, title=title)
        plot_ecg_grid(signals[:16], folder / "grid.png", titles=titles[:16], fs=fs)
        atomic_write_json(folder / "synthesis.json", {**(provenance or {}), "n": len(conditions), "fs": fs})

    write_ptbxl_folder(out, meta, records(), statements=_statements(label_codes), fill=fill, overwrite=overwrite)
    log.info("wrote %d synthetic ECGs to %s", len(conditions), out)
    return out


def _database(conditions: Conditions) -> pd.DataFrame:
    n = len(conditions)
    ids = np.arange(1, n + 1)
    folder = [f"{(i // 1000) * 1000:05d}" for i in ids]
    demo = conditions.demographics.reset_index(drop=True)
    site = conditions.extra["site"].fillna(0).to_numpy() if "site" in conditions.extra else np.zeros(n)
    meta = pd.DataFrame(
        {
            "ecg_id": ids,
            "patient_id": ids.astype(float),
            "age": demo["age"],
            "sex": demo["sex"],
            "height": demo["height"],
            "weight": demo["weight"],
            "site": site.astype(float),
            "device": "fedecg-sssd",
            "report": "synthetic ECG (fedecg synthesize)",
            "scp_codes": [repr(dict(c)) for c in conditions.scp_codes],
            "strat_fold": (ids - 1) % 10 + 1,
            "filename_lr": [f"records100/{f}/{i:05d}_lr" for f, i in zip(folder, ids, strict=True)],
            "filename_hr": [f"records500/{f}/{i:05d}_hr" for f, i in zip(folder, ids, strict=True)],
        }
    )
    if "source_ecg_id" in conditions.extra:
        meta["source_ecg_id"] = conditions.extra["source_ecg_id"].to_numpy()
    return meta


def _statements(label_codes: Sequence[str]) -> pd.DataFrame:
    table = statements_frame()
    rows = [table.loc[c] if c in table.index else pd.Series({"description": c}, name=c) for c in label_codes]
    return pd.DataFrame(rows, columns=table.columns, index=pd.Index(list(label_codes)))


def _upsample(sig: np.ndarray, fs: int, fs_high: int) -> np.ndarray:
    return resample_poly(sig, fs_high // fs, 1, axis=-1).astype(np.float32)


def _title(row, codes: dict) -> str:
    parts = [f"#{row.ecg_id}", ",".join(codes) or "no label"]
    if row.age == row.age:
        parts.append(f"{row.age:.0f} y")
    if row.sex == row.sex:
        parts.append("F" if row.sex >= 0.5 else "M")
    return "  ".join(parts)


def settings_dict(settings: SamplerSettings) -> dict:
    return asdict(settings)
