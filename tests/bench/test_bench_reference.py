"""bench/bench_reference.py: argument and checkout validation (one clear line, no traceback), the lenient
config read, the config comparison, ratios and the table -- none of it needs the reference checkout. The
end-to-end run at a tiny config needs one: it is named by $SSSD_REF_DIR and skipped without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_reference import (
    REFERENCE_FILES,
    BenchError,
    config_mismatches,
    format_table,
    ratio,
    read_reference_config,
    reference_src,
    reference_wavenet,
    s4_output_notes,
    train_script_notes,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "bench_reference.py"

# the shape of the reference's config_SSSD_ECG.json, trailing commas included (as it ships)
CONFIG_TEXT = """{
    "diffusion_config":{"T": 200, "beta_0": 0.0001, "beta_T": 0.02},
    "wavenet_config": {
        "in_channels": 8, "out_channels":8, "num_res_layers": 36, "res_channels": 256, "skip_channels": 256,
        "diffusion_step_embed_dim_in": 128, "diffusion_step_embed_dim_mid": 512,
        "diffusion_step_embed_dim_out": 512, "s4_lmax": 1000, "s4_d_state":64, "s4_dropout":0.0,
        "s4_bidirectional":1, "s4_layernorm":1, "label_embed_dim":128, "label_embed_classes":71
    },
    "train_config": {"learning_rate": 2e-4, "batch_size":8,},
}
"""


def fake_checkout(root: Path, config: str = CONFIG_TEXT) -> Path:
    """Empty stand-ins for the files the bench looks for, and a config json: enough for validation only."""
    src = root / "src" / "sssd"
    for rel in REFERENCE_FILES:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("")
    (src / "config" / "config_SSSD_ECG.json").write_text(config)
    (src / "train.py").write_text("loader = DataLoader(train_data, shuffle=True, batch_size=6, drop_last=True)\n")
    return root


def run_script(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSSD_REF_DIR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bench_reference: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_reference_dir_is_one_line_naming_the_flag_and_the_clone():
    assert_one_line_error(run_script(), "--reference-dir is required", "git clone https://github.com/AI4HealthUOL")


def test_nonexistent_reference_dir_is_one_line(tmp_path):
    assert_one_line_error(run_script("--reference-dir", str(tmp_path / "nope")), "does not exist", "nope")


def test_wrong_reference_dir_names_the_missing_files(tmp_path):
    proc = run_script("--reference-dir", str(tmp_path))
    assert_one_line_error(proc, "is not a checkout of AI4HealthUOL/SSSD-ECG", "src/sssd/models/SSSD_ECG.py")


def test_reference_dir_from_env_and_bad_numbers():
    proc = run_script("--batch", "0", env_extra={"SSSD_REF_DIR": "/nonexistent-sssd-ref"})
    assert_one_line_error(proc, "--batch must be >= 1")
    assert_one_line_error(run_script(env_extra={"SSSD_REF_DIR": "/nonexistent-sssd-ref"}), "does not exist")
    assert_one_line_error(run_script("--reference-dir", "/x", "--skip-train"), "nothing to time")


def test_reference_dir_inside_this_repository_is_refused(tmp_path):
    with pytest.raises(BenchError, match="inside this repository"):
        reference_src(REPO / "bench")
    with pytest.raises(BenchError, match="not a directory"):
        (tmp_path / "f").write_text("")
        reference_src(tmp_path / "f")


def test_checkout_root_or_its_src_sssd_are_both_accepted(tmp_path):
    root = fake_checkout(tmp_path / "ref")
    assert reference_src(root) == (root / "src" / "sssd").resolve()
    assert reference_src(root / "src" / "sssd") == (root / "src" / "sssd").resolve()


def test_config_with_trailing_commas_is_read_and_matches_our_paper_config(tmp_path):
    from sssd.config import model_preset

    src = reference_src(fake_checkout(tmp_path / "ref"))
    cfg = read_reference_config(src)
    assert cfg["_lenient"] is True and cfg["wavenet_config"]["s4_d_state"] == 64
    assert config_mismatches(cfg["wavenet_config"], cfg["diffusion_config"], model_preset("paper"), "paper") == []
    wn = reference_wavenet(cfg, 4, 128)
    assert (wn["num_res_layers"], wn["res_channels"], wn["skip_channels"]) == (4, 128, 128)
    assert cfg["wavenet_config"]["num_res_layers"] == 36  # the paper config is not modified in place
    notes = train_script_notes(src, cfg)
    assert any("batch_size=6" in n and "batch_size=8" in n for n in notes), notes


def test_config_mismatches_name_the_keys(tmp_path):
    from sssd.config import model_preset

    wavenet = read_reference_config(reference_src(fake_checkout(tmp_path / "ref")))["wavenet_config"]
    wavenet["s4_d_state"] = 32
    del wavenet["label_embed_classes"]
    out = config_mismatches(wavenet, {"T": 100, "beta_0": 1e-4, "beta_T": 0.02}, model_preset("paper"), "paper")
    assert any("s4_d_state=32" in m and "s4_state=64" in m for m in out), out
    assert any("no label_embed_classes" in m for m in out), out
    assert any("diffusion_config.T=100" in m for m in out), out
    assert len(out) == 3


def test_unreadable_config_is_one_line(tmp_path):
    src = reference_src(fake_checkout(tmp_path / "ref", config="{not json"))
    with pytest.raises(BenchError, match="not readable JSON"):
        read_reference_config(src)


def test_s4_output_map_difference_is_noted():
    notes = s4_output_notes([None, {"in": 512, "out": 512, "activation": []}])
    assert len(notes) == 1 and "Linear(H, 1H), no activation" in notes[0] and "ours Linear(H, 2H) + GLU" in notes[0]
    assert s4_output_notes([{"in": 512, "out": 1024, "activation": ["GLU"]}]) == []
    assert s4_output_notes([None]) == []


def test_ratio_and_table():
    assert ratio(10.0, 2.5) == 4.0
    assert ratio(None, 1.0) is None and ratio(1.0, None) is None and ratio(1.0, 0.0) is None
    table = format_table([("train step, ours bf16", 12.9, 6.1, 2.76, 2.5), ("missing", None, 1.0, 2.0, None)],
                         title="training step")
    lines = table.splitlines()
    assert lines[0] == "training step"
    assert "ref/ours wall" in lines[1] and "ref/ours cpu" in lines[1]
    assert lines[2].split()[-2:] == ["4.67x", "2.44x"]
    assert lines[3].split()[-2:] == ["-", "-"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


def test_end_to_end_tiny_against_the_reference_checkout():
    ref_dir = os.environ.get("SSSD_REF_DIR")
    if not ref_dir:
        pytest.skip("SSSD_REF_DIR is not set: no checkout of AI4HealthUOL/SSSD-ECG (git clone "
                    "https://github.com/AI4HealthUOL/SSSD-ECG, outside this repository)")
    import importlib.util

    if importlib.util.find_spec("einops") is None:
        pytest.skip("the reference's S4 layer needs einops (pip install einops)")
    proc = run_script("--reference-dir", ref_dir, "--blocks", "1", "--channels", "16", "--batch", "1",
                      "--threads", "1", "--warmup", "0", "--repeats", "1", "--sample", "--sample-steps", "1",
                      "--preset", "same", "--json", env_extra={"SSSD_REF_DIR": ref_dir})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("reference_train_step_s", "ours_train_step_s_fp32", "ours_train_step_s_bf16", "speedup_bf16",
                "reference_ddpm200_s_per_ecg", "ours_fast_s_per_ecg", "sampling_speedup"):
        assert result[key] > 0, key
    assert result["runs"]["reference_train"]["num_res_layers"] == 1
    assert "training step" in proc.stdout and "notes:" in proc.stdout
