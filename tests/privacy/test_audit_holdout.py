"""The audit cannot be fooled by a contaminated holdout or an unrealistic generator (issue 16, part 7).

- CONTRACT: ``fedecg audit RUN_DIR --holdout DIR`` refuses (non-zero exit, names the records) a holdout that
  contains a training record under another ecg_id: records are recognised by content (SHA-256 of the signal
  quantised to 1 µV), not by id.
- The verdict cannot be PASS when evaluation.realism says the audited synthetic ECGs are not ECGs: it says
  UNINFORMATIVE instead.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from fedecg.errors import FedECGError
from privacy.report import verdict

RENUMBERED = (9001, 9002)


@pytest.fixture(scope="module")
def run_dir(demo_ptbxl, tmp_path_factory):
    """A run directory: manifest.json + an untrained tiny checkpoint (the audit's documented inputs)."""
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
    save_checkpoint(rd / "checkpoints" / "latest.pt",
                    {"round": 1, "model_config": cfg.to_dict(), "state_dict": SSSDDenoiser(cfg).state_dict(),
                     "ema_state_dict": None, "label_codes": list(manifest.label_codes)})
    return rd, manifest


def _contaminated_holdout(demo_ptbxl, manifest, dest):
    """A copy of the dataset plus two of the run's training ECGs renumbered (new ecg_ids, new file names)."""
    from ptbxl.constants import LEADS_12
    from ptbxl.header import parse_header, read_format16, write_format16

    shutil.copytree(demo_ptbxl, dest)
    csv = dest / "ptbxl_database.csv"
    df = pd.read_csv(csv)
    sources = manifest.ecg_ids("train")[:2]
    rows = []
    for new_id, old_id in zip(RENUMBERED, sources, strict=True):
        row = df.loc[df["ecg_id"] == old_id].iloc[0].copy()
        header = parse_header(demo_ptbxl / f"{row['filename_lr']}.hea")
        digital = np.round(read_format16(header, (demo_ptbxl / row["filename_lr"]).parent) * 1000).astype(np.int16)
        name = f"{new_id:05d}_lr"
        write_format16(dest / "records100" / "09000", name, digital, 100, LEADS_12)
        row["ecg_id"], row["filename_lr"], row["filename_hr"] = new_id, f"records100/09000/{name}", \
            f"records500/09000/{new_id:05d}_hr"
        row["patient_id"] = 90000 + new_id
        rows.append(row)
    pd.concat([df, pd.DataFrame(rows)], ignore_index=True).to_csv(csv, index=False)
    return dict(zip(RENUMBERED, sources, strict=True))


def test_contract_audit_refuses_a_holdout_with_renumbered_training_records(run_dir, demo_ptbxl, tmp_path):
    rd, manifest = run_dir
    pairs = _contaminated_holdout(demo_ptbxl, manifest, tmp_path / "holdout")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "300"}
    out = subprocess.run([sys.executable, "-m", "fedecg", "audit", str(rd), "--holdout", str(tmp_path / "holdout"),
                          "--out", str(tmp_path / "audit"), "--n", "4", "--n-mia", "4", "--steps", "2",
                          "--device", "cpu"], capture_output=True, text=True, env=env, timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-2000:]
    assert "2 of its" in text and "are training records of the run" in text
    for new_id, old_id in pairs.items():
        assert f"holdout ecg_id {new_id} = training ecg_id {old_id}" in text
    assert not (tmp_path / "audit" / "audit.json").exists()  # no verdict on a contaminated holdout


def test_the_same_folder_without_the_renumbered_copies_is_accepted(run_dir, demo_ptbxl):
    from privacy.inputs import check_holdout_unseen, load_holdout, load_records, read_run

    rd, _ = run_dir
    run = read_run(rd)
    train = load_records(run.dataset, list(run.train_ids))
    check_holdout_unseen(train, load_holdout(None, run), "test fold")  # the test fold: unseen
    with pytest.raises(FedECGError, match="training ecg_id"):
        check_holdout_unseen(train, train.subset([0, 3]), "train")


