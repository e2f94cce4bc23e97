"""The privacy ledger: one type for the DP-SGD steps a site took, and the one (de)serialiser of its two files.

:class:`SiteLedger` is one site's DP-SGD history in one run: ``history`` of :class:`LedgerEntry` (``steps``
Poisson-subsampled Gaussian mechanisms with sampling rate q and noise multiplier σ, noise std = σ ·
max_grad_norm; σ = 0 marks non-private training, ε = ∞) plus the run's δ, accountant, privacy unit and number of
units. Two containers hold it, both written atomically (temporary file, fsync, rename; fedecg.io):

- :class:`PrivacyLedger`: the run's ledger, kept by the server (``RUN_DIR/privacy_ledger.json``): one SiteLedger
  per site as the sites reported it, plus the client-level mechanism (user-level DP over the federation's sites,
  accounted separately). :func:`load_ledger` / :func:`save_ledger`.
- :class:`LifetimeLedger`: a site's own ledger over every run it ever trained (``<state-dir>/privacy-ledger.json``;
  simulation ``RUN_DIR/node-state/<site>/``, deployment ``<data-dir>/.fedecg/`` unless the node config names
  ``state-dir``): one SiteLedger per run (keyed by the run's stable name, kept across ``--resume``) plus the
  requests it refused. Read and changed only under :meth:`LedgerStore.open` (exclusive file lock; atomic write
  and fsync of file and folder on leaving), so two runs at one site cannot lose each other's entries.

Spending at a site is pessimistic and durable: the site records a round's planned steps (``state``
``"recorded"``, then ``"trained"``) *before* it trains, so a crash leaves the spend recorded; a round trained
again is paid again (``repeat`` = how many times it was paid before). The site reports its run ε and
``entries_digest`` of its entries; the server's entry carries them (``epsilon``, ``digest``,
``reported_steps``), and a ``gap`` entry stands for steps the site paid that never reached the server (a lost
reply, a round re-run after a resume: σ = the smallest and q = the largest the site reported for the run, so ε
is not lower). ``privacy.accounting.reconcile`` checks the run's ledger against all of it.

Run file (docs/INTERFACES.md)::

    {"delta_policy": str | null, "accountant": str (optional: the run's, for sites that join later),
     "sites": {site: {"n_records": int, "unit": "patient"|"record", "delta": float, "max_grad_norm": float,
                      "accountant": "rdp"|"prv",
                      "history": [{"round": int, "noise_multiplier": float, "sample_rate": float,
                                   "steps": int, "epsilon": float | null,
                                   "digest": str (optional), "reported_steps": int (optional),
                                   "gap": true (optional)}]}},
     "client_level": null | {"n_records": int (number of sites), "unit", "delta", "accountant", "max_grad_norm",
                             "history": [{"round", "noise_multiplier", "sample_rate", "steps", "epsilon"}]}}

Site file (``fedecg-site-ledger/2``; the same SiteLedger, spelt ``n_units`` / ``entries`` there)::

    {"format": "fedecg-site-ledger/2", "site": str,
     "runs": {run_name: {"unit", "n_units", "delta", "accountant", "created" (unix time),
                         "entries": [{"round", "noise_multiplier", "sample_rate", "steps", "max_grad_norm",
                                      "delta", "recorded" (unix time), "state", "repeat"}],
                         "non_private_rounds": [int] (rounds trained without DP: no guarantee)}},
     "refusals": [{"run", "round", "reason", "time"}]}

A site's older per-run files (``ledger-<run>.json``, format 1: site, n_records, delta, accountant, entries,
unit) are imported as run sections the first time its ledger is opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from fedecg.rundir import RunLayout

try:
    import fcntl
except ImportError:  # not POSIX: _locked takes no cross-process lock
    fcntl = None

log = logging.getLogger(__name__)

LEDGER_FILE = RunLayout(".").ledger_path.name  # the run's, in RUN_DIR (named by fedecg.rundir)
SITE_LEDGER_FILE = "privacy-ledger.json"  # the site's, in its state dir
SITE_LOCK_FILE = ".privacy-ledger.lock"
SITE_FORMAT = "fedecg-site-ledger/2"
MAX_REFUSALS = 200  # refusals kept in the site's file (the newest)
DIGEST_RE = re.compile(r"[0-9a-f]{64}")
UNITS = ("patient", "record", "client")  # client: the client-level mechanism (one unit = one site)


@dataclass(frozen=True)
class LedgerEntry:
    """``steps`` DP-SGD steps taken in ``round`` with noise multiplier σ and Poisson sampling rate q.

    The server's entries carry what the site reported with them (``epsilon``, ``digest``, ``reported_steps``)
    or mark a ``gap``; the site's own entries carry what it recorded before training (``max_grad_norm``,
    ``delta``, ``recorded``, ``state``, ``repeat``)."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float | None = None  # the site's cumulative ε for the run it reported after this round
    digest: str | None = None  # the site's ledger digest it reported with it (entries_digest of its entries)
    reported_steps: int | None = None  # the site's cumulative DP-SGD steps for the run, as it reported them
    gap: bool = False  # steps the site reported but the server never received (a lost reply, a re-run round):
    #                   σ = the smallest and q = the largest the site reported for the run, so ε is not lower
    max_grad_norm: float | None = None  # site: the clipping norm C of these steps
    delta: float | None = None  # site: the run's δ when it recorded them
    recorded: float | None = None  # site: unix time the spend was recorded (before training)
    state: str | None = None  # site: "recorded" (paid before training), then "trained"
    repeat: int | None = None  # site: how many times this round was paid before (a resumed server, a lost reply)

    def to_dict(self) -> dict[str, Any]:
        """The run file's form (site-side fields only when set)."""
        out: dict[str, Any] = {
            "round": self.round,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "epsilon": self.epsilon,
        }
        if self.digest is not None:
            out["digest"] = self.digest
        if self.reported_steps is not None:
            out["reported_steps"] = self.reported_steps
        if self.gap:
            out["gap"] = True
        out.update({k: v for k in _SITE_ENTRY_KEYS if (v := getattr(self, k)) is not None})
        return out

    def to_site_dict(self) -> dict[str, Any]:
        """The site file's form (server-side fields only when set)."""
        out: dict[str, Any] = {"round": self.round, "noise_multiplier": self.noise_multiplier,
                               "sample_rate": self.sample_rate, "steps": self.steps}
        out.update({k: getattr(self, k) for k in _SITE_ENTRY_KEYS})
        out.update({k: v for k in ("epsilon", "digest", "reported_steps") if (v := getattr(self, k)) is not None})
        if self.gap:
            out["gap"] = True
        return out


