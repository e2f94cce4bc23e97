"""Which records a node trains on.

- Simulation: Flower gives the node a ``partition-id``; the server's config names the partition manifest, and
  the node reads its client's train / val ecg_ids from it (the manifest is the reproducible split).
- Deployment: the hospital's ``--node-config "data-dir=/path"`` names a PTB-XL-layout folder holding only
  its own records; PTB-XL's strat_fold split applies (1-8 train, 9 validation, 10 held out, never trained on).

Every record is validated as it is loaded (ptbxl.dataset.load_valid_arrays: the folder's sampling rate and
length, PTB-XL's 12 leads, finite samples). A bad record is skipped and named, with its ecg_id and the reason,
in the site's own log only; the reply reports just how many were skipped (``records-invalid``, added by the
egress guard). A site left with fewer than ``train.min_records`` valid training records refuses the round
(fedecg.errors.SiteRefusal: its name, a fixed sentence and the counts reach the server).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg import protocol as P
from fedecg.errors import FedECGError, SiteRefusal
from fedecg.rundir import RunLayout
from ptbxl.constants import TRAIN_FOLDS, VAL_FOLDS
from ptbxl.dataset import load_valid_arrays
from ptbxl.layout import read_database
from ptbxl.partition import Manifest

DEFAULT_MIN_RECORDS = 1

log = logging.getLogger(__name__)
_INVALID: dict[str, int] = {}  # node key → records its last load skipped (read by client.egress)


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
    if "patient_id" not in meta.columns:
        return None
    ids = [int(e) for e in ecg_ids]
    raw = pd.to_numeric(meta.loc[ids, "patient_id"], errors="coerce").to_numpy(dtype=np.float64)
    out = np.where(np.isfinite(raw), raw, -1.0 - np.arange(len(ids)))
    return out.astype(np.int64)


def node_key(node_config: dict, config: dict) -> str:
    """Identifies a node's data: its data-dir (deployment) or manifest + partition-id (simulation)."""
    if P.NODE_DATA_DIR in node_config:
        return f"dir:{node_config[P.NODE_DATA_DIR]}"
    return f"sim:{config.get(P.MANIFEST_PATH)}:{node_config.get(P.NODE_PARTITION_ID)}"


def invalid_record_count(node_config: dict, msg) -> int:
    """How many records this node's last load skipped as invalid (0 if none or unknown)."""
    try:
        config = dict(msg.content.config_records.get(P.CONFIG, {}))
    except Exception:  # noqa: BLE001
        config = {}
    return _INVALID.get(node_key(node_config, config), 0)


def load_site_data(node_config: dict, config: dict) -> SiteData:
    """Load the node's train/val arrays from its node config (deployment) or the manifest (simulation); bad
    records are skipped (module docstring), too few valid training records raise SiteRefusal."""
    if P.NODE_DATA_DIR in node_config:
        site, skipped, n_listed = _from_folder(node_config)
    elif P.NODE_PARTITION_ID in node_config:
        site, skipped, n_listed = _from_manifest(int(node_config[P.NODE_PARTITION_ID]), config)
    else:
        raise _no_node_config()
    for s in skipped:  # named here, in the site's own log; never in a reply
        log.warning("site %s: skipping invalid record ecg_id %s (%s): %s", site.name, s["ecg_id"], s["record"],
                    s["reason"])
    _INVALID[node_key(node_config, config)] = len(skipped)
    n_valid = len(site.train.ecg_ids)
    need = _min_records(config)
    if n_valid < need:
        raise SiteRefusal(
            f"site {site.name}: {n_valid} valid training records of {n_listed} (need {need}); skipped: "
            + ", ".join(f"ecg_id {s['ecg_id']} ({s['reason']})" for s in skipped[:20]),
            site=site.name, public=f"{P.DATA_REFUSAL}: {n_valid} of {n_listed} (train.min_records {need}); "
            f"{len(skipped)} records failed validation", metrics={"records-invalid": float(len(skipped))})
    return site


def _min_records(config: dict) -> int:
    try:
        run = json.loads(str(config[P.RUN_CONFIG_JSON]))
        return max(1, int(run.get("train", {}).get("min_records", DEFAULT_MIN_RECORDS)))
    except (KeyError, TypeError, ValueError):
        return DEFAULT_MIN_RECORDS


def _no_node_config() -> FedECGError:
    return FedECGError(f"node config has neither {P.NODE_DATA_DIR!r} (deployment) nor "
                      f"{P.NODE_PARTITION_ID!r} (simulation): start the SuperNode with "
                      f"--node-config \"{P.NODE_DATA_DIR}=/path/to/site/ptbxl\"")


def _from_manifest(partition_id: int, config: dict) -> tuple[SiteData, list[dict], int]:
    path = config.get(P.MANIFEST_PATH)
    if not path:
        raise FedECGError(f"simulation node {partition_id}: the server sent no {P.MANIFEST_PATH!r}")
    manifest = Manifest.load(Path(str(path)))
    if not 0 <= partition_id < len(manifest.clients):
        raise FedECGError(f"partition-id {partition_id} out of range: the manifest {path} has "
                          f"{len(manifest.clients)} clients (set num-supernodes to match)")
    client = manifest.clients[partition_id]
    root = Path(manifest.dataset)
    state_root = Path(str(config.get(P.SIM_STATE_ROOT) or RunLayout(Path(str(path)).parent).node_state_dir))
    cache = state_root.parent / ".cache"
    name = str(client.client_id)
    meta = read_database(root)
    return _site(name, root, client.train, client.val, meta, cache, state_root / name)


def _site(name, root, train_ids, val_ids, meta, cache, state_dir) -> tuple[SiteData, list[dict], int]:
    train, skipped = load_valid_arrays(root, train_ids, cache_dir=cache, meta=meta)
    val = None
    if val_ids:
        val, skipped_val = load_valid_arrays(root, val_ids, cache_dir=cache, meta=meta)
        skipped = skipped + skipped_val
    return (SiteData(name=name, train=train, val=val, state_dir=state_dir,
                     train_patients=patient_ids(meta, [int(i) for i in train.ecg_ids])), skipped, len(train_ids))


def _from_folder(node_config: dict) -> tuple[SiteData, list[dict], int]:
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
    return _site(name, root, train_ids, val_ids, meta, cache, state_dir)
