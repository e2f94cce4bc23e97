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
from fedecg.rundir import RunLayout

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

    layout = RunLayout(run_dir)
    run_dir = layout.path
    if not run_dir.is_dir():
        raise FedECGError(f"{run_dir}: run directory not found")
    manifest = Manifest.load(layout.manifest_path)
    dataset = Path(manifest.dataset)
    if not manifest.dataset or not dataset.is_dir():
        raise FedECGError(f"{layout.manifest_path}: dataset folder {manifest.dataset!r} not found")
    site_of = {int(i): c.client_id for c in manifest.clients for i in c.train}
    ckpt = layout.latest_checkpoint
    if not ckpt.is_file():
        rounds = layout.round_checkpoints()
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


def content_hashes(x: np.ndarray) -> list[str]:
    """Per record, the SHA-256 of its signal quantised to PTB-XL's 1 µV resolution (``np.round(x * 1000)`` as
    int32 bytes): equal for the same recording whatever its ecg_id or file name."""
    import hashlib

    out = []
    for row in x:
        q = np.round(np.asarray(row, dtype=np.float64) * 1000.0).astype(np.int32)
        out.append(hashlib.sha256(q.tobytes()).hexdigest())
    return out


def check_holdout_unseen(train, hold, source: str, shown: int = 20) -> None:
    """Refuse a holdout holding any of the run's training records, recognised by content (``content_hashes``),
    not by ecg_id: FedECGError naming each such holdout record and the training record it is."""
    by_hash = {}
    for h, ecg_id in zip(content_hashes(np.asarray(train.x)), np.asarray(train.ecg_ids), strict=True):
        by_hash.setdefault(h, int(ecg_id))
    seen = [(int(e), by_hash[h]) for h, e in zip(content_hashes(np.asarray(hold.x)), np.asarray(hold.ecg_ids),
                                                   strict=True) if h in by_hash]
    if seen:
        pairs = ", ".join(f"holdout ecg_id {h} = training ecg_id {t}" for h, t in seen[:shown])
        more = f" and {len(seen) - shown} more" if len(seen) > shown else ""
        raise FedECGError(f"holdout {source}: {len(seen)} of its {len(hold.ecg_ids)} records are training records of "
                          f"the run (identical signals): {pairs}{more}. A holdout must be unseen by the generator: "
                          "remove these records or use another holdout")


def holdout_patients(run: RunInputs, hold, holdout: str | Path | None, shown: int = 10) -> dict:
    """Refuse a holdout that shares a *patient* with the run's training records (a patient's other ECG is not
    unseen data: the generator may have learnt that patient), by ``patient_id`` in the two folders'
    ptbxl_database.csv. Returns the audit's statement ``{"patient_disjoint": True, "holdout_patients",
    "training_patients"}``; without a patient_id column on either side, ``patient_disjoint`` is None (unknown)."""
    from ptbxl.layout import read_database

    run_meta = read_database(run.dataset)
    hold_meta = run_meta if holdout is None or Path(holdout).resolve() == run.dataset.resolve() \
        else read_database(holdout)
    if "patient_id" not in run_meta.columns or "patient_id" not in hold_meta.columns:
        return {"patient_disjoint": None, "note": "no patient_id column: patient overlap not checked"}
    ids = [int(i) for i in np.asarray(hold.ecg_ids)]
    train_p = set(run_meta.loc[[i for i in run.train_ids if i in run_meta.index], "patient_id"].dropna().tolist())
    hold_p = hold_meta.loc[[i for i in ids if i in hold_meta.index], "patient_id"]
    shared = sorted({(int(e), p) for e, p in hold_p.items() if p in train_p})
    if shared:
        pairs = ", ".join(f"ecg_id {e} (patient {p:g})" for e, p in shared[:shown])
        more = f" and {len(shared) - shown} more" if len(shared) > shown else ""
        raise FedECGError(f"holdout {holdout or run.dataset}: {len(shared)} of its records belong to patients with "
                          f"training records in the run: {pairs}{more}. The privacy unit is the patient: a holdout "
                          "must be patient-disjoint from the training records (use the manifest's test fold, or "
                          "drop these patients)")
    return {"patient_disjoint": True, "holdout_patients": int(hold_p.dropna().nunique()),
            "training_patients": len(train_p)}


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
    from sssd.checkpoint import load_checkpoint, model_from_checkpoint
    from sssd.diffusion import Schedule

    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt, device)
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


# ---- the public base corpus (RUN_DIR/base.json) -------------------------------------------------------------

DEFAULT_BASE_MAX_RECORDS = 4000  # base-corpus records compared at most (synthetic: regenerated, ≈ 25 ms each)
OVERLAP_IDS_SHOWN = 50  # ecg_ids listed in an overlap block (the count is always complete)


