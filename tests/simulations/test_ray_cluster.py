"""simulation.ray_address: `fedecg simulate` joins an existing Ray cluster instead of starting its own.

A one-node cluster on loopback (``ray start --head --block``, its own temp folder and ports) runs a tiny
scenario; the cluster is then stopped by the PID of the ``ray start`` process this test started and its
descendants (not ``ray stop``, which stops every Ray cluster on the machine, other people's included).
Slow (a Ray cluster start plus a simulation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from deploy.processes import ProcessGroup, free_port, port_open

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SITES = ROOT / "tests" / "data" / "tiny-sites.yaml"


@pytest.fixture()
def ray_cluster(tmp_path):
    """A one-node Ray head on 127.0.0.1 with 2 CPUs; yields its address."""
    ray = Path(sys.executable).parent / "ray"
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("RAY_ADDRESS", None)
    with ProcessGroup(tmp_path / "logs", env=env) as group:
        group.start("ray-head", [str(ray), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                                 "--port", str(port), "--num-cpus", "2", "--num-gpus", "0",
                                 "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp),
                                 "--min-worker-port", "20000", "--max-worker-port", "20100"])
        deadline = time.monotonic() + 180
        while not port_open("127.0.0.1", port):
            assert group["ray-head"].alive(), group["ray-head"].log_tail()
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(0.5)
        time.sleep(3)  # raylet registers after the GCS port opens
        group.snapshot()
        yield f"127.0.0.1:{port}"
        group.snapshot()
    # leaving the group stopped `ray start --block` (it shuts its cluster down) and every descendant by PID


def test_simulation_joins_an_existing_ray_cluster(tmp_path, demo_ptbxl, ray_cluster):
    from fedecg.config import SimulationConfig

    run = tmp_path / "run"
    args = ["simulate", str(SITES), "--run-dir", str(run), "--set", f"dataset={demo_ptbxl}", "--set", "rounds=1",
            "--set", "local_steps=1", "--set", "partition.min_records=1", "--set", "output.synthesize=0",
            "--set", "dp=true", "--set", "site_policy.max_epsilon_run=1000",
            "--set", "site_policy.max_epsilon_lifetime=1000"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if "ray_address" in SimulationConfig.__dataclass_fields__:
        args += ["--set", f"simulation.ray_address={ray_cluster}"]
    else:  # until fedecg/config.py has the key, the runner takes Ray's own RAY_ADDRESS
        env["RAY_ADDRESS"] = ray_cluster
    res = subprocess.run([sys.executable, "-m", "fedecg", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert f"joining the Ray cluster at {ray_cluster}" in out
    assert "Ray cluster: 2 CPUs" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1] and len(rows[0]["sites"]) == 4
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
