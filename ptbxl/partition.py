"""Split a PTB-XL metadata table into federated clients and train/val/test, and save it as a JSON manifest.

Partitioners (``PartitionConfig.by``):

* ``site``: one client per recording ``site`` (the hospital-realistic split). Sites with fewer than
  ``min_records`` records form the long tail, handled by ``tail``: ``"pool"`` (default) merges them into one
  client whose ``site`` is the list of pooled sites; ``"drop"`` leaves them out (listed under ``unassigned``).
  Rows without a site are never assigned (listed under ``unassigned["no_site"]``). ``cross_site`` decides what
  happens to the few patients recorded at several sites (46 in PTB-XL): ``"keep"`` (default) leaves every
  record at the site that recorded it, as a real hospital would; because the strat_fold split is
  patient-level, such a patient is still in one split everywhere (never train at one client and holdout at
  another). ``"majority"`` moves all of a patient's records to the site holding most of them (ties: the larger
  site) so no patient is in two clients at all.
* ``iid``: patients shuffled and dealt to ``num_clients`` clients, each patient to the client with the fewest
  records so far (balanced sizes).
* ``dirichlet``: label skew. Each patient gets a primary diagnostic superclass (NORM/MI/STTC/CD/HYP of its
  highest-likelihood diagnostic statement, else OTHER); for every class, client shares ~ Dir(alpha·1_K) split
  that class' patients. Redrawn (up to 100 times) until every client has ``min_records`` records.

Splits: PTB-XL's ``strat_fold`` 1–8 train, 9 val, 10 test, decided per patient (the patient's most common
fold), so no patient is in two splits. iid/dirichlet assign whole patients, so no patient is in two clients.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from ptbxl.constants import SPLITS, split_of_fold
from ptbxl.labels import LabelVocab
from ptbxl.scp_table import SUPERCLASS, SUPERCLASSES

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "fedecg-manifest/1"
PARTITIONERS = ("site", "iid", "dirichlet")
TAIL_POLICIES = ("pool", "drop")
CROSS_SITE_POLICIES = ("keep", "majority")
POOLED_CLIENT_ID = "site-pooled"


@dataclass(frozen=True)
class PartitionConfig:
    """How to partition; saved in the manifest so a run is reproducible from it."""

    by: str = "site"
    num_clients: int = 4
    alpha: float = 0.5
    min_records: int = 1
    tail: str = "pool"
    cross_site: str = "keep"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.by not in PARTITIONERS:
            raise FedECGError(f"partition: by must be one of {PARTITIONERS}, got {self.by!r}")
        if self.tail not in TAIL_POLICIES:
            raise FedECGError(f"partition: tail must be one of {TAIL_POLICIES}, got {self.tail!r}")
        if self.cross_site not in CROSS_SITE_POLICIES:
            raise FedECGError(
                f"partition: cross_site must be one of {CROSS_SITE_POLICIES}, got {self.cross_site!r}"
            )
        if self.by != "site" and self.num_clients < 1:
            raise FedECGError(f"partition: num_clients must be >= 1, got {self.num_clients}")
        if self.alpha <= 0:
            raise FedECGError(f"partition: alpha must be > 0, got {self.alpha}")
        if self.min_records < 0:
            raise FedECGError(f"partition: min_records must be >= 0, got {self.min_records}")


@dataclass(frozen=True)
class ClientPartition:
    """One client's ecg_ids per split plus summaries. ``site``: int, list of ints (pooled) or None
    (iid/dirichlet)."""

    client_id: str
    site: int | list[int] | None
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    label_summary: dict[str, Any] = field(default_factory=dict)
    demographic_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "total": self.n_records,
        }

    @property
    def n_records(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)

    def ecg_ids(self, split: str | None = None) -> list[int]:
        """ecg_ids of one split, or of all splits (train, val, test order) when ``split`` is None."""
        if split is None:
            return [*self.train, *self.val, *self.test]
        if split not in SPLITS:
            raise FedECGError(f"unknown split {split!r} (expected one of {SPLITS})")
        return list(getattr(self, split))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(train=list(self.train), val=list(self.val), test=list(self.test), counts=self.counts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientPartition:
        try:
            return cls(
                client_id=str(d["client_id"]),
                site=d.get("site"),
                train=tuple(int(i) for i in d["train"]),
                val=tuple(int(i) for i in d["val"]),
                test=tuple(int(i) for i in d["test"]),
                label_summary=dict(d.get("label_summary", {})),
                demographic_summary=dict(d.get("demographic_summary", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FedECGError(f"manifest client entry is malformed ({exc!r})") from exc


@dataclass(frozen=True)
class Manifest:
    """The partition of a dataset into clients; JSON round trip via ``save``/``load``."""

    clients: tuple[ClientPartition, ...]
    config: PartitionConfig
    label_codes: tuple[str, ...]
    dataset: str = ""
    unassigned: dict[str, list[int]] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT

    def client(self, client_id: str) -> ClientPartition:
        for c in self.clients:
            if c.client_id == client_id:
                return c
        raise FedECGError(
            f"manifest has no client {client_id!r} (clients: {[c.client_id for c in self.clients]})"
        )

    @property
    def client_ids(self) -> list[str]:
        return [c.client_id for c in self.clients]

    def ecg_ids(self, split: str | None = None) -> list[int]:
        """All assigned ecg_ids (of one split), client by client."""
        return [i for c in self.clients for i in c.ecg_ids(split)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "dataset": self.dataset,
            "config": asdict(self.config),
            "label_codes": list(self.label_codes),
            "unassigned": {k: list(v) for k, v in self.unassigned.items()},
            "clients": [c.to_dict() for c in self.clients],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise FedECGError(f"not a partition manifest (format must be {MANIFEST_FORMAT!r})")
        try:
            return cls(
                clients=tuple(ClientPartition.from_dict(c) for c in d["clients"]),
                config=PartitionConfig(**d["config"]),
                label_codes=tuple(d["label_codes"]),
                dataset=str(d.get("dataset", "")),
                unassigned={k: [int(i) for i in v] for k, v in d.get("unassigned", {}).items()},
            )
        except (KeyError, TypeError) as exc:
            raise FedECGError(f"partition manifest is malformed ({exc!r})") from exc

    def save(self, path: str | Path) -> Path:
        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FedECGError(f"{path}: manifest not found") from exc
        except json.JSONDecodeError as exc:
            raise FedECGError(f"{path}: manifest is not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(data)
        except FedECGError as exc:
            raise FedECGError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------- helpers


def patient_splits(meta: pd.DataFrame) -> pd.Series:
    """Split per record, decided per patient: the patient's most common strat_fold (ties → the higher
    fold)."""
    folds = meta.groupby("patient_id")["strat_fold"].agg(
        lambda s: max(Counter(s.tolist()).items(), key=lambda kv: (kv[1], kv[0]))[0]
    )
    n_mixed = int((meta.groupby("patient_id")["strat_fold"].nunique() > 1).sum())
    if n_mixed:
        log.warning(
            "%d patient(s) have records in several strat_folds; using each patient's most common fold",
            n_mixed,
        )
    return meta["patient_id"].map(folds).map(split_of_fold)


def primary_superclass(scp_codes: dict[str, float]) -> str:
    """Superclass of the highest-likelihood diagnostic statement (NORM/MI/STTC/CD/HYP), else "OTHER"."""
    diag = [(lik, code) for code, lik in scp_codes.items() if code in SUPERCLASS]
    return SUPERCLASS[max(diag)[1]] if diag else "OTHER"


def label_summary(meta: pd.DataFrame, vocab: LabelVocab) -> dict[str, Any]:
    codes = Counter(c for d in meta["scp_codes"] for c in d)
    supers = Counter(s for d in meta["scp_codes"] for s in {SUPERCLASS[c] for c in d if c in SUPERCLASS})
    return {
        "superclass": {s: int(supers.get(s, 0)) for s in SUPERCLASSES},
        "codes": {c: int(codes[c]) for c in vocab.codes if codes.get(c)},
    }


def demographic_summary(meta: pd.DataFrame) -> dict[str, Any]:
    def stat(x: pd.Series, fn) -> float | None:
        x = x.dropna()
        return round(float(fn(x)), 2) if len(x) else None

    age = meta["age"].where(meta["age"] <= 300).clip(upper=90)
    return {
        "n": int(len(meta)),
        "age_mean": stat(age, np.mean),
        "age_std": stat(age, np.std),
        "female_frac": stat(meta["sex"], np.mean),
        "height_present": stat(meta["height"].notna(), np.mean),
        "weight_present": stat(meta["weight"].notna(), np.mean),
    }


def _client(
    meta: pd.DataFrame, ids: list[int], client_id: str, site: Any, splits: pd.Series, vocab: LabelVocab
) -> ClientPartition:
    ids = sorted(int(i) for i in ids)
    sub = meta.loc[ids]
    by_split = {s: tuple(int(i) for i in sub.index[splits.loc[ids].to_numpy() == s]) for s in SPLITS}
    return ClientPartition(
        client_id=client_id,
        site=site,
        **by_split,
        label_summary=label_summary(sub, vocab),
        demographic_summary=demographic_summary(sub),
    )


def _site_groups(meta: pd.DataFrame, cfg: PartitionConfig) -> tuple[dict[int, list[int]], list[int]]:
    has_site = meta["site"].notna()
    no_site = [int(i) for i in meta.index[~has_site]]
    site = meta["site"].copy()
    if cfg.cross_site == "majority":
        sized = meta.loc[has_site, "site"].value_counts()

        def pick(s: pd.Series) -> float:
            counts = s.dropna().value_counts()
            if counts.empty:
                return np.nan
            best = counts[counts == counts.max()].index
            return max(best, key=lambda v: (sized[v], -v))

        site = meta["patient_id"].map(meta.groupby("patient_id")["site"].agg(pick))
        no_site = [int(i) for i in meta.index[site.isna()]]
    groups: dict[int, list[int]] = {}
    for ecg_id, s in site.dropna().items():
        groups.setdefault(int(s), []).append(int(ecg_id))
    return dict(sorted(groups.items())), no_site


def _by_site(meta, cfg, splits, vocab) -> tuple[list[ClientPartition], dict[str, list[int]]]:
    groups, no_site = _site_groups(meta, cfg)
    clients, tail_sites, tail_ids = [], [], []
    for site, ids in groups.items():
        if len(ids) >= cfg.min_records:
            clients.append(_client(meta, ids, f"site-{site}", site, splits, vocab))
        else:
            tail_sites.append(site)
            tail_ids.extend(ids)
    unassigned = {"no_site": sorted(no_site)}
    if tail_ids and cfg.tail == "pool":
        clients.append(_client(meta, tail_ids, POOLED_CLIENT_ID, tail_sites, splits, vocab))
    elif tail_ids:
        unassigned["dropped"] = sorted(tail_ids)
    return clients, unassigned


def _patients(meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    counts = meta.groupby("patient_id").size()
    return counts.index.to_numpy(), counts.to_numpy()


def _assign_iid(meta, cfg) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    pids, sizes = _patients(meta)
    order = rng.permutation(len(pids))
    load = np.zeros(cfg.num_clients, dtype=np.int64)
    owner = np.empty(len(pids), dtype=np.int64)
    for k in order:
        c = int(np.argmin(load))
        owner[k] = c
        load[c] += sizes[k]
    return [pids[owner == c] for c in range(cfg.num_clients)]


def _assign_dirichlet(meta, cfg) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    pids, sizes = _patients(meta)
    size_of = dict(zip(pids, sizes, strict=False))
    first = meta.reset_index().groupby("patient_id").first()
    cls = first.loc[pids, "scp_codes"].map(primary_superclass).to_numpy()
    for _attempt in range(100):
        parts: list[list[int]] = [[] for _ in range(cfg.num_clients)]
        for c in sorted(set(cls)):
            members = rng.permutation(pids[cls == c])
            shares = rng.dirichlet(np.full(cfg.num_clients, cfg.alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).round().astype(int)
            for k, chunk in enumerate(np.split(members, cuts)):
                parts[k].extend(chunk.tolist())
        loads = [sum(size_of[p] for p in part) for part in parts]
        if min(loads) >= max(cfg.min_records, 1):
            return [np.array(p, dtype=np.int64) for p in parts]
    raise FedECGError(
        f"dirichlet partition: no draw in 100 gave every one of {cfg.num_clients} clients "
        f">= {max(cfg.min_records, 1)} records (alpha={cfg.alpha}); lower num_clients or raise alpha"
    )


def partition_dataset(
    meta: pd.DataFrame,
    config: PartitionConfig | None = None,
    *,
    vocab: LabelVocab | None = None,
    dataset: str | Path = "",
    **overrides: Any,
) -> Manifest:
    """Partition ``meta`` (``read_database`` output) into clients; see the module docstring for the policies.

    ``config`` or keyword overrides (``by="dirichlet", alpha=0.3, ...``) choose the partitioner. ``vocab``
    fixes the label order stored in the manifest (default: PTB-XL's 71 codes)."""
    cfg = PartitionConfig(**{**(asdict(config) if config else {}), **overrides})
    vocab = vocab or LabelVocab.default()
    missing = [
        c
        for c in ("patient_id", "strat_fold", "scp_codes", "site", "age", "sex", "height", "weight")
        if c not in meta.columns
    ]
    if missing:
        raise FedECGError(f"partition: metadata lacks column(s) {', '.join(missing)}")
    splits = patient_splits(meta)
    if cfg.by == "site":
        clients, unassigned = _by_site(meta, cfg, splits, vocab)
    else:
        groups = _assign_iid(meta, cfg) if cfg.by == "iid" else _assign_dirichlet(meta, cfg)
        clients, unassigned = [], {}
        for k, pids in enumerate(groups):
            ids = meta.index[meta["patient_id"].isin(pids)].tolist()
            clients.append(_client(meta, ids, f"client-{k}", None, splits, vocab))
    if not clients:
        raise FedECGError(f"partition by {cfg.by}: no client has >= {cfg.min_records} records")
    return Manifest(
        clients=tuple(clients),
        config=cfg,
        label_codes=vocab.codes,
        dataset=str(dataset),
        unassigned=unassigned,
    )
