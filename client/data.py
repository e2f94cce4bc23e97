"""Which records a node trains on.

- Simulation: Flower gives the node a ``partition-id``; the server's config names the partition manifest, and
  the node reads its client's train / val ecg_ids from it (the manifest is the reproducible split).
- Deployment: the hospital's ``--node-config "data-dir=/path"`` names a PTB-XL-layout folder holding only
  its own records; PTB-XL's strat_fold split applies (1-8 train, 9 validation, 10 held out, never trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedecg import protocol as P
from fedecg.errors import FedECGError

TRAIN_FOLDS = tuple(range(1, 9))
VAL_FOLDS = (9,)


@dataclass
class SiteData:
    name: str
    train: object  # ptbxl.dataset.ECGArrays
    val: object
    state_dir: Path  # where this node keeps its ledger
    train_patients: np.ndarray | None = None  # patient_id per training record (same order); stays at the site

    def privacy_units(self, unit: str) -> int:
        """Number of privacy units among the training records: distinct patients, or records."""
        if unit == "patient" and self.train_patients is not None:
            return int(len(np.unique(self.train_patients)))
        return int(len(self.train.ecg_ids))


def patient_ids(meta, ecg_ids) -> np.ndarray | None:
    """patient_id per ecg_id from ``ptbxl_database.csv`` (None without the column); a record without one counts
    as its own patient (negative ids, so it never joins a real patient)."""
    import pandas as pd

    if "patient_id" not in meta.columns:
        return None
    ids = [int(e) for e in ecg_ids]
    raw = pd.to_numeric(meta.loc[ids, "patient_id"], errors="coerce").to_numpy(dtype=np.float64)
    out = np.where(np.isfinite(raw), raw, -1.0 - np.arange(len(ids)))
    return out.astype(np.int64)


def load_site_data(node_config: dict, config: dict) -> SiteData:
    """Load the node's train/val arrays from its node config (deployment) or the manifest (simulation)."""
    if P.NODE_DATA_DIR in node_config:
        return _from_folder(node_config)
    if P.NODE_PARTITION_ID in node_config:
        return _from_manifest(int(node_config[P.NODE_PARTITION_ID]), config)
    raise FedECGError(f"node config has neither {P.NODE_DATA_DIR!r} (deployment) nor "
                      f"{P.NODE_PARTITION_ID!r} (simulation): start the SuperNode with "
                      f"--node-config \"{P.NODE_DATA_DIR}=/path/to/site/ptbxl\"")


def _from_manifest(partition_id: int, config: dict) -> SiteData:
    from ptbxl.dataset import load_arrays
    from ptbxl.partition import Manifest

    path = config.get(P.MANIFEST_PATH)
    if not path:
        raise FedECGError(f"simulation node {partition_id}: the server sent no {P.MANIFEST_PATH!r}")
    manifest = Manifest.load(Path(str(path)))
    if not 0 <= partition_id < len(manifest.clients):
        raise FedECGError(f"partition-id {partition_id} out of range: the manifest {path} has "
                          f"{len(manifest.clients)} clients (set num-supernodes to match)")
    client = manifest.clients[partition_id]
    root = Path(manifest.dataset)
    state_root = Path(str(config.get(P.SIM_STATE_ROOT) or Path(str(path)).parent / "node-state"))
    cache = state_root.parent / ".cache"
    name = str(client.client_id)
    from ptbxl.layout import read_database

    meta = read_database(root)
    return SiteData(name=name, train=load_arrays(root, client.train, cache_dir=cache, meta=meta),
                    val=load_arrays(root, client.val, cache_dir=cache, meta=meta) if client.val else None,
                    state_dir=state_root / name, train_patients=patient_ids(meta, client.train))


def _from_folder(node_config: dict) -> SiteData:
    from ptbxl.dataset import load_arrays
    from ptbxl.layout import read_database

    root = Path(str(node_config[P.NODE_DATA_DIR])).expanduser()
    if not root.is_dir():
        raise FedECGError(f"node config {P.NODE_DATA_DIR}={root}: folder not found")
    meta = read_database(root)
    train_ids = [int(i) for i in meta.index[meta["strat_fold"].isin(TRAIN_FOLDS)]]
    val_ids = [int(i) for i in meta.index[meta["strat_fold"].isin(VAL_FOLDS)]]
    if not train_ids:
        raise FedECGError(f"{root}: no training records (strat_fold 1-8) in ptbxl_database.csv")
    state_dir = Path(str(node_config.get(P.NODE_STATE_DIR) or root / ".fedecg"))
    name = str(node_config.get(P.NODE_SITE_NAME) or root.name)
    cache = state_dir / "cache"
    return SiteData(name=name, train=load_arrays(root, train_ids, cache_dir=cache, meta=meta),
                    val=load_arrays(root, val_ids, cache_dir=cache, meta=meta) if val_ids else None,
                    state_dir=state_dir, train_patients=patient_ids(meta, train_ids))
