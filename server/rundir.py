"""The run directory: the one place a run's results live, written so that nothing is lost on a crash.

```
RUN_DIR/config.yaml            the resolved scenario (ScenarioConfig)
RUN_DIR/base.json              the pretrained base the run started from (init, path, sha256, card); init != none
RUN_DIR/manifest.json          partition manifest (simulation)
RUN_DIR/metrics.jsonl          one JSON object per finished round (appended + fsynced)
RUN_DIR/privacy_ledger.json    per-site DP-SGD history as reported by the sites (+ client-level DP if used)
RUN_DIR/checkpoints/round-NNNN.pt, latest.pt   atomic (temp file + rename); global weights + server EMA
RUN_DIR/status.json            running | completed | failed (+ error)
```
The names are :class:`fedecg.rundir.RunLayout`'s (every room may use it; RunDir builds on it).
A round counts as complete once its checkpoint is on disk; ``--resume`` continues from the last such round
(metrics lines of rounds after it, left by a crash, are dropped first).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import yaml

from fedecg.config import ScenarioConfig
from fedecg.errors import FedECGError
from fedecg.io import atomic_write_json, atomic_write_text, read_json_object, read_jsonl
from fedecg.rundir import RunLayout
from sssd.checkpoint import load_checkpoint, save_checkpoint


def merge_evaluations(lines: list[dict]) -> list[dict]:
    """metrics.jsonl lines → rows: each ``{"round": r, "evaluation": {"sites": ..., "server": ...}}`` line is
    folded into round r's row (its sites' val-* and the server's val-loss; a later line wins), then dropped."""
    rows = [line for line in lines if "evaluation" not in line]
    by_round = {int(r.get("round", 0)): r for r in rows}
    for line in lines:
        if "evaluation" not in line or int(line.get("round", 0)) not in by_round:
            continue
        row, evaluation = by_round[int(line["round"])], line["evaluation"]
        for site, vals in evaluation.get("sites", {}).items():
            row.setdefault("sites", {}).setdefault(site, {"status": "evaluated-only"}).update(vals)
        row.setdefault("server", {}).update(evaluation.get("server", {}))
    return rows


class RunDir(RunLayout):
    """A run directory: the paths of :class:`fedecg.rundir.RunLayout`, read and written safely."""

    # ---- config --------------------------------------------------------------------------------------
    def write_config(self, cfg: ScenarioConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def read_config(self) -> ScenarioConfig:
        """The run's config, validated without looking for its ``init`` base file (a run continues from its
        checkpoints; base.json records the base)."""
        if not self.config_path.is_file():
            raise FedECGError(f"{self.path} is not a run directory (no config.yaml)")
        data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        return ScenarioConfig.from_dict(data, str(self.config_path)).validate(check_files=False)

    # ---- pretrained base -----------------------------------------------------------------------------
    def write_base(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.base_path, record)

    def read_base(self) -> dict | None:
        """base.json, or None when the run has none (init: none)."""
        return read_json_object(self.base_path)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def latest_round(self) -> int:
        rounds = self.completed_rounds()
        return rounds[-1] if rounds else 0

    def save_checkpoint(self, server_round: int, payload: dict, keep: int = 0) -> Path:
        path = self.checkpoint_path(server_round)
        save_checkpoint(path, payload)
        save_checkpoint(self.latest_checkpoint, payload)
        if keep > 0:
            for old in self.completed_rounds()[:-keep]:
                self.checkpoint_path(old).unlink(missing_ok=True)
        return path

    def load_latest(self) -> dict | None:
        r = self.latest_round()
        return load_checkpoint(self.checkpoint_path(r)) if r else None

    # ---- metrics / status ----------------------------------------------------------------------------
    def metrics(self) -> list[dict]:
        """One row per finished round; ``evaluation`` lines (a round's model scored at the start of the next one,
        ``strategy.evaluate: with-train``) are merged into the row of the round they score."""
        return merge_evaluations(read_jsonl(self.metrics_path))

    def truncate_metrics(self, last_round: int) -> None:
        """Drop metric lines of rounds after ``last_round`` (left by a crash before their checkpoint)."""
        rows = [r for r in read_jsonl(self.metrics_path) if int(r.get("round", 0)) <= last_round]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def write_status(self, status: str, **extra) -> None:
        atomic_write_json(self.status_path, {"status": status, "time": time.time(), "pid": os.getpid(),
                                             "host": socket.gethostname(), **extra})

    def status(self) -> dict:
        """status.json; a "running" run whose process is gone (killed) reads, and is rewritten, as
        "interrupted" (resume it with `fedecg simulate --resume`)."""
        p = self.status_path
        if not p.exists():
            return {"status": "missing"}
        st = json.loads(p.read_text())
        if st.get("status") == "running" and _process_gone(st):
            st = {**st, "status": "interrupted", "note": "the process that ran it is gone; resume it"}
            atomic_write_json(p, st)
        return st

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files of atomic writes a killed process left behind (``.<name>.*.tmp``) in
        the run directory and its checkpoints; call only while no other process writes this run."""
        gone = []
        for folder in (self.path, self.checkpoints):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                tmp.unlink(missing_ok=True)
                gone.append(tmp)
        return gone


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, saved value, current value) for every leaf where two config dicts differ."""
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name + ".")
        elif a != b:
            out.append((name, a, b))
    return out


def check_resume_config(rd: RunDir, cfg: ScenarioConfig, ckpt: dict) -> None:
    """A resumed run must be the run its checkpoint belongs to: FedECGError naming every key where
    config.yaml differs from the checkpoint's ``run_config`` (both normalised through ScenarioConfig, so keys
    added to the config since the checkpoint was written compare as their defaults)."""
    saved = ckpt.get("run_config")
    if not isinstance(saved, dict):
        raise FedECGError(f"{rd.checkpoints}: the checkpoint of round {ckpt.get('round')} has no run_config; "
                          "cannot check that config.yaml is the same run")
    try:
        saved = ScenarioConfig.from_dict(saved, "checkpoint run_config").to_dict()
    except FedECGError:
        pass  # a key this version does not know: compare as stored (it will show as a difference)
    normal = lambda d: json.loads(json.dumps(d, default=str))  # noqa: E731 - tuples → lists, as in YAML
    diffs = config_differences(normal(saved), normal(cfg.to_dict()))
    if diffs:
        shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} in config.yaml" for k, a, b in diffs[:10])
        more = f" (and {len(diffs) - 10} more)" if len(diffs) > 10 else ""
        raise FedECGError(f"cannot resume {rd.path}: {rd.config_path.name} differs from the checkpoint of round "
                          f"{ckpt.get('round')} in {len(diffs)} key(s): {shown}{more}. A resumed run must be the "
                          "same run: restore config.yaml (the checkpoint's run_config), or start a new run "
                          "directory")


def _process_gone(status: dict) -> bool:
    """True when ``status`` names a process on this host that no longer exists."""
    pid, host = status.get("pid"), status.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