_SITE_ENTRY_KEYS = ("max_grad_norm", "delta", "recorded", "state", "repeat")


@dataclass(frozen=True)
class SiteLedger:
    """All DP steps of one site in one run (or of the client-level mechanism when ``site == "client_level"``)."""

    site: str
    delta: float
    history: tuple[LedgerEntry, ...]
    n_records: int | None = None  # number of privacy units at the site (patients or records, see ``unit``)
    max_grad_norm: float | None = None
    accountant: str = "rdp"
    unit: str = "record"  # the privacy unit: "patient" (one clipped gradient per sampled patient) or "record"
    non_private_rounds: tuple[int, ...] = ()  # site: rounds it trained without DP (they carry no guarantee)
    created: float | None = None  # site: unix time it opened this run

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.history)

    @property
    def rounds(self) -> tuple[int, ...]:
        return tuple(sorted({e.round for e in self.history}))

    @property
    def is_private(self) -> bool:
        """False when any step ran without noise (σ = 0): then ε = ∞."""
        return all(e.noise_multiplier > 0 for e in self.history if e.steps > 0)

    def mechanism_history(self, up_to_round: int | None = None) -> list[tuple[float, float, int]]:
        """Opacus-style history ``[(σ, q, steps), ...]`` of entries with ``round <= up_to_round``."""
        return [
            (float(e.noise_multiplier), float(e.sample_rate), int(e.steps))
            for e in self.history
            if e.steps > 0 and (up_to_round is None or e.round <= up_to_round)
        ]

    def digest(self) -> str:
        """:func:`entries_digest` of the whole history (what a site reports for its own run)."""
        return entries_digest([(e.round, e.noise_multiplier, e.sample_rate, e.steps) for e in self.history])

    def extended(self, entries: Iterable[LedgerEntry]) -> SiteLedger:
        """This ledger with ``entries`` appended."""
        return dataclasses.replace(self, history=self.history + tuple(entries))

    def to_dict(self) -> dict[str, Any]:
        """The run file's form (site-side fields only when set)."""
        out: dict[str, Any] = {
            "n_records": self.n_records,
            "unit": self.unit,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
            "history": [e.to_dict() for e in self.history],
        }
        if self.non_private_rounds:
            out["non_private_rounds"] = list(self.non_private_rounds)
        if self.created is not None:
            out["created"] = self.created
        return out

    def to_site_dict(self) -> dict[str, Any]:
        """The site file's form of a run section."""
        out: dict[str, Any] = {"unit": self.unit, "n_units": self.n_records, "delta": self.delta,
                               "accountant": self.accountant, "created": self.created or 0.0,
                               "entries": [e.to_site_dict() for e in self.history],
                               "non_private_rounds": list(self.non_private_rounds)}
        if self.max_grad_norm is not None:
            out["max_grad_norm"] = self.max_grad_norm
        return out


