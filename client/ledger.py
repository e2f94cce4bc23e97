"""A site's own record-level privacy ledger: every DP-SGD training the site ever did for a run.

The ledger is the site's, not the server's: it lives in the node's ``context.state`` *and* in a node-local
JSON file (``<state-dir>/ledger-<run-name>.json``), so epsilon accumulates over rounds, survives a restart of
the client process and a server-side ``--resume`` (which Flower sees as a new run). If a round is trained twice
(e.g. the server crashed after the site replied and the round is re-run on resume), both trainings are kept:
the site did release two updates computed from its data, so both cost privacy. Accounting is conservative.

Each entry: ``{"round", "noise_multiplier" (sigma), "sample_rate" (q = batch / n_train), "steps",
"max_grad_norm", "delta"}``. Epsilon at ``delta`` is computed from the composed history with Opacus'
accountants (RDP by default, PRV optional) through privacy.accounting — the same code ``fedecg privacy budget``
uses to recompute it from the run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json

STATE_KEY = "fedecg-ledger"  # ConfigRecord key in context.state


@dataclass
class SiteLedger:
    site: str
    n_records: int
    delta: float
    accountant: str = "rdp"
    entries: list[dict] = field(default_factory=list)
    unit: str = "record"  # privacy unit: "patient" (n_records then counts patients) or "record"

    # ---- composition ---------------------------------------------------------------------------------
    def history(self, extra: list[dict] | None = None) -> list[tuple[float, float, int]]:
        rows = self.entries + (extra or [])
        return [(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"])) for e in rows
                if int(e["steps"]) > 0]

    def epsilon(self, extra: list[dict] | None = None) -> float:
        """Epsilon at ``self.delta`` of everything recorded (plus ``extra`` hypothetical entries)."""
        from privacy.accounting import compute_epsilon

        return compute_epsilon(self.history(extra), self.delta, self.accountant)

    @property
    def steps(self) -> int:
        return sum(int(e["steps"]) for e in self.entries)

    def record(self, server_round: int, noise_multiplier: float, sample_rate: float, steps: int,
               max_grad_norm: float) -> None:
        self.entries.append({"round": int(server_round), "noise_multiplier": float(noise_multiplier),
                             "sample_rate": float(sample_rate), "steps": int(steps),
                             "max_grad_norm": float(max_grad_norm), "delta": float(self.delta)})

    # ---- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"site": self.site, "n_records": self.n_records, "delta": self.delta,
                "accountant": self.accountant, "entries": self.entries, "unit": self.unit}

    @classmethod
    def from_dict(cls, data: dict, source: str = "ledger") -> SiteLedger:
        try:
            return cls(site=str(data["site"]), n_records=int(data["n_records"]), delta=float(data["delta"]),
                       accountant=str(data.get("accountant", "rdp")), entries=list(data["entries"]),
                       unit=str(data.get("unit", "record")))
        except (KeyError, TypeError, ValueError) as exc:
            raise FedECGError(f"{source}: malformed privacy ledger ({exc})") from exc

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> SiteLedger | None:
        if not path.exists():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except json.JSONDecodeError as exc:
            raise FedECGError(f"{path}: privacy ledger is not valid JSON ({exc}); refusing to train "
                              "without a trustworthy ledger") from exc
