"""evaluation.synthesize + `fedecg synthesize`: PTB-XL-layout output from a tiny checkpoint."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from evaluation.synthesize import (
    SamplerSettings,
    conditions_like_dataset,
    explicit_conditions,
    generate,
    parse_sex,
    write_synthetic_dataset,
)
from fedecg.errors import FedECGError


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from ptbxl.labels import LabelVocab
    from sssd.checkpoint import save_checkpoint
    from sssd.config import model_preset
    from sssd.model import SSSDDenoiser

    cfg = model_preset("tiny")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"round": 3, "model_config": cfg.to_dict(),
                           "state_dict": SSSDDenoiser(cfg).state_dict(), "ema_state_dict": None,
                           "label_codes": LabelVocab.default().to_list()})
    return path


def test_generate_is_seeded_and_returns_12_leads(tiny_ckpt):
    cond = explicit_conditions(2, ["NORM"], age=64, sex=1.0)
    settings = SamplerSettings(steps=2, seed=5)

    a, info = generate(tiny_ckpt, cond, settings)
    b, _ = generate(tiny_ckpt, cond, settings)

    assert a.shape == (2, 12, 1000) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.allclose(a[:, 2], a[:, 1] - a[:, 0], atol=1e-5)  # III = II − I
    assert info["round"] == 3 and len(info["label_codes"]) == 71


def test_unknown_label_is_refused(tiny_ckpt):
    with pytest.raises(FedECGError, match="NOPE"):
        generate(tiny_ckpt, explicit_conditions(1, ["NOPE"]), SamplerSettings(steps=1))


def test_written_folder_passes_data_check_and_records_conditions(tmp_path):
    from ptbxl.check import check_dataset
    from ptbxl.labels import LabelVocab

    signals = np.random.default_rng(0).normal(0, 0.3, (3, 12, 1000)).astype(np.float32)
    cond = explicit_conditions(3, ["NORM", "IMI"], age=64, sex=1.0, height=170)

    codes = LabelVocab.default().to_list()
    out = write_synthetic_dataset(tmp_path / "syn", signals, cond, codes, {"seed": 1})

    report = check_dataset(out)
    meta = pd.read_csv(out / "ptbxl_database.csv")
    npz = np.load(out / "synthetic.npz")
    assert report.ok, report.bad
    assert meta["age"].tolist() == [64.0] * 3 and meta["sex"].tolist() == [1.0] * 3
    assert meta["scp_codes"][0] == "{'NORM': 100.0, 'IMI': 100.0}"
    assert np.abs(npz["signals"] - signals).max() < 1e-6
    assert len(list((out / "png").glob("*.png"))) == 3 and (out / "grid.png").is_file()
    assert json.loads((out / "synthesis.json").read_text())["seed"] == 1


def test_like_dataset_draws_rows_from_the_given_folds(tmp_path):
    from ptbxl.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "demo", n_records=20, n_sites=2, seed=0)

    cond = conditions_like_dataset(root, 5, seed=0, folds=(10,))

    meta = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    assert len(cond) == 5
    assert set(meta.loc[cond.extra["source_ecg_id"], "strat_fold"]) == {10}


def test_parse_sex():
    assert parse_sex("female") == 1.0 and parse_sex("M") == 0.0 and parse_sex(None) is None
    with pytest.raises(FedECGError):
        parse_sex("unknown")


def test_cli_synthesize_writes_checkable_folder(tiny_ckpt, tmp_path):
    from fedecg.cli import app

    out = tmp_path / "cli-syn"
    result = CliRunner().invoke(app, ["synthesize", str(tiny_ckpt), "--n", "2", "--steps", "1", "--labels",
                                      "NORM,IMI", "--age", "64", "--sex", "female", "--out", str(out),
                                      "--device", "cpu"])
    check = CliRunner().invoke(app, ["data", "check", str(out)])

    assert result.exit_code == 0, result.output
    assert check.exit_code == 0, check.output
    assert len(list((out / "png").glob("*.png"))) == 2
