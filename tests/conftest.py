"""The one shared conftest of the per-room test folders (tests/<room>/). Real PTB-XL data comes only through
$PTBXL_DIR (set by .ci/run); tests that need it skip with a clear reason when it is absent, so the default run
passes on a fresh clone. The tiny WFDB folder is ``demo_ptbxl``; the tiny model is ``sssd.config.model_preset
("tiny")`` built by ``sssd.checkpoint.build_model``; torch runs one thread in the test process (``_one_torch_thread``),
so that timings and results do not depend on the machine's core count (subprocesses set their own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ptbxl_dir() -> Path:
    """The real PTB-XL subset (PhysioNet layout) named by $PTBXL_DIR, or skip."""
    value = os.environ.get("PTBXL_DIR")
    if not value:
        pytest.skip("PTBXL_DIR is not set: real PTB-XL data not available (.ci/run sets it from ../shared/ptbxl)")
    path = Path(value)
    if not (path / "ptbxl_database.csv").is_file():
        pytest.skip(f"PTBXL_DIR={value} has no ptbxl_database.csv")
    return path


@pytest.fixture(scope="session")
def demo_ptbxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in PTB-XL's layout (60 records, 4 sites, seed 0), shared by the session.

    Built by ``ptbxl.demo.make_demo_dataset``; treat it as read-only (copy it before corrupting files)."""
    from ptbxl.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "ptbxl", n_records=60, n_sites=4, seed=0)


@pytest.fixture()
def flower_task_identity():
    """Flower Messages built outside a running app need a task identity (run, task, node ids)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
