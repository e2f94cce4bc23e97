"""bench/bench_model.py's fast-sampler, device and profile additions, and bench/bench_sampler_steps.py's
bootstrap (timings are printed, never asserted)."""

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.bench_model import measure, profile_train_step
from fedecg.cli import app
from fedecg.errors import FedECGError
from sssd.sampling import FAST_SAMPLER, FAST_STEPS

TINY = dict(preset="tiny", batch=1, threads=1, warmup=0, repeats=1, overrides={"T": 20, "seq_len": 200})


def test_fast_sampler_keys_extrapolated_and_timed():
    ext = measure(sample=True, sample_steps=2, **TINY)
    full = measure(sample=True, skip_train=True, **TINY)
    for result in (ext, full):
        for key in ("ddpm200_s_per_ecg", "ddim50_s_per_ecg", "fast_s_per_ecg", "fast_cpu_s_per_ecg"):
            assert result[key] > 0, key
        assert result["fast_steps"] == min(FAST_STEPS, 20) and result["fast_sampler"] == FAST_SAMPLER
        assert result["device"] == "cpu"
    assert ext["sample_extrapolated"] is True and full["sample_extrapolated"] is False
    assert full["train_step_s"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the refusal is for machines without it")
def test_cuda_without_cuda_is_one_clear_line():
    with pytest.raises(FedECGError, match="CUDA is not available"):
        measure(device="cuda", **TINY)
    out = CliRunner().invoke(app, ["bench", "model", "--device", "cuda"])
    assert out.exit_code != 0 and isinstance(out.exception, FedECGError)
    assert "CUDA is not available" in str(out.exception) and "\n" not in str(out.exception)


def test_bad_device_is_refused():
    out = CliRunner().invoke(app, ["bench", "model", "--device", "gpu"])
    assert out.exit_code != 0 and isinstance(out.exception, FedECGError)


def test_profile_table_lists_ops_by_self_cpu_time():
    table = profile_train_step(preset="tiny", batch=1, threads=1, warmup=0, overrides={"T": 20, "seq_len": 200},
                               row_limit=5)
    assert "Self CPU" in table and "one training step" in table
    assert len([ln for ln in table.splitlines() if ln.strip().startswith("aten::")]) >= 3


# ---- bench_sampler_steps: the bootstrap's statistics are realism_metrics's ----


def test_bootstrap_statistics_equal_realism_metrics_and_intervals_bracket_them():
    from bench.bench_sampler_steps import aggregate, bootstrap, bootstrap_indices, ci95, ecg_features
    from evaluation.realism import realism_metrics
    from tests._evaluation_ecgs import toy_ecgs

    real = toy_ecgs(24, hr_bpm=65, seed=1).astype(np.float64)
    syn = toy_ecgs(12, hr_bpm=80, seed=2, noise_mv=0.05).astype(np.float64)
    fr, fs = ecg_features(real), ecg_features(syn)
    mine, ref = aggregate(fr, fs), realism_metrics(real, syn)
    for key, value in mine.items():
        assert math.isclose(value, ref[key], rel_tol=1e-9, abs_tol=1e-12), key
    idx = bootstrap_indices(len(real), len(syn), 200, seed=0)
    boots = bootstrap(fr, fs, idx)
    for key, value in mine.items():
        lo, hi = ci95(boots[key])
        assert lo <= value <= hi or math.isclose(lo, value) or math.isclose(hi, value), key
    assert ci95(boots["heart_rate_distance"])[0] > 5  # 65 vs 80 bpm: clearly apart


def test_default_is_the_smallest_matching_step_count():
    from bench.bench_sampler_steps import choose_default

    pts = {"a": {"arm": "dpmpp2m", "steps": 10, "matches_ddpm": False},
           "b": {"arm": "dpmpp2m", "steps": 25, "matches_ddpm": True},
           "c": {"arm": "dpmpp2m", "steps": 15, "matches_ddpm": True},
           "d": {"arm": "ddim-eta1", "steps": 5, "matches_ddpm": True}}
    assert choose_default({"points": pts}) == 15
    assert choose_default({"points": {"a": pts["a"]}}) is None
