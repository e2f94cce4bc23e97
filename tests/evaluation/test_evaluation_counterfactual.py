"""evaluation.counterfactual: paired demographic sweeps with fixed noise."""

import numpy as np
import pytest

from evaluation import synthesize
from evaluation.counterfactual import SWEEPS, counterfactual_effects
from tests._evaluation_ecgs import toy_ecgs


def _fake_generate(checkpoint, conditions, settings, device=None):
    """A 'model' whose heart rate rises with age (60 bpm at 30 y, +1 bpm per year) and ignores the rest."""
    age = float(conditions.demographics["age"].iloc[0])
    return toy_ecgs(len(conditions), hr_bpm=60 + (age - 30), seed=settings.seed), {}


def test_age_effect_is_measured_and_compared_with_real_direction(monkeypatch):
    monkeypatch.setattr(synthesize, "generate", _fake_generate)
    real = {"age": {"hr_bpm": 0.3}, "sex": {"hr_bpm": 0.0}}

    out = counterfactual_effects("unused.pt", n=3, steps=1, real_effects=real)

    age_hr = out["effects"]["age"]["hr_bpm"]
    assert age_hr["mean_diff"] == pytest.approx(SWEEPS["age"][1] - SWEEPS["age"][0], rel=0.1)
    assert age_hr["same_direction"] is True
    assert out["effects"]["sex"]["hr_bpm"]["mean_diff"] == pytest.approx(0.0, abs=1e-9)  # same noise, same ECG
    assert out["n_effects_compared"] == 1 and out["direction_agreement"] == 1.0


def test_real_checkpoint_runs_and_reports_every_factor(tmp_path):
    from ptbxl.labels import LabelVocab
    from sssd.checkpoint import save_checkpoint
    from sssd.config import model_preset
    from sssd.model import SSSDDenoiser

    cfg = model_preset("tiny")
    save_checkpoint(tmp_path / "t.pt", {"model_config": cfg.to_dict(), "state_dict": SSSDDenoiser(cfg).state_dict(),
                                        "label_codes": LabelVocab.default().to_list()})

    out = counterfactual_effects(tmp_path / "t.pt", n=2, steps=1)

    assert set(out["effects"]) == set(SWEEPS)
    assert all(len(v) == 5 for v in out["effects"].values())
    assert np.isnan(out["direction_agreement"])  # no real reference given
