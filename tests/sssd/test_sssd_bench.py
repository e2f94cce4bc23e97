"""bench/bench_model.py and `fedecg bench model` (timings are printed, never asserted)."""

import json

import pytest
from typer.testing import CliRunner

from bench.bench_model import measure
from fedecg.cli import app


def test_measure_reports_all_fields_for_tiny():
    result = measure(
        preset="tiny", batch=2, sample=True, threads=1, warmup=0, repeats=1, sample_steps=2, overrides={"T": 20}
    )
    for key in ("train_step_s", "train_step_cpu_s", "peak_mem_mb", "ddpm200_s_per_ecg", "ddim50_s_per_ecg"):
        assert result[key] > 0, key
    assert result["num_blocks"] == 2 and result["batch"] == 2 and result["sample_extrapolated"] is True
    assert result["peak_mem_mb"] >= result["train_peak_mem_mb"]


def test_measure_respects_blocks_and_channels_overrides():
    result = measure(preset="tiny", blocks=1, channels=8, batch=1, threads=1, warmup=0, repeats=1)
    assert (result["num_blocks"], result["res_channels"]) == (1, 8)


@pytest.mark.slow  # starts a fresh Python process with torch (10-40 s on the shared CPU)
def test_cli_prints_one_json_object():
    out = CliRunner().invoke(
        app,
        [
            "bench",
            "model",
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["preset"] == "tiny" and result["train_step_s"] > 0 and result["peak_mem_mb"] > 0


@pytest.mark.parametrize("args", [["--preset", "huge"], ["--precision", "fp8"], ["--batch", "0"]])
def test_cli_rejects_bad_options(args):
    from fedecg.errors import FedECGError

    out = CliRunner().invoke(app, ["bench", "model", *args])
    assert out.exit_code != 0 and isinstance(out.exception, FedECGError)


def test_blocks_and_channels_default_to_the_paper_layer_without_checkpointing():
    from bench.bench_model import _model_config, resolve_preset

    assert resolve_preset(None, None, None) == "tiny" and resolve_preset(None, 4, 256) == "paper"
    cfg = _model_config(None, 4, 256, None)
    assert (cfg.num_blocks, cfg.res_channels, cfg.skip_channels, cfg.s4_state) == (4, 256, 256, 64)
    assert cfg.checkpoint_blocks is False
    assert _model_config("paper", None, None, None).checkpoint_blocks is True
