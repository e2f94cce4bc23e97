"""A site's own lifetime privacy ledger: every DP-SGD training this site ever did, for every run.

The ledger is the site's, not the server's. One file per site, ``<state-dir>/privacy-ledger.json`` (simulation:
``RUN_DIR/node-state/<site>/``; deployment: ``<data-dir>/.fedecg/`` unless the node config names ``state-dir``),
with one section per run (keyed by the run's stable name, kept across ``--resume``) so the site's caps hold per
run *and* over its lifetime (privacy.policy). A copy also lives in the node's ``context.state``.

Spending is pessimistic and durable: the site records a round's planned DP-SGD steps *before* it trains
(atomic write + fsync of the file and its folder, under an exclusive file lock so two runs at one site cannot
lose each other's entries), so a crash during training or before the reply leaves the spend recorded. A round
trained again (the server resumed after a crash, a reply was lost) is paid again: the entry carries
``repeat`` = how many times that round was paid before, and the site logs it.

Run entry: ``{"round", "noise_multiplier" (σ), "sample_rate" (q, Opacus' 1 / number of batches), "steps",
"max_grad_norm", "delta", "recorded" (unix time), "state" ("recorded" → "trained"), "repeat"}``. The run's
ε (at its δ, with the run's accountant) is what the site reports as ``epsilon``, next to
``ledger_digest`` (privacy.ledger.entries_digest of its (round, σ, q, steps)), which lets the server's
ledger be checked against it (``fedecg privacy budget``). Lifetime ε composes every entry of every run at the
site's δ with the RDP accountant.

A site's older per-run files (``ledger-<run>.json``, format 1) are imported as run sections the first time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json

log = logging.getLogger(__name__)

STATE_KEY = "fedecg-ledger"  # ConfigRecord key in context.state
LEDGER_FILE = "privacy-ledger.json"
LOCK_FILE = ".privacy-ledger.lock"
FORMAT = "fedecg-site-ledger/2"
MAX_REFUSALS = 200  # refusals kept in the file (the newest)


@dataclass
class RunSection:
    """One run at this site."""

    unit: str  # privacy unit: patient | record
    n_units: int  # patients or records the site trained on when the run started
    delta: float  # δ of this run's ε
    accountant: str = "rdp"
    entries: list[dict] = field(default_factory=list)
    non_private_rounds: list[int] = field(default_factory=list)  # rounds trained without DP (no guarantee)
    created: float = 0.0

    def history(self, extra: list[dict] | None = None) -> list[tuple[float, float, int]]:
        rows = self.entries + (extra or [])
        return [(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"])) for e in rows
                if int(e["steps"]) > 0]

    def epsilon(self, extra: list[dict] | None = None, delta: float | None = None,
                accountant: str | None = None) -> float:
        from privacy.accounting import compute_epsilon

        return compute_epsilon(self.history(extra), delta or self.delta, accountant or self.accountant)

    @property
    def steps(self) -> int:
        return sum(int(e["steps"]) for e in self.entries)

    def digest(self) -> str:
        from privacy.ledger import entries_digest

        return entries_digest([(e["round"], e["noise_multiplier"], e["sample_rate"], e["steps"])
                               for e in self.entries])

    def to_dict(self) -> dict:
        return {"unit": self.unit, "n_units": self.n_units, "delta": self.delta, "accountant": self.accountant,
                "created": self.created, "entries": self.entries, "non_private_rounds": self.non_private_rounds}

    @classmethod
    def from_dict(cls, data: dict) -> RunSection:
        return cls(unit=str(data["unit"]), n_units=int(data["n_units"]), delta=float(data["delta"]),
                   accountant=str(data.get("accountant", "rdp")), entries=list(data["entries"]),
                   non_private_rounds=[int(r) for r in data.get("non_private_rounds", [])],
                   created=float(data.get("created", 0.0)))


@dataclass
class SiteLedger:
    """Every run this site trained, plus the requests it refused."""

    site: str
    runs: dict[str, RunSection] = field(default_factory=dict)
    refusals: list[dict] = field(default_factory=list)

    def run(self, name: str) -> RunSection | None:
        return self.runs.get(name)

    def open_run(self, name: str, unit: str, n_units: int, delta: float, accountant: str) -> RunSection:
        if name not in self.runs:
            self.runs[name] = RunSection(unit=unit, n_units=n_units, delta=delta, accountant=accountant,
                                         created=time.time())
        return self.runs[name]

    def run_epsilon(self, name: str, delta: float, accountant: str, extra: list[dict] | None = None) -> float:
        run = self.runs.get(name)
        if run is None:
            run = RunSection(unit="record", n_units=0, delta=delta, accountant=accountant)
        return run.epsilon(extra, delta=delta, accountant=accountant)

    def lifetime_history(self, extra: list[dict] | None = None) -> list[tuple[float, float, int]]:
        rows = [e for run in self.runs.values() for e in run.entries] + list(extra or [])
        return [(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"])) for e in rows
                if int(e["steps"]) > 0]

    def lifetime_epsilon(self, delta: float, extra: list[dict] | None = None) -> float:
        """ε at ``delta`` of every DP-SGD step this site took in any run (RDP composition)."""
        from privacy.accounting import compute_epsilon

        return compute_epsilon(self.lifetime_history(extra), delta, "rdp")

    @property
    def lifetime_unit(self) -> str:
        """The unit the lifetime ε holds for: patient only if every run accounted per patient."""
        units = {r.unit for r in self.runs.values() if r.entries}
        return "patient" if units == {"patient"} else "record"

    def record(self, run_name: str, server_round: int, noise_multiplier: float, sample_rate: float, steps: int,
               max_grad_norm: float) -> dict:
        """Append one round's spend to run ``run_name`` (opened before); returns the entry."""
        run = self.runs[run_name]
        repeat = sum(1 for e in run.entries if int(e["round"]) == int(server_round))
        entry = {"round": int(server_round), "noise_multiplier": float(noise_multiplier),
                 "sample_rate": float(sample_rate), "steps": int(steps), "max_grad_norm": float(max_grad_norm),
                 "delta": float(run.delta), "recorded": time.time(), "state": "recorded", "repeat": repeat}
        run.entries.append(entry)
        return entry

    def refuse(self, run_name: str, server_round: int, reason: str) -> None:
        self.refusals.append({"run": run_name, "round": int(server_round), "reason": reason, "time": time.time()})
        del self.refusals[:-MAX_REFUSALS]

    # ---- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "site": self.site, "runs": {k: v.to_dict() for k, v in self.runs.items()},
                "refusals": self.refusals}

    @classmethod
    def from_dict(cls, data: dict, source: str = "ledger") -> SiteLedger:
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            return cls(site=str(data["site"]), runs={str(k): RunSection.from_dict(v) for k, v in data["runs"].items()},
                       refusals=list(data.get("refusals", [])))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FedECGError(f"{source}: malformed privacy ledger ({exc}); refusing to train without a "
                              "trustworthy ledger") from exc


