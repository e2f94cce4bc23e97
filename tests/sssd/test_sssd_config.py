import dataclasses
import json

import pytest

from fedecg.errors import FedECGError
from sssd.config import ModelConfig, model_preset


def test_presets_have_expected_sizes():
    tiny, small, paper = model_preset("tiny"), model_preset("small"), model_preset("paper")
    assert (tiny.num_blocks, tiny.res_channels, tiny.s4_state) == (2, 16, 8)
    assert (small.num_blocks, small.res_channels) == (6, 64)
    assert (paper.num_blocks, paper.res_channels, paper.s4_state, paper.T) == (36, 256, 64, 200)
    assert paper.label_embed_dim == 128 and paper.num_labels == 71


def test_override_and_round_trip_through_json():
    cfg = model_preset("tiny", num_blocks=3, mel_lambda=0.0)
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.num_blocks == 3 and back.mel_lambda == 0.0


def test_config_is_frozen():
    cfg = model_preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_blocks = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"num_blocks": 0},
        {"s4_state": 7},
        {"s4_init": "dplr"},
        {"label_drop_prob": 1.5},
        {"beta_end": 1e-5},
        {"mel_fmax": 80.0},
    ],
)
def test_invalid_values_raise_fedecg_error(bad):
    with pytest.raises(FedECGError):
        model_preset("tiny", **bad)


def test_unknown_key_and_unknown_preset_raise():
    with pytest.raises(FedECGError, match="unknown keys"):
        ModelConfig.from_dict({"num_blockz": 2})
    with pytest.raises(FedECGError, match="unknown model preset"):
        model_preset("huge")
