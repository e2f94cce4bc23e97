"""bench/bench_deploy.py: the log parsing and round breakdown (fast) and the JSON contract."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_deploy as B  # noqa: E402

T0 = datetime(2026, 1, 1, 12, 0, 0).timestamp()


def _line(dt: float, text: str) -> str:
    t = T0 + dt
    return datetime.fromtimestamp(t).strftime("%Y-%m-%dT%H:%M:%S") + f".{int(round(t % 1 * 1000)):03d} {text}"


def _log() -> str:
    events = [(0.0, "\x1b[92mINFO \x1b[0m:      [RUN 5]"), (0.0, "INFO :      Receiving: train message (ID: a)"),
              (2.0, "INFO :      Start `flwr-clientapp` process"), (2.5, "INFO :      Received successfully"),
              (12.5, "INFO :      Sending: train message (ID: b)"), (13.0, "INFO :      Sent successfully"),
              (16.0, "INFO :      [RUN 5]"), (16.0, "INFO :      Receiving: evaluate message (ID: c)"),
              (17.0, "INFO :      Received successfully"), (18.0, "INFO :      Start `flwr-clientapp` process"),
              (21.0, "INFO :      Sending: evaluate message (ID: d)"), (21.2, "INFO :      Sent successfully")]
    return "\n".join(_line(dt, text) for dt, text in events) + "\nunstamped line\n"


def test_supernode_log_is_parsed_into_messages_and_segments():
    msgs = B.parse_supernode_log(_log())
    assert [m["type"] for m in msgs] == ["train", "evaluate"]
    train, evaluate = (B.message_segments(m) for m in msgs)
    # the process started while the objects were still arriving: launch counts from the reception
    assert train == pytest.approx({"pull": 0.0, "launch": 2.0, "app": 10.5, "push": 0.5}, abs=0.01)
    assert evaluate == pytest.approx({"pull": 1.0, "launch": 1.0, "app": 3.0, "push": 0.2}, abs=0.01)


def test_round_breakdown_and_headline_numbers():
    metrics = [{"round": 1, "time": T0 + 22.0, "server": {"round-seconds": 22.0, "train-phase-seconds": 14.0},
                "sites": {"s": {"train-seconds": 4.0, "val-seconds": 1.0, "status": "accepted"}}}]
    out = B.analyse(metrics, {"s": _log()}, {}, None)
    r = out["rounds"][0]["sites"]["s"]
    assert r["compute"] == pytest.approx(5.0) and r["transfer"] == pytest.approx(1.7, abs=0.01)
    assert r["startup"] == pytest.approx(2.0 + 10.5 + 1.0 + 3.0 - 5.0, abs=0.01)
    assert r["waiting"] == pytest.approx(22.0 - 5.0 - 11.5 - 1.7, abs=0.01)
    assert (out["round_s"], out["compute_s"], out["overhead_s"]) == (22.0, 5.0, 17.0)
    # without val-seconds the evaluation compute comes from the cold-start probe
    del metrics[0]["sites"]["s"]["val-seconds"]
    out = B.analyse(metrics, {"s": _log()}, {"s": {"eval_call": 0.5}}, None)
    assert out["compute_s"] == 4.5


def test_last_line_is_the_json_contract(monkeypatch, capsys, tmp_path):
    fake = {"round_s": 20.0, "compute_s": 5.0, "overhead_s": 15.0, "ok": True, "flower_status": "finished:completed",
            "run_dir_status": "completed", "cold_start": {}, "work_dir": str(tmp_path), "rounds": [],
            "config": {"sites": 3, "preset": "tiny", "polls": "tuned"}}
    monkeypatch.setattr(B, "run", lambda args: dict(fake))
    assert B.main(["--sites", "3", "--rounds", "3", "--preset", "tiny", "--json", "--out", str(tmp_path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    data = json.loads(last)
    assert {"round_s", "compute_s", "overhead_s"} <= set(data)
    assert data["overhead_s"] == data["round_s"] - data["compute_s"]
    assert json.loads((tmp_path / "bench-deploy.json").read_text())["round_s"] == 20.0
