"""Public pretraining corpora as in-memory arrays (the same ``ECGArrays`` the sites train on).

* ``synthetic_corpus(n_records, seed)``: ECGs from the built-in cardiac-dipole generator (``ptbxl.synth``),
  with PTB-XL-like labels and demographics (``ptbxl.demo.demo_metadata``), generated at 500 Hz and resampled
  to 100 Hz exactly as the demo dataset is. Nothing is downloaded; the corpus is a pure function of
  ``(n_records, seed)``, so the records that trained a base can be regenerated for an audit. The default seed
  differs from every seed the demo data and the tests use, so no record of the base's corpus is any
  simulated hospital's record.
* ``folder_corpus(root, folds)``: the training folds of a PTB-XL-layout folder (e.g. PTB-XL itself, CC BY 4.0).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fedecg.errors import FedECGError
from ptbxl.constants import TRAIN_FOLDS
from ptbxl.dataset import ECGArrays, load_arrays
from ptbxl.demo import GENERATOR_VERSION, demo_metadata, synthesize_records
from ptbxl.demographics import encode_demographics
from ptbxl.labels import LabelVocab
from ptbxl.layout import read_database
from ptbxl.signals import derive_12_leads, model_view

log = logging.getLogger(__name__)

# The base's corpus seed: not 0 (the demo dataset) nor any small integer the tests use.
PRETRAIN_CORPUS_SEED = 20_261_202
DEFAULT_CORPUS_RECORDS = 16_000


@dataclass(frozen=True)
class CorpusInfo:
    """Where a corpus came from (goes into the model card)."""

    source: str  # "synthetic" | "folder"
    description: str
    licence: str
    n_records: int
    seed: int | None = None
    root: str | None = None
    folds: tuple[int, ...] = ()
    ecg_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        out = {"source": self.source, "description": self.description, "licence": self.licence,
               "n_records": self.n_records}
        if self.seed is not None:
            out["generator_seed"] = self.seed
            out["generator"] = "ptbxl.synth (cardiac dipole) via ptbxl.demo.synthesize_records"
            out["generator_version"] = GENERATOR_VERSION
        if self.root is not None:
            out["root"] = self.root
            out["folds"] = list(self.folds)
            out["ecg_ids"] = list(self.ecg_ids)
        return out


def synthetic_corpus(n_records: int = DEFAULT_CORPUS_RECORDS, seed: int = PRETRAIN_CORPUS_SEED,
                     progress: bool = False) -> tuple[ECGArrays, CorpusInfo]:
    """``n_records`` synthetic ECGs (model view, mV) with labels and demographics, deterministic in ``seed``."""
    if n_records < 1:
        raise FedECGError(f"pretraining corpus: need at least 1 record, got {n_records}")
    rng = np.random.default_rng(seed)
    meta = demo_metadata(n_records, 1, rng)
    x = np.empty((len(meta), 8, 1000), dtype=np.float32)
    records = synthesize_records(meta, seed, high_rate=False)
    if progress:
        records = tqdm(records, total=len(meta), desc="synthetic corpus", unit="ECG", mininterval=1.0)
    for i, (_, lo12) in enumerate(records):
        x[i] = model_view(lo12)
    demo, mask = encode_demographics(meta)
    labels = LabelVocab.default().encode_many(meta.attrs["codes"])
    arrays = ECGArrays(x=x, labels=labels, demo=demo, demo_mask=mask,
                       ecg_ids=meta["ecg_id"].to_numpy(dtype=np.int64))
    info = CorpusInfo(source="synthetic", n_records=len(meta), seed=seed, licence="Apache-2.0 (generated)",
                      description=f"{len(meta)} synthetic 12-lead ECGs from the built-in cardiac-dipole "
                                  f"generator, seed {seed} (no real patient data)")
    return arrays, info


def folder_corpus(root: str | Path, folds: Sequence[int] = TRAIN_FOLDS,
                  cache_dir: str | Path | None = None) -> tuple[ECGArrays, CorpusInfo]:
    """The records of ``folds`` (PTB-XL's training folds by default) of a PTB-XL-layout folder."""
    root = Path(root)
    meta = read_database(root)
    ids = [int(e) for e in meta.index[meta["strat_fold"].isin(list(folds))]]
    if not ids:
        raise FedECGError(f"{root}: no records in folds {list(folds)}")
    arrays = load_arrays(root, ids, cache_dir=cache_dir, meta=meta)
    info = CorpusInfo(source="folder", root=str(root.resolve()), folds=tuple(int(f) for f in folds),
                      ecg_ids=tuple(ids), n_records=len(ids), licence="as the folder's (PTB-XL: CC BY 4.0)",
                      description=f"{len(ids)} records of folds {list(folds)} of {root}")
    return arrays, info


def held_out_reference(n: int = 256, seed: int = PRETRAIN_CORPUS_SEED + 1) -> np.ndarray:
    """(n, 12, 1000) mV synthetic ECGs from a seed disjoint from the corpus: the realism reference."""
    arrays, _ = synthetic_corpus(n, seed)
    return np.asarray(derive_12_leads(np.asarray(arrays.x)), dtype=np.float32)