def _audit(**changes) -> dict:
    stats = {"mean": 1.0, "median": 1.0, "p05": 0.8, "min": 0.7}
    a = {
        "dcr": {"train": stats, "holdout": stats, "baseline_holdout_to_train": stats, "share_closer_to_train": 0.5,
                "expected_share": 0.5, "p_value": 0.5, "binomial": {"p_value": 0.5}},
        "near_copy_share": 0.0, "near_copy": {"threshold": 1 / 3, "baseline_holdout_share": 0.0, "worst": []},
        "epsilon": {"sites": {"a": {"n_records": 1000, "delta": 1e-5, "epsilon": 3.0}},
                    "release": {"epsilon": 3.0, "delta": 1e-5}, "non_private_sites": []},
        "realism": {"criteria": {"beat_rate": True, "inter_lead_correlation_error": True, "hf_power_ratio": True,
                                 "amplitude_ratio": True}, "n_real": 100, "beat_rate": 0.95},
    }
    a.update(copy.deepcopy(changes))
    return a


def test_verdict_is_uninformative_not_pass_when_realism_fails():
    assert verdict(_audit())["overall"] == "PASS"
    bad = _audit()
    bad["realism"]["criteria"]["beat_rate"] = False
    bad["realism"]["beat_rate"] = 0.0
    v = verdict(bad)
    assert v["overall"] == "UNINFORMATIVE" and "fails the realism criteria" in v["summary"]
    check = next(c for c in v["checks"] if c["check"] == "realism")
    assert check["level"] == "INFO" and "beat_rate 0" in check["text"]
    errored = _audit(realism={"error": "ECGs shorter than 2 s", "n_real": 10})
    assert verdict(errored)["overall"] == "UNINFORMATIVE"
    failing = _audit(near_copy_share=0.5)  # memorization still fails, realistic or not
    failing["realism"]["criteria"]["beat_rate"] = False
    assert verdict(failing)["overall"] == "FAIL"


def test_an_audit_of_noise_is_uninformative(run_dir, tmp_path):
    from privacy.pipeline import AuditRunConfig, run_audit

    rd, manifest = run_dir
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", signals=rng.normal(0, 0.2, (12, 8, 1000)).astype(np.float32))
    audit = run_audit(rd, tmp_path / "a", synthetic=tmp_path / "noise.npz",
                      cfg=AuditRunConfig(n_mia=4, realism_reference=40))
    assert audit["realism"]["passed"] is False and audit["realism"]["criteria"]["beat_rate"] is False
    assert audit["verdict"]["overall"] in ("UNINFORMATIVE", "WARN", "FAIL") and audit["verdict"]["overall"] != "PASS"
    assert any(c["check"] == "realism" for c in audit["verdict"]["checks"])
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["realism"]["n_real"] == 40


def test_holdout_must_be_patient_disjoint(run_dir, demo_ptbxl, tmp_path):
    """The privacy unit is the patient: a holdout record of a patient who has training records is refused by
    patient_id (another of their ECGs is not unseen data); the manifest's test fold is patient-disjoint."""
    from privacy.inputs import holdout_patients, load_holdout, read_run

    rd, manifest = run_dir
    run = read_run(rd)
    stated = holdout_patients(run, load_holdout(None, run), None)
    assert stated["patient_disjoint"] is True and stated["holdout_patients"] > 0

    dest = tmp_path / "holdout"
    shutil.copytree(demo_ptbxl, dest)
    csv = dest / "ptbxl_database.csv"
    df = pd.read_csv(csv)
    test_id, train_id = manifest.ecg_ids("test")[0], manifest.ecg_ids("train")[0]
    patient = int(df.loc[df["ecg_id"] == train_id, "patient_id"].iloc[0])
    df.loc[df["ecg_id"] == test_id, "patient_id"] = patient  # a test record now belongs to a training patient
    df.to_csv(csv, index=False)
    hold = load_holdout(dest, run)
    with pytest.raises(FedECGError, match=rf"ecg_id {test_id} \(patient {patient}\).*patient-disjoint"):
        holdout_patients(run, hold, dest)
