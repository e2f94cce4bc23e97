"""Realism metrics (evaluation.realism): ECG-like sets pass the acceptance criteria, noise and shuffled leads
fail them; the R-peak detector recovers known heart rates; bad input is refused with a named reason."""

import json

import numpy as np
import pytest

from evaluation.realism import (
    CRITERIA,
    beat_features,
    detect_r_peaks,
    format_realism,
    realism_criteria,
    realism_metrics,
    realism_summary,
)
from fedecg.errors import FedECGError
from tests._evaluation_ecgs import toy_ecgs

FS = 100.0
KEYS = (
    "beat_rate", "beat_rate_real", "heart_rate_distance", "heart_rate_median_real", "heart_rate_median_synthetic",
    "amplitude_ratio", "hf_power_ratio", "hf_power_share_real", "hf_power_share_synthetic",
    "inter_lead_correlation_error", "spectral_distance", "n_real", "n_synthetic",
)


def demo_ecgs(n: int, seed: int, codes=("NORM",)) -> np.ndarray:
    """(n, 12, 1000) mV from the built-in demo generator (dipole model), 10 s at 100 Hz."""
    from ptbxl.signals import derive_12_leads
    from ptbxl.synth import synth_ecg8

    rng = np.random.default_rng(seed)
    rows = [derive_12_leads(synth_ecg8({codes[i % len(codes)]}, 60.0, i % 2, int(FS), 10.0, rng)) for i in range(n)]
    return np.stack(rows).astype(np.float32)


