"""experiments.ablation (+ ablation_report): variants, overrides, relative changes with CIs, table and plot."""

import json

import numpy as np
import pytest

from experiments import ablation
from experiments.ablation import VARIANTS, ablation_preset, compare, run_ablation
from fedecg.errors import FedECGError


def _fake(ilc: float, auroc: float, dcr: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    util = {s: {"auroc": auroc, "ci_low": auroc - 0.05, "ci_high": auroc + 0.05}
            for s in ("real_100", "synthetic_only", "real_5pct+synthetic")}
    metrics = {"inter_lead_correlation_error": ilc,
               "inter_lead_correlation_error_ci95": [ilc * 0.9, ilc * 1.1],
               "fid": 10 * ilc, "snr_db": 8.0, "psd_distance_db": 2.0, "mel_distance_db": 1.0,
               "personalisation_agreement": None, "dcr_train_median": dcr, "dcr_holdout_median": dcr,
               "nndr_median": 0.9, "near_copy_share": 0.0, "utility": util}
    return {"metrics": metrics, "ilc_boot": list(ilc + rng.normal(0, 0.01 * ilc, 100)),
            "auroc_boot": {s: list(auroc + rng.normal(0, 0.01, 100)) for s in util}}


def test_relative_change_and_ci_against_plain_sssd():
    results = {"sssd_ecg": _fake(0.4, 0.6, 1.0, 0), "midt_no_demo": _fake(0.2, 0.66, 1.04, 1),
               "midt": _fake(0.1, 0.7, 1.08, 2)}

    rel = compare(results)

    ilc = rel["midt"]["inter_lead_correlation_error"]
    assert ilc["relative_change"] == pytest.approx(-0.75)
    assert ilc["ci95"][0] < -0.75 < ilc["ci95"][1] and ilc["higher_is_better"] is False
    assert rel["midt_no_demo"]["dcr_train_median"]["relative_change"] == pytest.approx(0.04)
    assert rel["midt"]["auroc:synthetic_only"]["relative_change"] == pytest.approx(0.1 / 0.6)
    assert "auroc:real_100" not in rel["midt"]  # no synthetic data in that setting
    assert "sssd_ecg" not in rel


def test_run_ablation_trains_three_variants_with_shared_settings(tmp_path, monkeypatch):
    from ptbxl.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", n_records=40, n_sites=2, seed=0)
    calls = []
    monkeypatch.setattr(ablation, "_train", lambda scenario, run_dir, overrides, engine: calls.append(
        (run_dir.name, overrides, engine)))
    fakes = {"sssd_ecg": _fake(0.4, 0.6, 1.0, 0), "midt_no_demo": _fake(0.3, 0.62, 1.0, 1),
             "midt": _fake(0.1, 0.7, 1.1, 2)}
    monkeypatch.setattr(ablation, "evaluate_variant", lambda v, run_dir, *a, **k: fakes[v.name])

    run_ablation(data, ablation_preset("tiny"), tmp_path / "out", seed=3, extra_overrides=["dp=true"])

    assert [c[0] for c in calls] == ["sssd_ecg", "midt_no_demo", "midt"]
    base = calls[0][1][: -len(VARIANTS[0].overrides)]
    assert all(c[1][: len(base)] == base for c in calls)  # identical seeds, rounds, steps, dataset, dp
    assert "seed=3" in base and "dp=true" in base and "rounds=2" in base
    assert "model.mel_lambda=0" in calls[0][1] and "model.mel_lambda=0" not in calls[2][1]
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    rel = saved["relative_change_vs_sssd_ecg"]["midt"]["inter_lead_correlation_error"]["relative_change"]
    assert rel == pytest.approx(-0.75)
    table = (tmp_path / "out" / "ablation.md").read_text()
    assert "SSSD-MIDT (full)" in table and "-75.0 %" in table and "AUROC synthetic_only" in table
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 10_000


def test_presets_scale_up_and_unknown_preset_is_refused():
    tiny, paper = ablation_preset("tiny"), ablation_preset("paper")

    assert paper.rounds > tiny.rounds and paper.n_synthetic > tiny.n_synthetic and paper.model == "paper"
    with pytest.raises(FedECGError):
        ablation_preset("huge")


def test_skip_training_without_runs_is_a_user_error(tmp_path):
    from ptbxl.demo import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", n_records=20, n_sites=2, seed=0)
    with pytest.raises(FedECGError, match="latest.pt"):
        run_ablation(data, ablation_preset("tiny"), tmp_path / "out", train=False)


@pytest.mark.slow
@pytest.mark.real_data
def test_tiny_ablation_end_to_end_on_real_ptbxl(ptbxl_dir, tmp_path):
    result = run_ablation(ptbxl_dir, ablation_preset("tiny"), tmp_path / "abl")

    assert set(result["variants"]) == {"sssd_ecg", "midt_no_demo", "midt"}
    assert all(np.isfinite(v["inter_lead_correlation_error"]) for v in result["variants"].values())
    assert (tmp_path / "abl" / "ablation.png").is_file()