@dataclass(frozen=True)
class BaseCorpus:
    """The records that trained the run's pretrained base, as far as they can be had here.

    ``arrays`` is None when they cannot (``reason`` says why); ``listed_ids`` are all the ecg_ids the model
    card names (folder corpora only: generated records have ids that name no patient record)."""

    record: dict  # RUN_DIR/base.json
    source: str  # "synthetic" | "folder" | "unknown"
    arrays: object | None  # ptbxl.dataset.ECGArrays
    reason: str | None
    n_card: int | None  # records the card says trained the base
    max_records: int
    capped: bool
    selection: str
    listed_ids: tuple[int, ...] = ()
    root: Path | None = None  # folder corpora: the folder, when reachable here
    root_named: str | None = None  # folder corpora: the folder as the card names it
    notes: tuple[str, ...] = ()  # caveats the report repeats (e.g. generator version unknown)

    @property
    def available(self) -> bool:
        return self.arrays is not None


def read_base_record(run_dir: str | Path) -> dict | None:
    """``RUN_DIR/base.json`` (written when the run started from a pretrained base), or None."""
    from fedecg.io import read_json_object

    return read_json_object(RunLayout(run_dir).base_path)


def _int(v) -> int | None:
    return int(v) if isinstance(v, int | np.integer) and not isinstance(v, bool) else None


