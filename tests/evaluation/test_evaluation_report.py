"""evaluation.report + `fedecg evaluate fidelity`: every metric present, known answers on identical sets."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from evaluation.classifier import ClassifierConfig
from evaluation.ecgset import ECGSet
from evaluation.report import FidelityConfig, fidelity_report
from tests._evaluation_ecgs import toy_ecgs

HEADLINE = ("inter_lead_correlation_error", "snr_db", "fid")
_TINY = ClassifierConfig(width=4, emb_dim=8, epochs=1, batch_size=16)


def _set(seed: int, n: int = 24) -> ECGSet:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"scp_codes": [{"NORM": 100.0} if i % 2 else {"IMI": 100.0} for i in range(n)],
                         "age": rng.uniform(20, 80, n), "sex": rng.integers(0, 2, n).astype(float),
                         "height": rng.normal(170, 8, n), "weight": rng.normal(75, 10, n)},
                        index=pd.Index(np.arange(n) + 100 * seed, name="ecg_id"))
    return ECGSet(toy_ecgs(n, seed=seed), meta)


@pytest.fixture(scope="module")
def real():
    return _set(1)


def test_identical_sets_give_zero_errors(real, tmp_path):
    cfg = FidelityConfig(classifier=_TINY, n_boot=10, max_delineate=6)

    rep = fidelity_report(real, real, cfg, cache_dir=tmp_path)

    assert rep["inter_lead_correlation_error"] == pytest.approx(0.0, abs=1e-12)
    assert rep["fid"] == pytest.approx(0.0, abs=1e-3)
    assert rep["psd_distance_db_mean"] == pytest.approx(0.0, abs=1e-9)
    assert rep["mel_distance_db_mean"] == pytest.approx(0.0, abs=1e-9)
    assert rep["intervals"]["hr_bpm"]["wasserstein"] == pytest.approx(0.0)
    assert rep["snr_db"] == pytest.approx(rep["snr_db_real"])


def test_report_has_every_metric_finite_and_caches_the_classifier(real, tmp_path):
    cfg = FidelityConfig(classifier=_TINY, n_boot=10, max_delineate=6)
    syn = _set(2)

    first = fidelity_report(real, syn, cfg, cache_dir=tmp_path, source="x")
    second = fidelity_report(real, syn, cfg, cache_dir=tmp_path, source="x")

    assert all(isinstance(first[k], float) and np.isfinite(first[k]) for k in HEADLINE)
    assert len(first["psd_distance_db"]) == 12 and len(first["mel_distance_db"]) == 12
    assert {"hr_bpm", "qrs_ms", "qt_ms", "pr_ms"} <= set(first["intervals"])
    assert set(first["personalisation"]["effects"]) == {"age", "sex", "height", "weight"}
    assert first["fid_classifier"]["trained"] is True and second["fid_classifier"]["trained"] is False
    assert second["fid"] == pytest.approx(first["fid"])
    json.dumps(first, allow_nan=False)  # strict JSON


def test_fid_classifier_can_be_trained_on_a_separate_real_set(real):
    cfg = FidelityConfig(classifier=_TINY, n_boot=0, max_delineate=2)

    rep = fidelity_report(real, _set(2), cfg, classifier_train=_set(4, n=10))

    assert rep["fid_classifier"]["n_train"] == 10 and rep["fid"] is not None


def test_shuffled_leads_raise_ilc_error(real):
    cfg = FidelityConfig(classifier=_TINY, n_boot=0, max_delineate=2)
    shuffled = ECGSet(real.signals[:, np.random.default_rng(0).permutation(12)], real.meta)

    rep = fidelity_report(real, shuffled, cfg)

    assert rep["inter_lead_correlation_error"] > 0.3


def test_cli_fidelity_json_has_headline_metrics(real, tmp_path):
    from evaluation.classifier import save_classifier, train_classifier
    from evaluation.leads import to_model_view
    from fedecg.cli import app

    np.savez(tmp_path / "real.npz", signals=real.signals, age=real.meta["age"].to_numpy())
    np.savez(tmp_path / "syn.npz", signals=_set(3).signals)
    clf = train_classifier(to_model_view(real.signals), np.zeros((24, 5), np.float32), _TINY)
    save_classifier(tmp_path / "clf.pt", clf, _TINY, ["a", "b", "c", "d", "e"])

    args = ["evaluate", "fidelity", "--real", str(tmp_path / "real.npz"),
            "--synthetic", str(tmp_path / "syn.npz"), "--json", "--classifier", str(tmp_path / "clf.pt"),
            "--max-delineate", "4", "--device", "cpu", "--out", str(tmp_path / "f.json")]
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert all(report[k] is not None for k in HEADLINE)
    assert json.loads((tmp_path / "f.json").read_text())["fid"] == report["fid"]


def test_cli_fidelity_missing_input_is_one_line_error(tmp_path):
    from fedecg.cli import app

    result = CliRunner().invoke(app, ["evaluate", "fidelity", "--real", str(tmp_path / "nope"), "--synthetic",
                                      str(tmp_path / "nope2")])

    assert result.exit_code != 0
    assert "not a PTB-XL-layout folder" in str(result.exception)