def gaussian_like(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """White Gaussian noise with the set's overall SD (so amplitude alone cannot tell it apart)."""
    return (np.random.default_rng(seed).normal(size=x.shape) * x.std()).astype(np.float32)


def shuffle_leads(x: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([e[rng.permutation(12)] for e in x])


@pytest.fixture(scope="module")
def demo_a():
    return demo_ecgs(40, seed=1, codes=("NORM", "NORM", "NORM", "AFIB", "SBRAD", "STACH"))


@pytest.fixture(scope="module")
def demo_b():
    return demo_ecgs(40, seed=2, codes=("NORM", "NORM", "NORM", "AFIB", "SBRAD", "STACH"))


# ---- no real data needed ----


def test_two_independent_demo_draws_pass_every_criterion(demo_a, demo_b):
    m = realism_metrics(demo_a, demo_b, fs=FS)

    assert set(KEYS) <= set(m)
    assert realism_criteria(m) == {k: True for k in CRITERIA}, format_realism(m)
    assert m["beat_rate"] >= 0.95 and m["beat_rate_real"] >= 0.95
    assert m["heart_rate_distance"] < 8.0
    assert 0.5 < m["hf_power_ratio"] < 2.0 and m["spectral_distance"] < 2.0
    assert (m["n_real"], m["n_synthetic"]) == (40, 40)
    json.dumps(m, allow_nan=False)


def test_gaussian_noise_has_no_beats_and_too_much_high_frequency_power(demo_a):
    m = realism_metrics(demo_a, gaussian_like(demo_a), fs=FS)
    crit = realism_criteria(m)

    assert m["beat_rate"] <= 0.05 and m["beat_rate_real"] >= 0.95
    assert m["hf_power_ratio"] > 2.5  # white noise: half its power lies above 25 Hz (demo data: ~0.15)
    assert m["hf_power_share_synthetic"] == pytest.approx(0.5, abs=0.02)
    assert m["heart_rate_distance"] > 30.0
    assert not crit["beat_rate"] and not crit["hf_power_ratio"] and not crit["inter_lead_correlation_error"]
    assert crit["amplitude_ratio"]  # same SD: amplitude alone is not the tell
    assert "failed: beat_rate" in realism_summary(m)


def test_shuffled_leads_break_inter_lead_correlation_only(demo_a, demo_b):
    m = realism_metrics(demo_a, shuffle_leads(demo_b), fs=FS)
    crit = realism_criteria(m)

    assert m["inter_lead_correlation_error"] > 0.3
    assert not crit["inter_lead_correlation_error"]
    assert crit["hf_power_ratio"]


def test_detector_recovers_known_heart_rates_for_either_qrs_polarity():
    for hr in (45.0, 60.0, 100.0, 150.0):
        x = toy_ecgs(4, hr_bpm=hr, seed=3)
        for sign in (1.0, -1.0):
            b = beat_features(sign * x, FS)
            assert b["regular"].all(), (hr, sign, b)
            np.testing.assert_allclose(b["hr_bpm"], hr, rtol=0.05)
            assert np.nanmin(b["consistency"]) > 0.9


def test_flat_and_beat_free_signals_are_not_regular():
    t = np.arange(1000) / FS
    slow_wave = np.tile(0.5 * np.sin(2 * np.pi * 0.3 * t), (12, 1))
    x = np.stack([np.zeros((12, 1000)), slow_wave])

    b = beat_features(x, FS)

    assert detect_r_peaks(np.zeros(1000), FS).size == 0
    assert not b["regular"].any()


def test_undefined_values_fail_their_criterion_and_print_as_na(demo_a):
    m = dict(realism_metrics(demo_a, demo_a, fs=FS), hf_power_ratio=None)

    assert realism_criteria(m)["hf_power_ratio"] is False
    table = format_realism(m)
    assert "n/a" in table and "criterion" in table
    assert all(k in table for k in CRITERIA)


@pytest.mark.parametrize(
    "real, syn, fs, message",
    [
        (np.zeros((2, 8, 1000)), np.zeros((2, 12, 1000)), FS, r"real ECGs must be \(N, 12, L\)"),
        (np.zeros((2, 12, 1000)), np.zeros((12, 1000)), FS, r"synthetic ECGs must be \(N, 12, L\)"),
        (np.zeros((0, 12, 1000)), np.zeros((2, 12, 1000)), FS, "real set is empty"),
        (np.zeros((2, 12, 1000)), np.zeros((2, 12, 100)), FS, "need >= 2 s"),
        (np.zeros((2, 12, 1000)), np.full((2, 12, 1000), np.nan), FS, "synthetic ECG.*NaN/Inf"),
        (np.zeros((2, 12, 1000)), np.full((2, 12, 1000), np.inf), FS, "NaN/Inf"),
        (np.zeros((2, 12, 1000)), np.zeros((2, 12, 1000)), 20.0, "fs must be >= 60"),
        (np.array([["a"]], dtype=object), np.zeros((2, 12, 1000)), FS, "not a numeric array"),
    ],
)
def test_bad_input_is_refused_with_the_reason(real, syn, fs, message):
    with pytest.raises(FedECGError, match=message):
        realism_metrics(real, syn, fs=fs)


def _cli_inputs(demo_a, demo_b, tmp_path):
    np.savez(tmp_path / "real.npz", signals=demo_a)
    np.savez(tmp_path / "noise.npz", signals=gaussian_like(demo_b))
    return ["evaluate", "fidelity", "--real", str(tmp_path / "real.npz"), "--synthetic", str(tmp_path / "noise.npz")]


def test_cli_fidelity_json_and_table_carry_the_realism_block(demo_a, demo_b, tmp_path, monkeypatch):
    """The CLI wiring, with the report's other (slow) metrics stubbed out; the realism block is the real one."""
    from typer.testing import CliRunner

    import evaluation.report
    from fedecg.cli import app

    def fake_report(real, synthetic, *args, **kwargs):
        return {"realism": evaluation.report._realism(real, synthetic)}

    monkeypatch.setattr(evaluation.report, "fidelity_report", fake_report)
    base = _cli_inputs(demo_a, demo_b, tmp_path)

    as_json = CliRunner().invoke(app, [*base, "--json", "--device", "cpu"])

    assert as_json.exit_code == 0, as_json.output
    block = json.loads(as_json.stdout)["realism"]
    assert block["passed"] is False and block["criteria"]["beat_rate"] is False
    assert block["beat_rate"] <= 0.05 and block["hf_power_ratio"] > 2.5
    assert block["n_real"] == len(demo_a)


def test_print_fidelity_ends_with_the_realism_table(demo_a, demo_b, capsys):
    import pandas as pd

    from evaluation.ecgset import ECGSet
    from evaluation.report import _realism
    from fedecg.cli.evaluate import _print_fidelity

    report = {"n_real": 40, "n_synthetic": 40, "inter_lead_correlation": {"value": 0.1}, "snr_db": 10.0,
              "snr_db_real": 10.0, "fid": 1.0, "psd_distance_db_mean": 1.0, "mel_distance_db_mean": 1.0,
              "intervals": {}, "personalisation": {"direction_agreement": None}}
    meta = pd.DataFrame(index=pd.RangeIndex(40))
    report["realism"] = _realism(ECGSet(demo_a, meta), ECGSet(demo_b, meta))
    _print_fidelity(report)
    out = capsys.readouterr().out

    assert "hf_power_ratio" in out and "4/4 criteria met" in out
    _print_fidelity(dict(report, realism={"error": "real ECGs contain NaN/Inf"}))
    assert "realism: not computed (real ECGs contain NaN/Inf)" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_fidelity_end_to_end_reports_realism(demo_a, demo_b, tmp_path):
    from typer.testing import CliRunner

    from evaluation.classifier import ClassifierConfig, save_classifier, train_classifier
    from evaluation.leads import to_model_view
    from fedecg.cli import app

    tiny = ClassifierConfig(width=4, emb_dim=8, epochs=1, batch_size=16)
    clf = train_classifier(to_model_view(demo_a[:8]), np.zeros((8, 5), np.float32), tiny)
    save_classifier(tmp_path / "clf.pt", clf, tiny, ["a", "b", "c", "d", "e"])
    args = [*_cli_inputs(demo_a, demo_b, tmp_path), "--classifier", str(tmp_path / "clf.pt"), "--max-delineate",
            "3", "--device", "cpu", "--out", str(tmp_path / "f.json")]

    printed = CliRunner().invoke(app, args)

    assert printed.exit_code == 0, printed.output
    assert "hf_power_ratio" in printed.stdout and "criteria met" in printed.stdout
    block = json.loads((tmp_path / "f.json").read_text())["realism"]
    assert block["passed"] is False and block["beat_rate"] <= 0.05


def test_heart_rate_agrees_with_ecgen_eval():
    """Cross-check against the independent `ecgen-eval` package (HeartRateMetric, fs passed explicitly: its
    default is 500 Hz). Its detector keeps peaks >= 0.5 s apart (<= 120 bpm), so sinus-rhythm sets only."""
    pytest.importorskip("ecgen_eval", reason="ecgen-eval not installed (pip install ecgen-eval)")
    from ecgen_eval.metrics.heart_rate import HeartRateMetric
    from scipy.signal import butter, sosfiltfilt

    # both detectors get the same band-limited input: ecgen-eval's simple detector counts noise peaks as beats
    sos = butter(2, 20.0, fs=FS, output="sos")
    a, b = (sosfiltfilt(sos, demo_ecgs(32, seed=s), axis=-1) for s in (5, 6))
    res = HeartRateMetric(fs=FS).compute(a[:, 1:2], b[:, 1:2], lead_names=["II"])
    theirs = res.extra["II"]
    ours_a, ours_b = (np.nanmean(beat_features(x, FS)["hr_bpm"]) for x in (a, b))

    assert theirs["real_hr_mean"] == pytest.approx(ours_a, abs=2.0)
    assert theirs["synth_hr_mean"] == pytest.approx(ours_b, abs=2.0)


# ---- the real PTB-XL subset ($PTBXL_DIR) ----


@pytest.fixture(scope="module")
def real_halves(ptbxl_dir):
    from evaluation.ecgset import load_ecg_set

    first = load_ecg_set(ptbxl_dir, folds=(1, 2, 3, 4, 5)).signals
    second = load_ecg_set(ptbxl_dir, folds=(6, 7, 8, 9, 10)).signals
    return first, second


@pytest.mark.real_data
def test_real_half_vs_other_half_passes_every_criterion(real_halves):
    a, b = real_halves

    m = realism_metrics(a, b, fs=FS)

    assert realism_criteria(m) == {k: True for k in CRITERIA}, format_realism(m)
    assert m["beat_rate"] >= 0.95 and m["beat_rate_real"] >= 0.95
    assert m["heart_rate_distance"] < 5.0
    assert 0.8 < m["amplitude_ratio"] < 1.25 and 0.7 < m["hf_power_ratio"] < 1.4
    assert m["inter_lead_correlation_error"] < 0.06


@pytest.mark.real_data
def test_real_vs_noise_and_vs_shuffled_leads_fail(real_halves):
    a, b = real_halves

    noise = realism_metrics(a, gaussian_like(b), fs=FS)
    shuffled = realism_metrics(a, shuffle_leads(b), fs=FS)

    assert noise["beat_rate"] <= 0.05 and noise["hf_power_ratio"] > 5.0
    assert not any(realism_criteria(noise)[k] for k in ("beat_rate", "hf_power_ratio"))
    assert shuffled["inter_lead_correlation_error"] > 0.3
    assert not realism_criteria(shuffled)["inter_lead_correlation_error"]


@pytest.mark.real_data
def test_per_ecg_heart_rate_agrees_with_ecgen_eval_neurokit_detector(real_halves):
    pytest.importorskip("ecgen_eval", reason="ecgen-eval not installed (pip install ecgen-eval)")
    pytest.importorskip("neurokit2")
    from ecgen_eval.features.qrs_detection import detect_rpeaks

    x = real_halves[0][:80]
    ours = beat_features(x, FS)["hr_bpm"]
    theirs = []
    for sig in x[:, 1].astype(np.float64):
        peaks = detect_rpeaks(sig, FS)
        theirs.append(60.0 / np.median(np.diff(peaks) / FS) if len(peaks) >= 3 else np.nan)

    close = np.abs(np.asarray(theirs) - ours) <= 3.0
    assert close.mean() >= 0.9
