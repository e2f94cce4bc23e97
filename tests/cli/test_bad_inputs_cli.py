"""Bad numbers get one clear error, never a silent NaN result: synthesis and privacy planning."""

from __future__ import annotations

import pytest
import torch

from fedecg.errors import FedECGError


def _nan_checkpoint(path):
    from sssd.checkpoint import save_checkpoint
    from sssd.config import model_preset
    from sssd.model import SSSDDenoiser

    cfg = model_preset("tiny")
    sd = SSSDDenoiser(cfg).state_dict()
    sd = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}
    save_checkpoint(path, {"round": 1, "model_config": cfg.to_dict(), "state_dict": sd, "ema_state_dict": None})
    return path


def test_nan_weights_do_not_synthesize_nan_ecgs(tmp_path):
    from evaluation.synthesize import SamplerSettings, explicit_conditions, generate

    ckpt = _nan_checkpoint(tmp_path / "nan.pt")
    with pytest.raises(FedECGError, match="not finite"):
        generate(ckpt, explicit_conditions(2, ["NORM"], 60, 0, None, None), SamplerSettings(steps=2))


def test_nan_guidance_is_refused():
    from evaluation.synthesize import SamplerSettings

    with pytest.raises(FedECGError, match="guidance"):
        SamplerSettings(guidance=float("nan"))


@pytest.mark.parametrize("args, message", [
    (["--target-epsilon", "nan"], "target-epsilon"),
    (["--target-epsilon", "inf"], "target-epsilon"),
    (["--rounds", "-1"], "rounds"),
    (["--records", "0"], "records"),
])
def test_privacy_plan_refuses_bad_numbers(args, message):
    from typer.testing import CliRunner

    from fedecg.cli import app

    base = {"--target-epsilon": "4", "--rounds": "3", "--local-steps": "2", "--records": "27", "--batch": "8"}
    base.update(dict(zip(args[::2], args[1::2])))
    res = CliRunner().invoke(app, ["privacy", "plan", *[x for kv in base.items() for x in kv]])
    assert res.exit_code != 0
    assert isinstance(res.exception, FedECGError) and message in str(res.exception)


def test_privacy_plan_uses_the_rate_the_sites_use():
    from typer.testing import CliRunner

    from fedecg.cli import app

    res = CliRunner().invoke(app, ["privacy", "plan", "--target-epsilon", "4", "--rounds", "3", "--local-steps",
                                   "2", "--records", "27", "--batch", "8", "--json"])
    assert res.exit_code == 0, res.output
    assert '"sample_rate": 0.25' in res.output  # 1 / ceil(27 / 8), as Opacus samples (not 8 / 27)