@dataclass(frozen=True)
class PrivacyLedger:
    """The run's ledger: record-level ledgers per site plus the optional client-level ledger."""

    sites: dict[str, SiteLedger] = field(default_factory=dict)
    client_level: SiteLedger | None = None
    delta_policy: str | None = None
    accountant: str | None = None  # the run's accountant (``dp.accountant``), given to sites as they join

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"delta_policy": self.delta_policy}
        if self.accountant is not None:
            out["accountant"] = self.accountant
        out["sites"] = {k: v.to_dict() for k, v in self.sites.items()}
        out["client_level"] = None if self.client_level is None else self.client_level.to_dict()
        return out


@dataclass
class LifetimeLedger:
    """A site's own ledger: one :class:`SiteLedger` per run it trained, plus the requests it refused.

    The one mutable container (its values are frozen): change it only inside ``with LedgerStore.open()``."""

    site: str
    runs: dict[str, SiteLedger] = field(default_factory=dict)
    refusals: list[dict] = field(default_factory=list)

    def run(self, name: str) -> SiteLedger | None:
        return self.runs.get(name)

    def open_run(self, name: str, unit: str, n_units: int, delta: float, accountant: str) -> SiteLedger:
        """Run ``name``'s section, opened with these settings unless it exists (one run keeps its unit and δ)."""
        if name not in self.runs:
            self.runs[name] = SiteLedger(site=self.site, delta=float(delta), history=(), n_records=int(n_units),
                                         accountant=str(accountant), unit=str(unit), created=time.time())
        return self.runs[name]

    def record(self, run_name: str, server_round: int, noise_multiplier: float, sample_rate: float, steps: int,
               max_grad_norm: float) -> LedgerEntry:
        """Append one round's planned spend to run ``run_name`` (opened before); returns the entry."""
        run = self.runs[run_name]
        repeat = sum(1 for e in run.history if int(e.round) == int(server_round))
        entry = LedgerEntry(round=int(server_round), noise_multiplier=float(noise_multiplier),
                            sample_rate=float(sample_rate), steps=int(steps), max_grad_norm=float(max_grad_norm),
                            delta=float(run.delta), recorded=time.time(), state="recorded", repeat=repeat)
        self.runs[run_name] = run.extended([entry])
        return entry

    def mark_trained(self, run_name: str, server_round: int, recorded: float,
                     actual: dict | None = None) -> LedgerEntry | None:
        """Mark the entry recorded at ``recorded`` for ``server_round`` trained (None if it is gone). Should
        training have used (``actual``: noise_multiplier, sample_rate, steps) a larger q, more steps or a
        smaller σ than recorded (it never does: both come from the same numbers), the entry keeps the worse
        of each."""
        run = self.runs.get(run_name)
        history = list(run.history) if run is not None else []
        i = next((i for i, e in enumerate(history) if (e.round, e.recorded) == (server_round, recorded)), None)
        if i is None:
            return None
        entry = dataclasses.replace(history[i], state="trained")
        if actual is not None:
            worse = {"sample_rate": max(entry.sample_rate, float(actual["sample_rate"])),
                     "steps": max(int(entry.steps), int(actual["steps"])),
                     "noise_multiplier": min(entry.noise_multiplier, float(actual["noise_multiplier"]))}
            if any(worse[k] != getattr(entry, k) for k in worse):
                log.error("site %s: training spent %s, more than recorded %s; the ledger keeps the worse of each",
                          self.site, {k: actual[k] for k in worse}, {k: getattr(entry, k) for k in worse})
                entry = dataclasses.replace(entry, **worse)
        history[i] = entry
        self.runs[run_name] = dataclasses.replace(run, history=tuple(history))
        return entry

    def mark_non_private(self, run_name: str, server_round: int) -> None:
        """Note that run ``run_name`` (opened before) trained ``server_round`` without DP."""
        run = self.runs[run_name]
        self.runs[run_name] = dataclasses.replace(run, non_private_rounds=(*run.non_private_rounds,
                                                                           int(server_round)))

    def refuse(self, run_name: str, server_round: int, reason: str) -> None:
        self.refusals.append({"run": run_name, "round": int(server_round), "reason": reason, "time": time.time()})
        del self.refusals[:-MAX_REFUSALS]

    def lifetime_history(self) -> list[tuple[float, float, int]]:
        """``[(σ, q, steps), ...]`` of every DP-SGD step this site took in any run."""
        return [h for run in self.runs.values() for h in run.mechanism_history()]

    @property
    def lifetime_unit(self) -> str:
        """The unit the lifetime ε holds for: patient only if every run accounted per patient."""
        units = {r.unit for r in self.runs.values() if r.history}
        return "patient" if units == {"patient"} else "record"

    def to_dict(self) -> dict[str, Any]:
        """The site file's form."""
        return {"format": SITE_FORMAT, "site": self.site,
                "runs": {k: v.to_site_dict() for k, v in self.runs.items()}, "refusals": list(self.refusals)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "ledger") -> LifetimeLedger:
        """Read the site file's form; anything malformed raises FedECGError naming ``source``."""
        try:
            if not isinstance(data, dict):
                raise FedECGError(f"expected an object, got {type(data).__name__}")
            if data.get("format") != SITE_FORMAT:
                raise FedECGError(f"format {data.get('format')!r}, expected {SITE_FORMAT!r}")
            site = data.get("site")
            runs, refusals = data.get("runs"), data.get("refusals", [])
            if not isinstance(site, str) or not isinstance(runs, dict) or not isinstance(refusals, list):
                raise FedECGError("expected 'site' (a string), 'runs' (an object) and 'refusals' (a list)")
            sections = {str(k): _site_from_dict(site, v, f"runs[{k!r}]", "site") for k, v in runs.items()}
            return cls(site=site, runs=sections, refusals=list(refusals))
        except FedECGError as exc:
            raise _untrustworthy(source, exc) from exc


