"""Smoke test of bench/bench_quality.py: two tiny arms (from scratch, from a tiny base built here), one round,
4 synthetic ECGs of 3 DDIM steps; checks quality.json's structure and that the plot is written."""

from __future__ import annotations

import json

import torch

from bench import bench_quality
from sssd.checkpoint import save_checkpoint
from sssd.config import model_preset
from sssd.model import SSSDDenoiser


def _tiny_base(path):
    cfg = model_preset("tiny")
    g = torch.Generator().manual_seed(3)
    sd = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in SSSDDenoiser(cfg).state_dict().items()}
    save_checkpoint(path, {"round": 5, "model_config": cfg.to_dict(), "state_dict": sd, "ema_state_dict": None})
    return path


def test_two_tiny_arms_write_quality_json_table_and_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEDECG_CACHE", str(tmp_path / "cache"))
    base = _tiny_base(tmp_path / "base.pt")
    out = tmp_path / "bench"
    bench_quality.main([
        "--arms", "scratch-nodp,base-nodp", "--base", str(base), "--rounds", "1", "--minutes", "5",
        "--n-synthetic", "4", "--sampler-steps", "3", "--max-real", "50", "--threads", "1", "--out", str(out),
        "--set", "model=tiny", "--set", "demo_data.records=120", "--set", "train.physical_batch_size=0",
        "--set", "train.batch_size=8", "--set", "rounds=1",
    ])
    printed = capsys.readouterr().out
    assert "scratch-nodp" in printed and "base-nodp" in printed and "/4" in printed

    result = json.loads((out / "quality.json").read_text())
    assert (out / "quality.png").stat().st_size > 10_000
    assert result["settings"]["engine"] == "inprocess" and result["settings"]["n_synthetic"] == 4
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["torch_threads"] == 1 and machine["cpu_model"]
    assert set(result["arms"]) == {"scratch-nodp", "base-nodp"}
    for entry in result["arms"].values():
        assert entry["status"] == "completed", entry
        assert entry["dp"] is False and entry["rounds_done"] == 1
        assert [r["round"] for r in entry["rows"]] == [0, 1]
        assert entry["rows"][0]["train_minutes"] <= entry["rows"][1]["train_minutes"] <= entry["train_minutes"]
        for row in entry["rows"]:
            for key in ("beat_rate", "inter_lead_correlation_error", "hf_power_ratio", "amplitude_ratio",
                        "heart_rate_distance"):
                assert key in row["metrics"]
            assert row["metrics"]["n_synthetic"] == 4
            assert 0 <= row["criteria_met"] <= 4 and set(row["criteria"]) == {
                "beat_rate", "inter_lead_correlation_error", "hf_power_ratio", "amplitude_ratio"}
            assert row["sampling_seconds"] > 0
        assert entry["rows"][1]["weights"] == "ema" and entry["rows"][1]["val_loss"] is not None
    assert result["arms"]["base-nodp"]["init"] == str(base.resolve())
    assert result["arms"]["scratch-nodp"]["init"] == "none"
    assert result["arms"]["scratch-nodp"]["lr"] == 1e-3
