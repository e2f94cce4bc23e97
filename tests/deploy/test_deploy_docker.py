"""Static checks of deploy/docker (no Docker engine here): the compose file parses, its commands are accepted
by Flower 1.41's own argument parsers, its mounts match a provisioned consortium, and the Dockerfile's COPY
sources exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deploy.provision import ConsortiumSpec, provision_consortium

DOCKER = Path(__file__).resolve().parents[2] / "deploy" / "docker"
REPO = DOCKER.parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """container path → host path (relative to deploy/docker) for bind mounts."""
    out = {}
    for vol in service.get("volumes", []):
        src, dst = vol.split(":")[:2]
        out[dst] = src
    return out


def test_compose_has_a_superlink_and_three_sites(compose):
    services = compose["services"]
    assert {"superlink", "site-0", "site-1", "site-2", "register", "launch"} <= set(services)
    build = services["superlink"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()


def test_superlink_command_is_accepted_by_flower(compose):
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    cmd = compose["services"]["superlink"]["command"]
    assert cmd[0] == "flower-superlink"
    args = _parse_args_run_superlink().parse_args(cmd[1:])
    assert args.enable_supernode_auth and not args.insecure
    assert args.ssl_certfile and args.ssl_keyfile and args.ssl_ca_certfile
    assert args.host == "0.0.0.0" and args.port == 8000


@pytest.mark.parametrize("site", ["site-0", "site-1", "site-2"])
def test_supernode_commands_are_accepted_by_flower(compose, site):
    from flwr.common.config import parse_config_args
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    service = compose["services"][site]
    args = _parse_args_run_supernode().parse_args(service["command"][1:])
    assert not args.insecure and args.root_certificates and args.auth_supernode_private_key
    assert parse_config_args([args.node_config]) == {"data-dir": "/data", "state-dir": "/state", "site-name": site}
    mounts = _mounts(service)
    assert mounts["/bundle"] == f"./consortium/sites/{site}" and mounts["/data"] == f"./data/{site}"


def test_mounted_paths_exist_in_a_provisioned_consortium(compose, tmp_path):
    cons = provision_consortium(tmp_path / "consortium",
                                ConsortiumSpec(sites=("site-0", "site-1", "site-2"), superlink_host="superlink"))
    for name in ("superlink", "site-0", "site-1", "site-2", "register"):
        service = compose["services"][name]
        mounts = _mounts(service)
        text = " ".join(service["command"])
        for path in re.findall(r"/(?:consortium|bundle)/[\w./$-]+", text):
            root = "/" + path.split("/")[1]
            rel = path[len(root) + 1:]
            host = Path(str(tmp_path / mounts[root].removeprefix("./")))
            if "$$s" in rel:
                for s in ("site-0", "site-1", "site-2"):
                    assert (host / rel.replace("$$s", s)).is_file(), (name, path)
            else:
                assert (host / rel).is_file(), (name, path)
    assert cons.ca_cert.is_file()


def test_dockerfile_copies_existing_sources_and_pins_cpu_torch():
    text = (DOCKER / "Dockerfile").read_text()
    assert text.startswith("#") and re.search(r"^FROM python:3\.1[0-2]-slim$", text, re.M)
    sources = [src for line in text.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]]
    assert "pyproject.toml" in sources and "deploy" in sources
    for src in sources:
        if src == "README.md":  # pyproject's `readme`; written by the lead, may not exist yet in a fresh tree
            continue
        assert (REPO / src).exists(), src
    assert "torch==${TORCH_VERSION}" in text and "FLWR_TELEMETRY_ENABLED=0" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text()
    assert "**/*.key" in ignore and ".venv" in ignore
