"""Create a run directory from a scenario (config snapshot, dataset, partition manifest, base.json) or reopen one.

``dataset: demo`` means the built-in demo dataset: generated once into the cache folder ($FEDECG_CACHE,
default ~/.cache/fedecg) in PTB-XL layout and reused by later runs.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from fedecg.config import ScenarioConfig, load_scenario
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json
from fedecg.rundir import RunLayout
from ptbxl.layout import read_database
from ptbxl.partition import partition_dataset
from server.rundir import RunDir
from sssd.pretrained import load_base

log = logging.getLogger(__name__)


class PreparedRun(RunDir):
    def run_name(self) -> str:
        return json.loads(self.run_info_path.read_text())["run_name"]


def cache_root() -> Path:
    return Path(os.environ.get("FEDECG_CACHE", "~/.cache/fedecg")).expanduser()


def resolve_dataset(cfg: ScenarioConfig) -> Path:
    """The scenario's dataset folder; ``demo`` is generated on first use."""
    if cfg.dataset == "demo":
        # local: heavy (scipy.signal, ~0.9 s); only the demo dataset needs it, the deployment ServerApp never does
        from ptbxl.demo import GENERATOR_VERSION, make_demo_dataset

        n, sites = cfg.demo_data.records, cfg.demo_data.sites
        dest = cache_root() / f"demo-ptbxl-{GENERATOR_VERSION}-n{n}-s{sites}-seed{cfg.seed}"
        if not (dest / "ptbxl_database.csv").exists():
            log.info("generating the built-in demo dataset (%d records, %d sites) into %s", n, sites, dest)
            make_demo_dataset(dest, n_records=n, n_sites=sites, seed=cfg.seed)
        return dest
    path = Path(cfg.dataset).expanduser()
    if not (path / "ptbxl_database.csv").is_file():
        raise FedECGError(f"dataset {path}: no ptbxl_database.csv (expected a PTB-XL-layout folder; "
                          "try `fedecg data check` or `fedecg data demo`)")
    return path


def prepare_run(scenario: Path | None, overrides: list[str], run_dir: Path | None, *, partition: bool,
                resume_only: bool = False) -> PreparedRun:
    """New run: snapshot config, write the partition manifest. Existing run dir: reopen it unchanged
    (overrides are refused there, so a resumed run is the same run)."""
    if run_dir is not None and RunLayout(run_dir).config_path.exists():
        rd = PreparedRun(run_dir)
        if overrides:
            raise FedECGError(f"{run_dir} already holds a run: resume it without overrides, or use a new "
                              "--run-dir")
        rd.read_config()
        return rd
    if resume_only:
        raise FedECGError(f"cannot resume {run_dir}: no config.yaml there (not a run directory)")
    if scenario is None:
        raise FedECGError("a scenario file is required to start a new run")
    cfg = load_scenario(scenario, overrides)
    base = None
    if cfg.init != "none":  # a base that does not fit the scenario's model fails here, before any folder exists
        base = load_base(cfg.init, cfg.model.resolve())
    rd = PreparedRun(run_dir or Path("runs") / f"{cfg.name}-{uuid.uuid4().hex[:6]}")
    rd.path.mkdir(parents=True, exist_ok=True)
    if base is not None:
        rd.write_base(base.record(cfg.init))
    if partition:
        root = resolve_dataset(cfg)
        manifest = partition_dataset(read_database(root), cfg.partition, dataset=str(root.resolve()))
        manifest.save(rd.manifest_path)
    atomic_write_json(rd.run_info_path, {"run_name": f"{cfg.name}-{uuid.uuid4().hex[:8]}",
                                         "scenario": str(scenario), "overrides": overrides})
    rd.write_config(cfg)  # last: its presence marks a prepared run
    return rd