# ---- reading ---------------------------------------------------------------------------------------------


def _num(obj: dict, key: str, where: str, kind: type, minimum: float | None = None, optional: bool = False):
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise FedECGError(f"{where}: missing key {key!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError) as exc:
        raise FedECGError(f"{where}: key {key!r} is not a number ({value!r})") from exc
    if isinstance(out, float) and math.isnan(out):
        raise FedECGError(f"{where}: key {key!r} is NaN")
    if minimum is not None and out < minimum:
        raise FedECGError(f"{where}: key {key!r} = {out} is below {minimum}")
    return out


def _entry_from_dict(h: Any, w: str) -> LedgerEntry:
    if not isinstance(h, dict):
        raise FedECGError(f"{w}: expected an object")
    q = _num(h, "sample_rate", w, float, 0.0)
    if q > 1:
        raise FedECGError(f"{w}: sample_rate {q} > 1")
    state = h.get("state")
    return LedgerEntry(
        round=_num(h, "round", w, int, 0),
        noise_multiplier=_num(h, "noise_multiplier", w, float, 0.0),
        sample_rate=q,
        steps=_num(h, "steps", w, int, 0),
        epsilon=_num(h, "epsilon", w, float, optional=True),
        digest=_digest(h.get("digest"), w),
        reported_steps=_num(h, "reported_steps", w, int, 0, optional=True),
        gap=bool(h.get("gap", False)),
        max_grad_norm=_num(h, "max_grad_norm", w, float, 0.0, optional=True),
        delta=_num(h, "delta", w, float, 0.0, optional=True),
        recorded=_num(h, "recorded", w, float, optional=True),
        state=None if state is None else str(state),
        repeat=_num(h, "repeat", w, int, 0, optional=True),
    )


def _site_from_dict(site: str, obj: Any, where: str, spelling: str = "run") -> SiteLedger:
    """A SiteLedger from either file's form: ``spelling`` ``"run"`` (``n_records`` optional, ``history``, unit
    default record) or ``"site"`` (a run section: ``unit`` and ``n_units`` required, ``entries``)."""
    site_file = spelling == "site"
    units_key, history_key = ("n_units", "entries") if site_file else ("n_records", "history")
    if not isinstance(obj, dict):
        raise FedECGError(f"{where}: expected an object, got {type(obj).__name__}")
    history = obj.get(history_key, [])
    if not isinstance(history, list):
        raise FedECGError(f"{where}: {history_key!r} must be a list")
    entries = tuple(_entry_from_dict(h, f"{where}.{history_key}[{i}]") for i, h in enumerate(history))
    delta = _num(obj, "delta", where, float, 0.0)
    if delta > 1 or (delta == 0 and any(e.steps > 0 for e in entries)):
        raise FedECGError(f"{where}: delta {delta} must lie in (0, 1]")
    non_private = obj.get("non_private_rounds", [])
    if not isinstance(non_private, list):
        raise FedECGError(f"{where}: 'non_private_rounds' must be a list")
    created = _num(obj, "created", where, float, optional=True)
    return SiteLedger(
        site=str(site),
        delta=delta,
        history=entries,
        n_records=_num(obj, units_key, where, int, 0, optional=not site_file),
        max_grad_norm=_num(obj, "max_grad_norm", where, float, 0.0, optional=True),
        accountant=str(obj.get("accountant") or "rdp").lower(),
        unit=_unit(obj.get("unit") if site_file else obj.get("unit", "record"), where),
        non_private_rounds=tuple(_num({"r": r}, "r", f"{where}.non_private_rounds", int, 0) for r in non_private),
        created=(0.0 if site_file else None) if created is None else created,
    )


def _digest(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise FedECGError(f"{where}: 'digest' must be 64 lowercase hex characters, got {value!r}")
    return value


def _unit(value: Any, where: str) -> str:
    if value not in UNITS:
        raise FedECGError(f"{where}: unit must be 'patient' or 'record', got {value!r}")
    return str(value)


def _untrustworthy(source: str, exc: Exception) -> FedECGError:
    return FedECGError(f"{source}: malformed privacy ledger ({exc}); refusing to train without a trustworthy "
                       "ledger")


def entries_digest(entries) -> str:
    """SHA-256 (hex) of a site's ledger entries for one run, ``[(round, σ, q, steps), ...]`` in recording order,
    as canonical JSON (``[[1,1.25,0.25,2],...]``, floats as Python's shortest round-trip repr). The site sends it
    with every train reply; the server's history for that site hashes to the same value iff it holds exactly
    the site's entries."""
    rows = [[int(r), float(s), float(q), int(n)] for r, s, q, n in entries]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


# ---- the run's file ----------------------------------------------------------------------------------------


def ledger_from_dict(obj: Any, source: str = "privacy ledger") -> PrivacyLedger:
    """Validate a parsed run ledger; every problem raises :class:`FedECGError` naming ``source`` and the key."""
    if not isinstance(obj, dict) or not isinstance(obj.get("sites"), dict):
        raise FedECGError(f"{source}: expected an object with a 'sites' object")
    sites = {str(k): _site_from_dict(str(k), v, f"{source}: sites[{k!r}]") for k, v in obj["sites"].items()}
    cl = obj.get("client_level")
    client = None if cl is None else _site_from_dict("client_level", cl, f"{source}: client_level")
    policy, accountant = obj.get("delta_policy"), obj.get("accountant")
    return PrivacyLedger(sites=sites, client_level=client, delta_policy=None if policy is None else str(policy),
                         accountant=None if accountant is None else str(accountant).lower())


def ledger_path(run_dir_or_file: str | Path) -> Path:
    p = Path(run_dir_or_file)
    return p / LEDGER_FILE if p.is_dir() else p


def load_ledger(run_dir_or_file: str | Path) -> PrivacyLedger:
    """Read ``RUN_DIR/privacy_ledger.json`` (or the file itself)."""
    path = ledger_path(run_dir_or_file)
    if not path.is_file():
        raise FedECGError(f"{path}: privacy ledger not found (is this a run directory?)")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FedECGError(f"{path}: cannot read privacy ledger: {exc}") from exc
    return ledger_from_dict(obj, str(path))


def save_ledger(path: str | Path, ledger: PrivacyLedger) -> None:
    """Write the run's ledger atomically to ``path`` (a run directory or the file)."""
    atomic_write_json(ledger_path(path), ledger.to_dict())


# ---- the site's file -----------------------------------------------------------------------------------------


def legacy_run(data: Any, site: str, source: str) -> SiteLedger:
    """A format-1 per-run file (``ledger-<run>.json``: site, n_records, delta, accountant, entries, unit) as a
    run section; its entries count as trained."""
    try:
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise FedECGError("expected an object with an 'entries' list")
        entries = [{**e, "state": e.get("state", "trained")} if isinstance(e, dict) else e for e in data["entries"]]
        section = {"unit": data.get("unit", "record"), "n_units": data.get("n_records"), "delta": data.get("delta"),
                   "accountant": data.get("accountant", "rdp"), "entries": entries}
        return _site_from_dict(site, section, "format 1", "site")
    except FedECGError as exc:
        raise _untrustworthy(source, exc) from exc


class LedgerStore:
    """The site's ledger file: read, change and write it only under ``with store.open() as ledger``."""

    def __init__(self, state_dir: str | Path, site: str) -> None:
        self.dir = Path(state_dir)
        self.site = site
        self.path = self.dir / SITE_LEDGER_FILE

    @contextlib.contextmanager
    def open(self, fallback: dict | None = None) -> Iterator[LifetimeLedger]:
        """Lock the ledger, yield it (loaded, imported or new); on a clean exit write it durably."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / SITE_LOCK_FILE):
            ledger = self.load(fallback)
            yield ledger
            self.save(ledger)

    def load(self, fallback: dict | None = None) -> LifetimeLedger:
        """The site's ledger: its file; else ``fallback`` (the copy in the node's state); else the per-run
        files of format 1 imported; else a new ledger."""
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise FedECGError(f"{self.path}: privacy ledger is not valid JSON ({exc}); refusing to train "
                                  "without a trustworthy ledger") from exc
            ledger = LifetimeLedger.from_dict(data, str(self.path))
            if ledger.site != self.site:
                raise FedECGError(f"{self.path}: this privacy ledger belongs to site {ledger.site!r}, not "
                                  f"{self.site!r}; give each site its own state-dir")
            return ledger
        if fallback is not None:
            log.warning("site %s: %s is missing; continuing from the copy in the node's state", self.site,
                        self.path)
            return LifetimeLedger.from_dict(fallback, "context.state")
        ledger = LifetimeLedger(site=self.site)
        for old in sorted(self.dir.glob("ledger-*.json")):  # format 1: one file per run
            name = old.stem[len("ledger-"):]
            ledger.runs[name] = legacy_run(json.loads(old.read_text(encoding="utf-8")), self.site, str(old))
            log.info("site %s: imported the per-run ledger %s into %s", self.site, old, self.path)
        return ledger

    def save(self, ledger: LifetimeLedger) -> None:
        atomic_write_json(self.path, ledger.to_dict())  # temp file + fsync + rename
        _fsync_dir(self.dir)  # the rename itself reaches the disk


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:  # not POSIX: no cross-process lock
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