def legacy_run(data: dict, source: str) -> RunSection:
    """A format-1 per-run file (``ledger-<run>.json``: site, n_records, delta, accountant, entries, unit)."""
    try:
        return RunSection(unit=str(data.get("unit", "record")), n_units=int(data["n_records"]),
                          delta=float(data["delta"]), accountant=str(data.get("accountant", "rdp")),
                          entries=[{**e, "state": e.get("state", "trained")} for e in data["entries"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise FedECGError(f"{source}: malformed privacy ledger ({exc}); refusing to train without a "
                          "trustworthy ledger") from exc


class LedgerStore:
    """The site's ledger file: read, change and write it only under ``with store.open() as ledger``."""

    def __init__(self, state_dir: str | Path, site: str) -> None:
        self.dir = Path(state_dir)
        self.site = site
        self.path = self.dir / LEDGER_FILE

    @contextlib.contextmanager
    def open(self, fallback: dict | None = None) -> Iterator[SiteLedger]:
        """Lock the ledger, yield it (loaded, imported or new); on a clean exit write it durably."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / LOCK_FILE):
            ledger = self.load(fallback)
            yield ledger
            self.save(ledger)

    def load(self, fallback: dict | None = None) -> SiteLedger:
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise FedECGError(f"{self.path}: privacy ledger is not valid JSON ({exc}); refusing to train "
                                  "without a trustworthy ledger") from exc
            ledger = SiteLedger.from_dict(data, str(self.path))
            if ledger.site != self.site:
                raise FedECGError(f"{self.path}: this privacy ledger belongs to site {ledger.site!r}, not "
                                  f"{self.site!r}; give each site its own state-dir")
            return ledger
        if fallback is not None:
            log.warning("site %s: %s is missing; continuing from the copy in the node's state", self.site,
                        self.path)
            return SiteLedger.from_dict(fallback, "context.state")
        ledger = SiteLedger(site=self.site)
        for old in sorted(self.dir.glob("ledger-*.json")):  # format 1: one file per run
            name = old.stem[len("ledger-"):]
            ledger.runs[name] = legacy_run(json.loads(old.read_text(encoding="utf-8")), str(old))
            log.info("site %s: imported the per-run ledger %s into %s", self.site, old, self.path)
        return ledger

    def save(self, ledger: SiteLedger) -> None:
        atomic_write_json(self.path, ledger.to_dict())  # temp file + fsync + rename
        _fsync_dir(self.dir)  # the rename itself reaches the disk


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
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
