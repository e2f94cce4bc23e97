"""Where everything of a run directory lives: the one place its file and folder names are spelled.

Paths only (stdlib, no I/O beyond listing the checkpoints folder), so every room can name a run's files,
including those below ``server`` (privacy, evaluation) that cannot import ``server.rundir.RunDir`` (which
builds on :class:`RunLayout` and adds reading and writing).

```
RUN_DIR/config.yaml            the resolved scenario (ScenarioConfig); its presence marks a prepared run
RUN_DIR/run.json               run name, scenario file and overrides it was prepared from
RUN_DIR/base.json              the pretrained base the run started from (init != none)
RUN_DIR/manifest.json          partition manifest (simulation)
RUN_DIR/data_check.json        records of the dataset that failed the data check (simulation)
RUN_DIR/metrics.jsonl          one JSON object per finished round (+ evaluation lines)
RUN_DIR/privacy_ledger.json    per-site DP-SGD history as reported by the sites
RUN_DIR/status.json            running | completed | failed | interrupted (+ error)
RUN_DIR/checkpoints/round-NNNN.pt, latest.pt
RUN_DIR/node-state/<site>/     simulated sites' own state (lifetime ledger); simulated-node-config.json
RUN_DIR/.cache/                decoded-record cache of the simulated sites
RUN_DIR/flwr_home/, tensorboard/
RUN_DIR/synthetic/             synthetic ECGs (PTB-XL layout + synthetic.npz + PNGs), fidelity.json/.png,
RUN_DIR/privacy_budget.json    epsilon_over_rounds.png, training_curves.png, summary.txt (simulations.finish)
RUN_DIR/canary_audit.json      the canary audit of this run (experiments.canary)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = "round-{:04d}.pt"
ROUND_CHECKPOINT_RE = re.compile(r"round-(\d{4,})\.pt$")


@dataclass(frozen=True)
class RunLayout:
    """The paths of the run directory ``path`` (``RunLayout("runs/x").metrics_path``)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ---- what the run is -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def run_info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def base_path(self) -> Path:
        return self.path / "base.json"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def data_check_path(self) -> Path:
        return self.path / "data_check.json"

    # ---- what it recorded ----------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def ledger_path(self) -> Path:
        return self.path / "privacy_ledger.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    # ---- checkpoints ---------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, server_round: int) -> Path:
        return self.checkpoints / CHECKPOINT_NAME.format(server_round)

    @property
    def latest_checkpoint(self) -> Path:
        return self.checkpoints / "latest.pt"

    def round_checkpoints(self) -> list[Path]:
        """The round checkpoints on disk, oldest round first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := ROUND_CHECKPOINT_RE.search(p.name))]
        return [p for _, p in sorted(found)]

    def completed_rounds(self) -> list[int]:
        """The rounds whose checkpoint is on disk, in order."""
        return [int(ROUND_CHECKPOINT_RE.search(p.name).group(1)) for p in self.round_checkpoints()]

    # ---- the simulated sites -------------------------------------------------------------------------
    @property
    def node_state_dir(self) -> Path:
        return self.path / "node-state"

    def site_state_dir(self, site: str) -> Path:
        return self.node_state_dir / site

    @property
    def simulated_node_config_path(self) -> Path:
        return self.node_state_dir / "simulated-node-config.json"

    @property
    def cache_dir(self) -> Path:
        return self.path / ".cache"

    @property
    def flwr_home(self) -> Path:
        return self.path / "flwr_home"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    # ---- what a finished run leaves (simulations.finish, experiments) --------------------------------
    @property
    def synthetic_dir(self) -> Path:
        return self.path / "synthetic"

    @property
    def synthetic_npz(self) -> Path:
        return self.synthetic_dir / "synthetic.npz"

    @property
    def fidelity_path(self) -> Path:
        return self.path / "fidelity.json"

    @property
    def fidelity_png(self) -> Path:
        return self.path / "fidelity.png"

    @property
    def training_curves_png(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def privacy_budget_path(self) -> Path:
        return self.path / "privacy_budget.json"

    @property
    def epsilon_png(self) -> Path:
        return self.path / "epsilon_over_rounds.png"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.txt"

    @property
    def canary_audit_path(self) -> Path:
        return self.path / "canary_audit.json"
