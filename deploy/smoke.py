"""A tiny Flower app that checks a deployment end to end without training anything.

``write_smoke_app(dest)`` writes a Flower project (``pyproject.toml`` + package ``fedecgsmoke``). Its ServerApp
runs ``rounds`` rounds; each round it waits until ``min-nodes`` SuperNodes are connected, sends every
connected node a "train" message, collects the replies (``round-timeout`` seconds) and appends one JSON line
per round to ``<out>`` (a run-config path on the SuperLink machine)::

    {"round": r, "nodes": [ids sent to], "replies": [{"node_id", "data_dir", "n_records", "calls",
     "started", "pid"}], "errors": [...]}

Its ClientApp counts PTB-XL rows in ``<data-dir>/ptbxl_database.csv`` (node config), sleeps ``sleep``
seconds (run config; lets a test kill a SuperNode mid-round), and increments ``calls`` in
``context.state`` — so the output shows whether a node's ``context.state`` survived a SuperNode restart.
Deployment tests use it before (and independently of) the real fedecg apps.
"""

from __future__ import annotations

from pathlib import Path

from fedecg.io import atomic_write_text

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedecgsmoke"
version = "1.0.0"
description = "fedecg deployment smoke test (no training)"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedecg"

[tool.flwr.app.components]
serverapp = "fedecgsmoke.server_app:app"
clientapp = "fedecgsmoke.client_app:app"

[tool.flwr.app.config]
rounds = 2
min-nodes = 1
round-timeout = 60.0
wait-timeout = 60.0
sleep = 0.0
out = "smoke.jsonl"
"""

SERVER_APP = '''\
"""Smoke ServerApp: fan a message out to every connected node each round and log the replies."""

import json
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


def _wait_for_nodes(grid, min_nodes, timeout):
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_nodes or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = str(cfg["out"])
    for rnd in range(1, int(cfg["rounds"]) + 1):
        nodes = _wait_for_nodes(grid, int(cfg["min-nodes"]), float(cfg["wait-timeout"]))
        if len(nodes) < int(cfg["min-nodes"]):
            raise RuntimeError(f"round {rnd}: only {len(nodes)} nodes connected, need {cfg['min-nodes']}")
        msgs = [
            Message(RecordDict({"config": ConfigRecord({"round": rnd, "sleep": float(cfg["sleep"])})}),
                    dst_node_id=nid, message_type="train", group_id=str(rnd))
            for nid in nodes
        ]
        replies = list(grid.send_and_receive(msgs, timeout=float(cfg["round-timeout"])))
        ok, errors = [], []
        for rep in replies:
            if rep.has_error():
                errors.append({"node_id": rep.metadata.src_node_id, "error": rep.error.reason})
            else:
                row = dict(rep.content["config"])
                row["node_id"] = rep.metadata.src_node_id
                ok.append(row)
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"round": rnd, "nodes": nodes, "replies": ok, "errors": errors}) + "\\n")
        if len(ok) < int(cfg["min-nodes"]):
            raise RuntimeError(f"round {rnd}: {len(ok)} replies, fewer than min-nodes={cfg['min-nodes']}")
'''

CLIENT_APP = '''\
"""Smoke ClientApp: report the node's data folder and a context.state call counter."""

import os
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    started = time.time()
    data_dir = str(context.node_config.get("data-dir", ""))
    table = Path(data_dir) / "ptbxl_database.csv"
    n_records = max(0, len(table.read_text(encoding="utf-8").splitlines()) - 1) if table.is_file() else -1
    calls = int(context.state["smoke"]["calls"]) + 1 if "smoke" in context.state else 1
    context.state["smoke"] = MetricRecord({"calls": calls})
    time.sleep(float(msg.content["config"]["sleep"]))
    reply = ConfigRecord({"data_dir": data_dir, "n_records": n_records, "calls": calls,
                          "started": started, "pid": os.getpid()})
    return Message(RecordDict({"config": reply}), reply_to=msg)
'''


def write_smoke_app(dest: Path) -> Path:
    """Write the smoke Flower project into ``dest`` (created) and return ``dest``."""
    dest = Path(dest)
    atomic_write_text(dest / "pyproject.toml", PYPROJECT)
    atomic_write_text(dest / "fedecgsmoke" / "__init__.py", '"""fedecg deployment smoke app."""\n')
    atomic_write_text(dest / "fedecgsmoke" / "server_app.py", SERVER_APP)
    atomic_write_text(dest / "fedecgsmoke" / "client_app.py", CLIENT_APP)
    return dest
