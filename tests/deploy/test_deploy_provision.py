"""deploy.provision: consortium folder layout, key confinement, permissions, scripts and read-back."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from deploy.provision import ConsortiumSpec, load_consortium, provision_consortium
from fedecg.errors import FedECGError

SITES = ("site-a", "site-b", "site-c")


@pytest.fixture(scope="module")
def cons(tmp_path_factory):
    out = tmp_path_factory.mktemp("cons") / "consortium"
    spec = ConsortiumSpec(sites=SITES, superlink_host="link.example.org", port=9443, sans=("10.0.0.5",))
    return provision_consortium(out, spec)


def _private_key_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and b"PRIVATE KEY-----" in p.read_bytes()]


def test_each_private_key_exists_once_in_its_own_folder(cons):
    keys = sorted(p.relative_to(cons.root).as_posix() for p in _private_key_files(cons.root))
    assert keys == sorted(["coordinator/ca/ca.key", "coordinator/superlink/server.key",
                           *(f"sites/{s}/supernode.key" for s in SITES)])


def test_private_keys_are_owner_only_and_scripts_executable(cons):
    for path in _private_key_files(cons.root):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for site in SITES:
        assert cons.sites[site].start_script.stat().st_mode & stat.S_IXUSR
    assert (cons.coordinator / "start-superlink.sh").stat().st_mode & stat.S_IXUSR


def test_site_bundle_is_self_contained_and_key_registered_copy_matches(cons):
    for site in SITES:
        bundle = cons.sites[site]
        assert sorted(p.name for p in bundle.root.iterdir()) == sorted(
            ["README.md", "ca.crt", "fedecg-supernode.service", "site.env", "start-supernode.sh", "supernode.key",
             "supernode.pub"])
        assert bundle.public_key.read_bytes() == cons.site_public_key(site).read_bytes()
        assert bundle.ca_cert.read_bytes() == cons.ca_cert.read_bytes()
        env = (bundle.root / "site.env").read_text()
        assert f'SITE="{site}"' in env and 'SUPERLINK="${SUPERLINK:-link.example.org:9443}"' in env


def test_manifest_records_public_facts_only(cons):
    manifest = json.loads((cons.root / "consortium.json").read_text())
    assert manifest["superlink_address"] == "link.example.org:9443"
    assert set(manifest["certificate_sans"]) == {"link.example.org", "localhost", "10.0.0.5", "127.0.0.1"}
    assert set(manifest["site_key_fingerprints"]) == set(SITES)
    assert "PRIVATE" not in (cons.root / "consortium.json").read_text()


def test_scripts_are_valid_bash_and_name_the_right_flags(cons):
    scripts = [*cons.coordinator.glob("*.sh"), *(cons.sites[s].start_script for s in SITES)]
    for script in scripts:
        res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, (script, res.stderr)
    superlink = (cons.coordinator / "start-superlink.sh").read_text()
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth", "9443"):
        assert flag in superlink
    supernode = cons.sites["site-a"].start_script.read_text()
    for flag in ("--root-certificates", "--auth-supernode-private-key", "--node-config", "data-dir=", "site-name="):
        assert flag in supernode


def test_start_supernode_refuses_a_folder_without_ptbxl_table(cons, tmp_path):
    res = subprocess.run([str(cons.sites["site-a"].start_script), str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "no ptbxl_database.csv" in res.stderr


def test_flwr_config_points_at_absolute_ca(cons):
    text = (cons.flwr_home / "config.toml").read_text()
    assert 'default = "consortium"' in text
    assert f'root-certificates = "{(cons.coordinator / "superlink" / "ca.crt").as_posix()}"' in text


def test_load_consortium_round_trips(cons):
    again = load_consortium(cons.root)
    assert again.spec == cons.spec
    assert again.sites == cons.sites


def test_refuses_non_empty_folder_and_bad_specs(cons, tmp_path):
    with pytest.raises(FedECGError, match="not empty"):
        provision_consortium(cons.root, cons.spec)
    with pytest.raises(FedECGError, match="not allowed"):
        ConsortiumSpec(sites=("Bad Name",), superlink_host="x")
    with pytest.raises(FedECGError, match="repeat"):
        ConsortiumSpec(sites=("a", "a"), superlink_host="x")
    with pytest.raises(FedECGError, match="at least one site"):
        ConsortiumSpec(sites=(), superlink_host="x")
    with pytest.raises(FedECGError, match="not found"):
        load_consortium(tmp_path)


def test_site_bundle_starts_the_worker_and_the_short_back_off_supernode_when_asked(tmp_path):
    """SITE_WORKER=true + FEDECG_SUPERNODE_IDLE_POLL_S=1: the start script launches the supervised worker (its
    socket named in the node config, the SuperNode's PID as its parent) and the SuperNode via deploy.supernode."""
    import os
    import subprocess
    import sys
    import time

    from flwr.common.config import parse_config_args

    cons = provision_consortium(tmp_path / "cons", ConsortiumSpec(sites=("site-a",), superlink_host="link.example"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "ptbxl_database.csv").write_text("ecg_id\n")
    fake = tmp_path / "fakepython"
    record = tmp_path / "calls.txt"
    fake.write_text(f"#!/usr/bin/env bash\nprintf '%s\\n' \"$*\" >> {record}\n"
                    "[ \"$2\" = deploy.supernode ] && printf '%s\\n' \"$@\"\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "FEDECG_PYTHON": str(fake),
           "SITE_WORKER": "true", "FEDECG_SUPERNODE_IDLE_POLL_S": "1"}
    res = subprocess.run([str(cons.sites["site-a"].start_script), str(data)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()  # `fedecg privacy policy` prints first, then the fake SuperNode its argv
    args = out[out.index("deploy.supernode") - 1:]
    assert args[:2] == ["-m", "deploy.supernode"]
    node_config = parse_config_args([args[args.index("--node-config") + 1]])
    sock = cons.sites["site-a"].root / "run" / "worker.sock"
    assert node_config["worker-socket"] == str(sock) and node_config["data-dir"] == str(data.resolve())
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    deadline = time.monotonic() + 30
    while "deploy.worker supervise" not in (record.read_text() if record.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    worker_call = next(line for line in record.read_text().splitlines() if "deploy.worker supervise" in line)
    assert f"--socket {sock}" in worker_call and "--parent-pid " in worker_call
    assert "worker-socket" not in worker_call  # the worker gets the site's own node config
