"""Inputs of the memorization audit: training/holdout arrays from a run's manifest, synthetic ECGs from a
folder/.npz or from the run's latest checkpoint. All signals leave here as model-view arrays
(N, 8, 1000) mV."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedecg.errors import FedECGError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInputs:
    """What the audit needs from a run directory."""

    run_dir: Path
    dataset: Path  # the PTB-XL-layout folder the manifest partitioned
    train_ids: tuple[int, ...]  # union of the clients' train ids
    test_ids: tuple[int, ...]  # union of the clients' test ids (default holdout)
    site_of_id: dict[int, str]  # ecg_id → client_id (train records)
    checkpoint: Path | None  # checkpoints/latest.pt when present


def read_run(run_dir: str | Path) -> RunInputs:
    """Parse ``RUN_DIR/manifest.json`` (and find ``checkpoints/latest.pt``)."""
    from ptbxl.partition import Manifest

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FedECGError(f"{run_dir}: run directory not found")
    manifest = Manifest.load(run_dir / "manifest.json")
    dataset = Path(manifest.dataset)
    if not manifest.dataset or not dataset.is_dir():
        raise FedECGError(f"{run_dir / 'manifest.json'}: dataset folder {manifest.dataset!r} not found")
    site_of = {int(i): c.client_id for c in manifest.clients for i in c.train}
    ckpt = run_dir / "checkpoints" / "latest.pt"
    if not ckpt.is_file():
        rounds = sorted((run_dir / "checkpoints").glob("round-*.pt"))
        ckpt = rounds[-1] if rounds else None
    return RunInputs(run_dir, dataset, tuple(manifest.ecg_ids("train")), tuple(manifest.ecg_ids("test")), site_of, ckpt)


def load_records(root: str | Path, ecg_ids=None, cache_dir: str | Path | None = None):
    """``ptbxl.dataset.load_arrays`` (x, labels, demographics, ecg_ids) of a PTB-XL-layout folder."""
    from ptbxl.dataset import load_arrays

    return load_arrays(root, ecg_ids, cache_dir)


def load_holdout(path: str | Path | None, run: RunInputs, cache_dir: str | Path | None = None):
    """Holdout records: the manifest's test fold when ``path`` is None or is the run's own dataset folder
    (never its training records), else every record of the folder at ``path`` except records that are the
    run's training records (same ecg_id and same file name as in the run's dataset; logged)."""
    from ptbxl.layout import read_database

    if path is None or Path(path).resolve() == run.dataset.resolve():
        if not run.test_ids:
            raise FedECGError(f"{run.run_dir}: the manifest has no test records to use as holdout; pass --holdout")
        return load_records(run.dataset, list(run.test_ids), cache_dir)
    meta = read_database(path)
    train = set(run.train_ids)
    suspects = [int(i) for i in meta.index if int(i) in train]
    if suspects:
        run_meta = read_database(run.dataset)
        same = {
            i for i in suspects if i in run_meta.index and run_meta.at[i, "filename_lr"] == meta.at[i, "filename_lr"]
        }
        if same:
            log.warning("holdout %s: dropping %d records that are training records of the run", path, len(same))
        keep = [int(i) for i in meta.index if int(i) not in same]
        if not keep:
            raise FedECGError(f"holdout {path}: every record is a training record of the run")
        return load_records(path, keep, cache_dir)
    return load_records(path, None, cache_dir)


def load_synthetic(path: str | Path) -> np.ndarray:
    """Synthetic ECGs from a ``.npz`` (key ``signals``/``x`` or its only array; (N, 12, L) or (N, 8, L) mV)
    or a PTB-XL-layout folder (records100/ via ``ptbxl.dataset``). Returns (N, 8, 1000) float32."""
    path = Path(path)
    if path.is_dir():
        npz = path / "synthetic.npz"
        if not (path / "ptbxl_database.csv").is_file() and npz.is_file():
            path = npz
        else:
            return np.asarray(load_records(path).x, dtype=np.float32)
    if not path.is_file():
        raise FedECGError(f"{path}: synthetic ECGs not found (a .npz or a PTB-XL-layout folder)")
    try:
        with np.load(path) as data:
            keys = list(data.keys())
            key = next((k for k in ("signals", "x") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise FedECGError(f"{path}: no 'signals' or 'x' array (keys: {keys})")
            x = np.asarray(data[key], dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise FedECGError(f"{path}: cannot read .npz: {exc}") from exc
    return as_model_view(x, str(path))


def as_model_view(x: np.ndarray, source: str = "signals") -> np.ndarray:
    """(N, 12, L) → the 8 model leads; (N, 8, L) unchanged; anything else is an error."""
    from ptbxl.constants import MODEL_LEAD_INDEX

    if x.ndim != 3 or x.shape[1] not in (8, 12):
        raise FedECGError(f"{source}: expected (N, 8|12, samples) ECGs, got shape {x.shape}")
    if x.shape[1] == 12:
        x = x[:, list(MODEL_LEAD_INDEX)]
    if not np.isfinite(x).all():
        raise FedECGError(f"{source}: contains NaN or infinite values")
    return np.ascontiguousarray(x, dtype=np.float32)


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu"):
    """(model, schedule, model config) of a checkpoint (EMA weights when present)."""
    from sssd.checkpoint import build_model, load_checkpoint
    from sssd.diffusion import Schedule

    ckpt = load_checkpoint(checkpoint)
    model, cfg = build_model(ckpt, device)
    return model, Schedule.from_config(cfg, device), cfg


def synthesize_like(
    model,
    schedule,
    train,
    n: int,
    seed: int = 0,
    steps: int = 50,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """N ECGs (N, 8, 1000) mV sampled with DDIM for conditions drawn (with replacement, seeded) from the
    training records' labels/demographics, i.e. the run's label/demographic mix. Returns (signals, rows
    of ``train`` whose conditions were used)."""
    from sssd.sampling import sample

    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(train), n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for b0 in range(0, n, batch_size):
        r = rows[b0 : b0 + batch_size]
        lab, dem, msk = (
            torch.as_tensor(np.asarray(a)[r], dtype=torch.float32) for a in (train.labels, train.demo, train.demo_mask)
        )
        x = sample(model, schedule, lab, dem, msk, sampler="ddim", steps=steps, generator=gen, return_model_view=True)
        out.append(x.float().cpu().numpy())
        log.info("synthesized %d/%d", min(b0 + batch_size, n), n)
    return np.concatenate(out).astype(np.float32), rows
