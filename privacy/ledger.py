"""The per-site privacy ledger of a run: every DP-SGD step a site took (RUN_DIR/privacy_ledger.json).

File format (docs/INTERFACES.md)::

    {"delta_policy": str | null,
     "sites": {site: {"n_records": int, "delta": float, "max_grad_norm": float, "accountant": "rdp"|"prv",
                      "history": [{"round": int, "noise_multiplier": float, "sample_rate": float,
                                   "steps": int, "epsilon": float | null,
                                   "digest": str (optional), "reported_steps": int (optional),
                                   "gap": true (optional)}]}},
     "client_level": null | {"delta": float, "accountant": str, "max_grad_norm": float | null,
                             "n_records": int | null (number of clients),
                             "history": [{"round", "noise_multiplier", "sample_rate", "steps"}]}}

One history entry = ``steps`` Poisson-subsampled Gaussian mechanisms with sampling rate ``sample_rate`` (q)
and
noise multiplier ``noise_multiplier`` (σ, noise std = σ · max_grad_norm). ``noise_multiplier == 0`` marks
non-private training (ε = ∞). ``client_level`` (user-level DP over the federation's clients, if used) is kept
apart from record-level site entries and accounted separately.

What the site reported rides along each entry: ``epsilon`` (its cumulative ε for the run, from its own ledger),
``digest`` (``entries_digest`` of its own ledger entries for the run) and ``reported_steps``. A ``gap`` entry
stands for steps the site paid that never reached the server (a lost reply, a round re-run after a resume);
``privacy.accounting.reconcile`` checks the history against all of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json

LEDGER_FILE = "privacy_ledger.json"
DIGEST_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LedgerEntry:
    """``steps`` DP-SGD steps taken in ``round`` with noise multiplier σ and Poisson sampling rate q."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float | None = None  # the site's cumulative ε for the run it reported after this round
    digest: str | None = None  # the site's ledger digest it reported with it (entries_digest of its entries)
    reported_steps: int | None = None  # the site's cumulative DP-SGD steps for the run, as it reported them
    gap: bool = False  # steps the site reported but the server never received (a lost reply, a re-run round):
    #                   σ = the smallest and q = the largest the site reported for the run, so ε is not lower

    def to_dict(self) -> dict[str, Any]:
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
        return out


@dataclass(frozen=True)
class SiteLedger:
    """All DP steps of one site (or of the client-level mechanism when ``site == "client_level"``)."""

    site: str
    delta: float
    history: tuple[LedgerEntry, ...]
    n_records: int | None = None  # number of privacy units at the site (patients or records, see ``unit``)
    max_grad_norm: float | None = None
    accountant: str = "rdp"
    unit: str = "record"  # the privacy unit: "patient" (one clipped gradient per sampled patient) or "record"

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
            (e.noise_multiplier, e.sample_rate, e.steps)
            for e in self.history
            if e.steps > 0 and (up_to_round is None or e.round <= up_to_round)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_records": self.n_records,
            "unit": self.unit,
            "delta": self.delta,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
            "history": [e.to_dict() for e in self.history],
        }


@dataclass(frozen=True)
class PrivacyLedger:
    """Record-level ledgers per site plus the optional client-level ledger."""

    sites: dict[str, SiteLedger] = field(default_factory=dict)
    client_level: SiteLedger | None = None
    delta_policy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta_policy": self.delta_policy,
            "sites": {k: v.to_dict() for k, v in self.sites.items()},
            "client_level": None if self.client_level is None else self.client_level.to_dict(),
        }


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


def _site_from_dict(site: str, obj: Any, where: str) -> SiteLedger:
    if not isinstance(obj, dict):
        raise FedECGError(f"{where}: expected an object, got {type(obj).__name__}")
    history = obj.get("history", [])
    if not isinstance(history, list):
        raise FedECGError(f"{where}: 'history' must be a list")
    entries = []
    for i, h in enumerate(history):
        w = f"{where}.history[{i}]"
        if not isinstance(h, dict):
            raise FedECGError(f"{w}: expected an object")
        q = _num(h, "sample_rate", w, float, 0.0)
        if q > 1:
            raise FedECGError(f"{w}: sample_rate {q} > 1")
        entries.append(
            LedgerEntry(
                round=_num(h, "round", w, int, 0),
                noise_multiplier=_num(h, "noise_multiplier", w, float, 0.0),
                sample_rate=q,
                steps=_num(h, "steps", w, int, 0),
                epsilon=_num(h, "epsilon", w, float, optional=True),
                digest=_digest(h.get("digest"), w),
                reported_steps=_num(h, "reported_steps", w, int, 0, optional=True),
                gap=bool(h.get("gap", False)),
            )
        )
    delta = _num(obj, "delta", where, float, 0.0)
    if delta > 1 or (delta == 0 and any(e.steps > 0 for e in entries)):
        raise FedECGError(f"{where}: delta {delta} must lie in (0, 1]")
    accountant = str(obj.get("accountant") or "rdp").lower()
    return SiteLedger(
        site=str(site),
        delta=delta,
        history=tuple(entries),
        n_records=_num(obj, "n_records", where, int, 0, optional=True),
        max_grad_norm=_num(obj, "max_grad_norm", where, float, 0.0, optional=True),
        accountant=accountant,
        unit=_unit(obj.get("unit", "record"), where),
    )


def _digest(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise FedECGError(f"{where}: 'digest' must be 64 lowercase hex characters, got {value!r}")
    return value


def entries_digest(entries) -> str:
    """SHA-256 (hex) of a site's ledger entries for one run, ``[(round, σ, q, steps), ...]`` in recording order,
    as canonical JSON (``[[1,1.25,0.25,2],...]``, floats as Python's shortest round-trip repr). The site sends it
    with every train reply; the server's history for that site hashes to the same value iff it holds exactly
    the site's entries."""
    rows = [[int(r), float(s), float(q), int(n)] for r, s, q, n in entries]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def _unit(value: Any, where: str) -> str:
    if value not in ("patient", "record", "client"):
        raise FedECGError(f"{where}: unit must be 'patient' or 'record', got {value!r}")
    return str(value)


def ledger_from_dict(obj: Any, source: str = "privacy ledger") -> PrivacyLedger:
    """Validate a parsed ledger; every problem raises :class:`FedECGError` naming ``source`` and the key."""
    if not isinstance(obj, dict) or not isinstance(obj.get("sites"), dict):
        raise FedECGError(f"{source}: expected an object with a 'sites' object")
    sites = {str(k): _site_from_dict(str(k), v, f"{source}: sites[{k!r}]") for k, v in obj["sites"].items()}
    cl = obj.get("client_level")
    client = None if cl is None else _site_from_dict("client_level", cl, f"{source}: client_level")
    policy = obj.get("delta_policy")
    return PrivacyLedger(sites=sites, client_level=client, delta_policy=None if policy is None else str(policy))


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
    atomic_write_json(ledger_path(path), ledger.to_dict())
