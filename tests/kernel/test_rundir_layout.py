"""fedecg.rundir.RunLayout names every file of a run directory (issue 14): RunDir builds on it, a real run writes
exactly where it says, the names on disk stay those of earlier runs, and no product module spells them itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from fedecg.rundir import RunLayout
from server.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]

# the names runs have always been written under: changing one strands every earlier run directory
ON_DISK = {
    "config_path": "config.yaml", "run_info_path": "run.json", "base_path": "base.json",
    "manifest_path": "manifest.json", "data_check_path": "data_check.json", "metrics_path": "metrics.jsonl",
    "ledger_path": "privacy_ledger.json", "status_path": "status.json", "checkpoints": "checkpoints",
    "latest_checkpoint": "checkpoints/latest.pt", "node_state_dir": "node-state",
    "simulated_node_config_path": "node-state/simulated-node-config.json", "cache_dir": ".cache",
    "flwr_home": "flwr_home", "tensorboard_dir": "tensorboard", "synthetic_dir": "synthetic",
    "synthetic_npz": "synthetic/synthetic.npz", "fidelity_path": "fidelity.json", "fidelity_png": "fidelity.png",
    "training_curves_png": "training_curves.png", "privacy_budget_path": "privacy_budget.json",
    "epsilon_png": "epsilon_over_rounds.png", "summary_path": "summary.txt",
    "canary_audit_path": "canary_audit.json",
}


def _properties() -> list[str]:
    return sorted(n for n, v in vars(RunLayout).items() if isinstance(v, property))


def test_the_layout_keeps_the_names_runs_were_written_under(tmp_path):
    layout = RunLayout(str(tmp_path))  # a str is taken as a path
    assert layout.path == tmp_path
    assert _properties() == sorted(ON_DISK)  # a new path must be added here (and keep its name forever)
    for name, rel in ON_DISK.items():
        assert getattr(layout, name) == tmp_path / rel, name
    assert layout.checkpoint_path(7) == tmp_path / "checkpoints" / "round-0007.pt"
    assert layout.checkpoint_path(12345) == tmp_path / "checkpoints" / "round-12345.pt"
    assert layout.site_state_dir("site-a") == tmp_path / "node-state" / "site-a"


def test_rundir_and_runlayout_agree_on_every_path(tmp_path):
    rd, layout = RunDir(tmp_path), RunLayout(tmp_path)
    assert isinstance(rd, RunLayout)
    for name in _properties():
        assert getattr(rd, name) == getattr(layout, name), name
    for r in (0, 1, 42, 10_000):
        assert rd.checkpoint_path(r) == layout.checkpoint_path(r)
    assert rd.site_state_dir("x") == layout.site_state_dir("x")


def test_round_checkpoints_are_listed_by_round_not_by_name(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.round_checkpoints() == [] and layout.completed_rounds() == []
    layout.checkpoints.mkdir()
    for r in (10_000, 2, 9999):
        layout.checkpoint_path(r).write_bytes(b"")
    for other in ("latest.pt", ".round-0003.pt.abc.tmp", "round-7.pt", "notes.txt"):
        (layout.checkpoints / other).write_bytes(b"")
    assert layout.completed_rounds() == [2, 9999, 10_000]
    assert layout.round_checkpoints() == [layout.checkpoint_path(r) for r in (2, 9999, 10_000)]
    assert RunDir(tmp_path).latest_round() == 10_000


def test_a_simulated_run_writes_where_the_layout_says(tmp_path, demo_ptbxl):
    from deploy.runstatus import read_status_file
    from privacy.inputs import read_run
    from simulations.runner import simulate

    scenario = {
        "name": "layout", "rounds": 1, "seed": 1, "dataset": str(demo_ptbxl),
        "partition": {"by": "site", "min_records": 1, "tail": "pool"}, "model": "tiny",
        "train": {"local_steps": 1, "batch_size": 4, "eval_batches": 1},
        "strategy": {"min_train_nodes": 1, "min_available_nodes": 1}, "output": {"synthesize": 0},
        "site_policy": {"dp_required": False},  # the sites' own policy: no DP-SGD needed here
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario))
    run = RunDir(simulate(path, tmp_path / "run", engine="inprocess"))
    assert run.path == tmp_path / "run"

    for p in (run.config_path, run.run_info_path, run.manifest_path, run.data_check_path, run.metrics_path,
              run.status_path, run.checkpoint_path(1), run.latest_checkpoint, run.node_state_dir):
        assert p.exists(), p
    named = {getattr(run, n).relative_to(run.path).parts[0] for n in _properties()}
    written = {p.name for p in run.path.iterdir()}
    assert written <= named, f"the run wrote {sorted(written - named)}, which RunLayout does not name"
    assert {p.name for p in run.checkpoints.iterdir()} == {"round-0001.pt", "latest.pt"}

    # and every reader finds them there
    assert run.status()["status"] == "completed" == read_status_file(run.path)["status"]
    assert [r["round"] for r in run.metrics()] == [1]
    inputs = read_run(run.path)
    assert inputs.checkpoint == run.latest_checkpoint and inputs.train_ids
    run.latest_checkpoint.unlink()  # without latest.pt the audit falls back to the newest round checkpoint
    assert read_run(run.path).checkpoint == run.checkpoint_path(1)


# ---- nobody else spells the names ------------------------------------------------------------------------------

PRODUCT = ("fedecg", "ptbxl", "sssd", "privacy", "client", "server", "simulations", "deploy", "evaluation",
           "pretraining", "experiments", "bench")
GUARDED = ("manifest.json", "status.json", "metrics.jsonl", "latest.pt")
# a string that builds a path ending in one of the names (no spaces: help texts and docstrings describe, not build)
_PATHLIKE = re.compile(r"^[\w./{}\-]*(?<![\w-])(" + "|".join(re.escape(n) for n in GUARDED) + r")$")
ALLOWED = {
    "fedecg/rundir.py": "the layout itself",
    "deploy/sites.py": "the partition manifest of a split-sites folder (OUT/manifest.json), not a run directory",
}


def spelled_run_paths(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant (f-string pieces included) that names a guarded run file."""
    return sorted((node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _PATHLIKE.match(node.value))


def test_the_checker_finds_spelled_run_paths():
    src = ('p = run_dir / "status.json"\nq = f"{run}/metrics.jsonl"\nr = d / "checkpoints" / "latest.pt"\n'
           "s = f\"{d / 'manifest.json'}: bad\"\nt = 'checkpoints/latest.pt'\n"
           'u = "see RUN_DIR/status.json for why"\nv = "old-status.json"\nw = "manifest.jsonl"\n')
    assert [line for line, _ in spelled_run_paths(src)] == [1, 2, 3, 4, 5]


def test_no_product_module_spells_a_run_file_name():
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            found += [f"{rel}:{line}: {text!r}" for line, text in spelled_run_paths(path.read_text(encoding="utf-8"))]
    assert not found, "use fedecg.rundir.RunLayout (or server.rundir.RunDir) instead:\n" + "\n".join(found)


@pytest.mark.parametrize("rel", sorted(ALLOWED))
def test_allowed_modules_exist(rel):
    assert (ROOT / rel).is_file()  # no stale allowances