def load_base_corpus(
    run_dir: str | Path,
    max_records: int = DEFAULT_BASE_MAX_RECORDS,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> BaseCorpus | None:
    """The base's training corpus from the card in ``RUN_DIR/base.json`` (None when the run has no base).

    * synthetic (``generator_seed``, ``n_records``): regenerated with ``pretraining.corpus.synthetic_corpus``;
      at most ``max_records``: the first ``max_records`` of the corpus (records do not depend on how many
      are generated, so these are exactly the base's first records);
    * folder (``root``, ``ecg_ids``): the listed records of the folder when it is reachable here (a seeded
      random subset of ``max_records`` when there are more); ids missing from the folder are skipped.

    Never raises for a corpus it cannot get: ``arrays`` is then None and ``reason`` starts with "base corpus
    not available here"."""
    rec = read_base_record(run_dir)
    if rec is None:
        return None
    card = rec.get("card") if isinstance(rec.get("card"), dict) else {}
    data = card.get("data") if isinstance(card.get("data"), dict) else {}
    source = data.get("source") if data.get("source") in ("synthetic", "folder") else "unknown"
    n_card = _int(data.get("n_records"))
    max_records = int(max_records)

    def missing(why: str, **kw) -> BaseCorpus:
        log.warning("base corpus not available here: %s", why)
        return BaseCorpus(rec, source, None, f"base corpus not available here: {why}", n_card, max_records,
                          False, "none", **kw)

    if source == "unknown":
        return missing("the base's model card does not say which records trained it (no card.data.source)")
    if source == "synthetic":
        seed_c = _int(data.get("generator_seed"))
        if seed_c is None or n_card is None or n_card < 1:
            return missing("the card's synthetic corpus lacks an integer generator_seed / n_records")
        if max_records < 1:
            return missing(f"not compared (max_records = {max_records})")
        notes = _generator_notes(data)
        if notes and "NOT" in notes[0]:
            return missing(notes[0])
        from pretraining.corpus import synthetic_corpus

        n = min(n_card, max_records)
        log.info("regenerating the base's synthetic corpus: %d of %d records, seed %d", n, n_card, seed_c)
        arrays, _ = synthetic_corpus(n, seed_c)
        sel = f"all {n} records" if n == n_card else f"the first {n} of {n_card} records (capped at {max_records})"
        return BaseCorpus(rec, source, arrays, None, n_card, max_records, n < n_card,
                          f"{sel}, regenerated from generator seed {seed_c}", notes=notes)
    ids = tuple(int(i) for i in data.get("ecg_ids") or [] if _int(i) is not None)
    named = data.get("root")
    n_card = n_card if n_card is not None else len(ids)
    kw = {"listed_ids": ids, "root_named": None if named is None else str(named)}
    if not ids:
        return missing("the card's folder corpus lists no ecg_ids", **kw)
    root = Path(str(named)).expanduser() if named else None
    if root is None or not (root / "ptbxl_database.csv").is_file():
        return missing(f"folder {named!r} (no ptbxl_database.csv there)", **kw)
    kw["root"] = root
    if max_records < 1:
        return missing(f"not compared (max_records = {max_records})", **kw)
    from ptbxl.layout import read_database

    meta = read_database(root)
    present = [i for i in ids if i in meta.index]
    if not present:
        return missing(f"none of the card's {len(ids)} ecg_ids is in {root}/ptbxl_database.csv", **kw)
    gone = len(ids) - len(present)
    take = present
    if len(present) > max_records:
        rng = np.random.default_rng(seed)
        take = [present[i] for i in np.sort(rng.choice(len(present), max_records, replace=False))]
    arrays = load_records(root, take, cache_dir)
    sel = (f"all {len(take)} listed records" if len(take) == len(present)
           else f"a random subset (seed {seed}) of {len(take)} of {len(present)} listed records (capped at "
                f"{max_records})")
    if gone:
        sel += f"; {gone} listed ecg_ids are not in this copy of the folder"
    return BaseCorpus(rec, source, arrays, None, n_card, max_records, len(take) < len(present),
                      f"{sel} of {root}", **kw)


def _generator_notes(data: dict) -> tuple[str, ...]:
    """Regeneration is exact only with the generator that made the corpus: compare the versions when the
    card records one (``generator_version``; ``ptbxl.demo.GENERATOR_VERSION`` here)."""
    import ptbxl.demo

    here = getattr(ptbxl.demo, "GENERATOR_VERSION", None)
    card = data.get("generator_version")
    if card is None:
        return (f"the model card does not record the generator version (here: {here}); the regenerated records "
                "equal the base's only if ptbxl.synth has not changed since the base was trained",)
    if here is not None and str(card) != str(here):
        return (f"the base's corpus was made by generator version {card}, this installation has {here}: the "
                "regenerated records are NOT the base's records",)
    return ()


def fingerprints(x: np.ndarray) -> list[bytes]:
    """One digest per record of its signal quantised to PTB-XL's resolution (1 µV): equal for the same
    record whether loaded from WFDB files or generated in memory."""
    import hashlib

    from ptbxl.constants import ADC_GAIN

    x = np.asarray(x)
    return [hashlib.blake2b(np.round(r.astype(np.float64) * ADC_GAIN).astype(np.int32).tobytes(),
                            digest_size=16).digest() for r in x]


def _same_folder(a: Path | None, b: Path | None) -> bool:
    try:
        return a is not None and b is not None and a.resolve() == b.resolve()
    except OSError:
        return False


def base_overlap(base: BaseCorpus, records, folder: Path | None, cache_dir: str | Path | None = None) -> dict:
    """Which of ``records`` (ECGArrays from ``folder``: the sites' training records, or the holdout) are
    also records of the base's corpus.

    * by ecg_id (folder corpora): an id the card lists is the same record when the base's folder is
      ``folder``, or when its signal in the base's folder equals the record's; unverifiable (counted,
      flagged ``unconfirmed``) when the base's folder is not reachable here;
    * by content (every compared base record, any source): identical signals at 1 µV, whatever the ids.
    """
    rec_ids = np.asarray(records.ecg_ids).astype(np.int64)
    found: set[int] = set()
    unconfirmed: set[int] = set()
    basis = []
    by_id = by_content = 0
    if base.source == "folder" and base.listed_ids:
        cand = sorted(set(map(int, rec_ids)) & set(base.listed_ids))
        if cand and _same_folder(base.root, folder):
            found |= set(cand)
            by_id = len(cand)
            basis.append("same ecg_id in the same dataset folder")
        elif cand and base.root is not None:
            from ptbxl.layout import read_database

            there = [i for i in cand if i in read_database(base.root).index]
            if there:
                theirs = load_records(base.root, there, cache_dir)
                pos = {int(e): j for j, e in enumerate(rec_ids)}
                mine = fingerprints(np.asarray(records.x)[[pos[i] for i in there]])
                same = [i for i, a, b in zip(there, mine, fingerprints(theirs.x), strict=True) if a == b]
                found |= set(same)
                by_id = len(same)
            basis.append(f"same ecg_id and identical signal in the base's folder ({len(cand)} ids shared, "
                         f"{by_id} identical)")
        elif cand:
            unconfirmed |= set(cand)
            basis.append("same ecg_id only: the base's folder is not reachable here, so these ids may name "
                         "different records")
    if base.arrays is not None:
        theirs = set(fingerprints(base.arrays.x))
        content = {int(i) for i, fp in zip(rec_ids, fingerprints(records.x), strict=True) if fp in theirs}
        by_content = len(content)
        found |= content
        basis.append(f"identical signal (8 leads at 1 µV) to one of the {len(base.arrays)} base records compared")
    unconfirmed -= found
    every = sorted(found | unconfirmed)
    return {
        "n_records": len(every),
        "n_confirmed": len(found),
        "n_unconfirmed": len(unconfirmed),
        "by_id": by_id,
        "by_content": by_content,
        "ecg_ids": every[:OVERLAP_IDS_SHOWN],
        "ecg_ids_truncated": len(every) > OVERLAP_IDS_SHOWN,
        "basis": basis,
        "of": len(rec_ids),
    }
