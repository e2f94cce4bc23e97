"""privacy.pipeline / `fedecg audit`: a self-built run directory → audit.json (contract keys), report.html."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedecg.cli import app


@pytest.fixture(scope="module")
def run_dir(demo_ptbxl, tmp_path_factory):
    """The documented run layout: manifest.json, checkpoints/latest.pt (untrained tiny model), ledger."""
    from ptbxl.layout import read_database
    from ptbxl.partition import partition_dataset
    from sssd.checkpoint import save_checkpoint
    from sssd.config import model_preset
    from sssd.model import SSSDDenoiser

    rd = tmp_path_factory.mktemp("run")
    manifest = partition_dataset(read_database(demo_ptbxl), by="site", dataset=str(demo_ptbxl))
    manifest.save(rd / "manifest.json")
    cfg = model_preset("tiny", T=50)
    torch.manual_seed(0)
    model = SSSDDenoiser(cfg)
    save_checkpoint(
        rd / "checkpoints" / "latest.pt",
        {
            "round": 1,
            "model_config": cfg.to_dict(),
            "state_dict": model.state_dict(),
            "ema_state_dict": None,
            "label_codes": list(manifest.label_codes),
        },
    )
    sites = {
        c.client_id: {
            "n_records": len(c.train),
            "delta": 1e-3,
            "max_grad_norm": 1.0,
            "accountant": "rdp",
            "history": [{"round": 1, "noise_multiplier": 1.0, "sample_rate": 0.25, "steps": 4, "epsilon": None}],
        }
        for c in manifest.clients[:-1]
    }  # the last client trained without DP
    (rd / "privacy_ledger.json").write_text(json.dumps({"delta_policy": None, "sites": sites, "client_level": None}))
    return rd, manifest


def test_audit_of_copied_training_records_fails_and_writes_report(run_dir, tmp_path):
    from ptbxl.dataset import load_arrays

    rd, manifest = run_dir
    train = load_arrays(manifest.dataset, manifest.ecg_ids("train")[:12])
    np.savez(tmp_path / "syn.npz", signals=np.asarray(train.x))
    out = tmp_path / "audit"
    res = CliRunner().invoke(
        app,
        [
            "audit",
            str(rd),
            "--out",
            str(out),
            "--synthetic",
            str(tmp_path / "syn.npz"),
            "--n-mia",
            "8",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    audit = json.loads((out / "audit.json").read_text())
    assert {"dcr", "nndr", "near_copy_share", "mia_auc", "epsilon", "verdict"} <= set(audit)
    assert audit["near_copy_share"] == 1.0
    assert audit["verdict"]["overall"] == "FAIL"
    assert 0.0 <= audit["mia_auc"] <= 1.0
    nonpriv = audit["epsilon"]["non_private_sites"]
    assert nonpriv == [manifest.clients[-1].client_id] and audit["epsilon"]["release"]["epsilon"] == "inf"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "FAIL" in html


def test_audit_samples_from_checkpoint_when_no_synthetic_given(run_dir, tmp_path):
    from privacy.pipeline import AuditRunConfig, run_audit

    rd, _ = run_dir
    audit = run_audit(rd, tmp_path / "a", cfg=AuditRunConfig(n_synthetic=6, n_mia=6, sampling_steps=3))
    assert audit["n_synthetic"] == 6
    assert audit["near_copy_share"] == 0.0  # an untrained model copies nothing
    assert "sampled from" in audit["synthetic_source"]
    assert (tmp_path / "a" / "report.html").is_file()


def test_holdout_folder_never_contributes_training_records(run_dir):
    from privacy.inputs import load_holdout, read_run

    rd, manifest = run_dir
    run = read_run(rd)
    default = load_holdout(None, run)
    assert set(map(int, default.ecg_ids)) == set(manifest.ecg_ids("test"))
    # a copy of the same (demo) dataset elsewhere: its training records are filtered out, the rest kept
    import shutil

    copy = rd / "copy"
    if not copy.exists():
        shutil.copytree(manifest.dataset, copy)
    other = set(map(int, load_holdout(copy, run).ecg_ids))
    assert not other & set(manifest.ecg_ids("train"))
    assert set(manifest.ecg_ids("test")) <= other
