"""The Docker build context never contains patient data, run outputs or keys (issue 16, part 6).

No Docker engine here: ``context_files`` applies Docker's .dockerignore rules (moby/patternmatcher: patterns are
cleaned and relative to the context root, ``*`` and ``?`` stay within one path segment, ``**`` spans any number,
a pattern without ``**/`` matches only at the root, a path is excluded when it or a parent matches, the last
matching pattern wins and ``!`` re-includes) to a tree laid out as docs/deploy.md and compose.yaml suggest
(sites split into deploy/docker/data, runs in deploy/docker/runs, the consortium in deploy/docker/consortium).
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IGNORE = REPO / "deploy" / "docker" / "Dockerfile.dockerignore"


def read_patterns(path: Path) -> list[str]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _compile(pattern: str) -> tuple[re.Pattern, bool]:
    negate = pattern.startswith("!")
    pattern = posixpath.normpath(pattern[1:] if negate else pattern).lstrip("/")
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1:i + 2] == "*":  # "**": any number of segments; "**/" may match none
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$"), negate


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's verdict for one context-relative path (slash-separated)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    verdict = False
    for regex, negate in map(_compile, patterns):
        if any(regex.match(p) for p in prefixes):
            verdict = not negate
    return verdict


def context_files(root: Path, patterns: list[str], prune: tuple[str, ...] = ()) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = [d for d in dirnames if (f"{rel_dir}/{d}" if rel_dir != "." else d) not in prune]
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir != "." else name
            if not excluded(rel, patterns):
                out.append(rel)
    return sorted(out)


SENSITIVE = re.compile(r"(^|/)(data|runs|consortium[^/]*|sites|records100|records500|checkpoints|node-state|"
                       r"\.fedecg)(/|$)|\.(dat|hea|key|npz)$|ptbxl_database\.csv$|\.pt$")


def _guide_tree(root: Path) -> None:
    """The repository plus what the deployment guide and a few runs leave in it."""
    files = [
        "pyproject.toml", "README.md", "fedecg/__init__.py", "fedecg/cli/run.py", "ptbxl/signals.py",
        "client/data.py", "server/loop.py", "privacy/audit.py", "simulations/scenarios/demo.yaml",
        "deploy/__init__.py", "deploy/docker/Dockerfile", "deploy/docker/compose.yaml",
        "evaluation/report.py", "bench/bench_model.py", "sssd/model.py", "sssd/builtin/dipole-small.pt",
        # `fedecg deploy split-sites /path/to/ptbxl deploy/docker/data`
        "deploy/docker/data/site-0/ptbxl_database.csv", "deploy/docker/data/site-0/scp_statements.csv",
        "deploy/docker/data/site-0/records100/00000/00001_lr.hea",
        "deploy/docker/data/site-0/records100/00000/00001_lr.dat",
        "deploy/docker/data/site-1/records500/00000/00002_hr.dat",
        "deploy/docker/data/site-0/.fedecg/ledger-run.json",
        # the launch service's run directory lands in deploy/docker/runs
        "deploy/docker/runs/compose-run/checkpoints/latest.pt", "deploy/docker/runs/compose-run/metrics.jsonl",
        "deploy/docker/runs/compose-run/synthetic/records100/00000/00001_lr.dat",
        "deploy/docker/consortium/sites/site-0/supernode.key", "deploy/docker/consortium/coordinator/ca.crt",
        # elsewhere in a working copy
        "runs/demo/checkpoints/round-0001.pt", "data/ptbxl/ptbxl_database.csv", "deploy/hospital-a/ptbxl/x.hea",
        "notes/export.npz", "scratch/model.pt", ".venv/lib/x.py", ".git/HEAD", "ptbxl/__pycache__/x.pyc",
    ]
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def test_the_context_of_the_guides_layout_holds_no_data_runs_or_keys(tmp_path):
    _guide_tree(tmp_path)
    ctx = context_files(tmp_path, read_patterns(IGNORE))
    leaked = [f for f in ctx if SENSITIVE.search(f) and f != "sssd/builtin/dipole-small.pt"]
    assert leaked == []
    for needed in ("pyproject.toml", "fedecg/cli/run.py", "client/data.py", "deploy/docker/compose.yaml",
                   "deploy/__init__.py", "sssd/builtin/dipole-small.pt", "simulations/scenarios/demo.yaml"):
        assert needed in ctx, needed
    assert not any(f.startswith((".venv/", ".git/")) or f.endswith(".pyc") for f in ctx)


def test_the_old_patterns_matched_only_at_the_root_and_let_the_sites_data_in(tmp_path):
    old = subprocess.run(["git", "show", "fd46cbf:deploy/docker/Dockerfile.dockerignore"], cwd=REPO,
                         capture_output=True, text=True)
    if old.returncode != 0:
        pytest.skip("the repository's history is not available")
    _guide_tree(tmp_path)
    ctx = context_files(tmp_path, read_patterns_text(old.stdout))
    assert "deploy/docker/data/site-0/records100/00000/00001_lr.dat" in ctx  # the fault, reproduced
    assert "deploy/docker/runs/compose-run/checkpoints/latest.pt" in ctx
    assert "runs/demo/checkpoints/round-0001.pt" not in ctx  # root-level "runs" did work


def read_patterns_text(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_matcher_follows_dockers_rules():
    assert excluded("data", ["data"]) and not excluded("deploy/docker/data/x.dat", ["data"])
    assert excluded("deploy/docker/data/x.dat", ["**/data"]) and excluded("data/x", ["**/data"])
    assert excluded("a/b.pt", ["**/*.pt"]) and not excluded("sssd/builtin/b.pt", ["**/*.pt", "!sssd/builtin/*.pt"])
    assert excluded("sssd/builtin/sub/b.pt", ["**/*.pt", "!sssd/builtin/*.pt"])  # "*" stays in one segment
    assert excluded("x/y/z", ["x/**"]) and not excluded("xy/z", ["x/**"])
    assert not excluded("client/data.py", ["**/data"])


def test_the_legacy_builders_dockerignore_has_the_same_patterns():
    assert read_patterns(REPO / ".dockerignore") == read_patterns(IGNORE)


def test_the_real_working_tree_context_has_no_patient_data_or_runs():
    ctx = context_files(REPO, read_patterns(IGNORE), prune=(".git", ".venv", "runs"))
    assert excluded("runs/anything", read_patterns(IGNORE)) and excluded(".venv/x", read_patterns(IGNORE))
    leaked = [f for f in ctx if SENSITIVE.search(f) and not f.startswith(("sssd/builtin/", "tests/"))]
    assert leaked == []
    for src in ("fedecg", "ptbxl", "sssd", "client", "server", "privacy", "simulations", "deploy", "evaluation",
                "bench"):
        assert any(f.startswith(f"{src}/") for f in ctx), src
