"""evaluation.utility: the TSTR / low-data experiment (toy data here; real PTB-XL in the slow test)."""

import json

import numpy as np
import pandas as pd
import pytest

from evaluation.classifier import ClassifierConfig
from evaluation.ecgset import ECGSet
from evaluation.utility import UtilityConfig, run_utility, utility_experiment, write_utility
from fedecg.errors import FedECGError
from tests._evaluation_ecgs import toy_ecgs

_TINY = ClassifierConfig(width=4, emb_dim=8, batch_size=16)


def _set(n: int, seed: int) -> ECGSet:
    # NORM = slow heart rate, MI (IMI) = fast: learnable from the signal
    x = np.concatenate([toy_ecgs(n // 2, hr_bpm=55, seed=seed),
                        toy_ecgs(n - n // 2, hr_bpm=110, seed=seed + 1)])
    codes = [{"NORM": 100.0}] * (n // 2) + [{"IMI": 100.0}] * (n - n // 2)
    meta = pd.DataFrame({"scp_codes": codes}, index=pd.Index(np.arange(n), name="ecg_id"))
    return ECGSet(x, meta)


def test_every_setting_is_scored_and_written(tmp_path):
    cfg = UtilityConfig(fractions=(0.1, 0.5), epochs=2, min_steps=4, n_boot=20, classifier=_TINY)

    result = utility_experiment(_set(40, 0), _set(20, 10), _set(30, 20), cfg)
    write_utility(result, tmp_path)

    names = [r["setting"] for r in result["rows"]]
    assert names == ["real_100", "synthetic_only", "real_10pct", "real_10pct+synthetic", "real_50pct",
                     "real_50pct+synthetic"]
    by = {r["setting"]: r for r in result["rows"]}
    assert by["real_10pct"]["n_real"] == 4 and by["real_10pct+synthetic"]["n_synthetic"] == 30
    assert all(0.0 <= r["auroc"] <= 1.0 and r["ci_low"] <= r["ci_high"] for r in result["rows"])
    assert by["real_100"]["auroc"] > 0.8  # the toy task is learnable
    assert json.loads((tmp_path / "utility.json").read_text())["rows"][0]["setting"] == "real_100"
    assert "| real_100 |" in (tmp_path / "utility.md").read_text() and (tmp_path / "utility.png").is_file()


def test_bad_config_and_missing_synthetic_raise(tmp_path):
    with pytest.raises(FedECGError):
        UtilityConfig(fractions=(0.0,))
    with pytest.raises(FedECGError):
        run_utility(tmp_path, UtilityConfig(), tmp_path / "out")


def test_utility_generates_synthetic_set_from_a_checkpoint(tmp_path):
    from ptbxl.demo import make_demo_dataset
    from ptbxl.labels import LabelVocab
    from sssd.checkpoint import save_checkpoint
    from sssd.config import model_preset
    from sssd.model import SSSDDenoiser

    data = make_demo_dataset(tmp_path / "data", n_records=60, n_sites=2, seed=0)
    mcfg = model_preset("tiny")
    save_checkpoint(tmp_path / "t.pt", {"model_config": mcfg.to_dict(), "state_dict": SSSDDenoiser(mcfg).state_dict(),
                                        "label_codes": LabelVocab.default().to_list()})
    cfg = UtilityConfig(fractions=(0.5,), epochs=1, min_steps=1, n_boot=5, n_synthetic=4, steps=1, classifier=_TINY)

    result = run_utility(data, cfg, tmp_path / "out", checkpoint=tmp_path / "t.pt")

    assert result["rows"][1]["setting"] == "synthetic_only" and result["rows"][1]["n_synthetic"] == 4
    assert (tmp_path / "out" / "synthetic" / "ptbxl_database.csv").is_file()
    assert (tmp_path / "out" / "utility.md").is_file()


@pytest.mark.slow
@pytest.mark.real_data
def test_utility_end_to_end_on_real_ptbxl(ptbxl_dir, tmp_path):
    """The low-data pipeline on the real subset; the demo generator stands in for synthetic data."""
    from ptbxl.demo import make_demo_dataset

    syn = make_demo_dataset(tmp_path / "syn", n_records=60, n_sites=2, seed=0)
    cfg = UtilityConfig(fractions=(0.05, 0.25), epochs=2, min_steps=10, n_boot=50,
                        classifier=ClassifierConfig(width=8, emb_dim=16))

    result = run_utility(ptbxl_dir, cfg, tmp_path / "out", synthetic=syn)

    assert result["n_test"] > 20
    assert all(np.isfinite(r["auroc"]) for r in result["rows"])
    assert (tmp_path / "out" / "utility.png").is_file()
