import pytest
import torch

from fedecg.device import torch_threads
from fedecg.errors import FedECGError
from sssd.checkpoint import CHECKPOINT_FORMAT, build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from sssd.config import model_preset
from sssd.model import SSSDDenoiser


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The CPU is shared: one intra-op thread avoids OpenMP oversubscription (10x slowdowns under load)."""
    with torch_threads(1):
        yield


def _payload(model, ema=None):
    return {
        "round": 3,
        "model_config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "ema_state_dict": ema,
        "label_codes": ["NORM"] * 71,
        "demographics": {"age_mean": 60.0},
        "run_config": {},
        "privacy_ledger": {},
        "rng_state": torch.get_rng_state(),
        "manifest_path": "m.json",
    }


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 8, 1000, generator=g),
        torch.tensor([3, 150]),
        torch.zeros(2, 71),
        torch.zeros(2, 4),
        torch.ones(2, 4),
    )


def test_round_trip_gives_identical_outputs(tmp_path):
    model = SSSDDenoiser(model_preset("tiny"))
    with torch.no_grad():
        model.zero_conv.weight.normal_(0, 0.1)
    save_checkpoint(tmp_path / "ck.pt", _payload(model))
    ckpt = load_checkpoint(tmp_path / "ck.pt")
    assert ckpt["format"] == "fedecg-checkpoint/1" and ckpt["round"] == 3
    loaded, cfg = model_from_checkpoint(ckpt, "cpu")
    assert cfg == model.cfg and not loaded.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(*_inputs()), model(*_inputs()))


def test_ema_weights_are_preferred(tmp_path):
    model = SSSDDenoiser(model_preset("tiny"))
    ema = {k: v + 1.0 for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path / "ck.pt", _payload(model, ema))
    ckpt = load_checkpoint(tmp_path / "ck.pt")
    with_ema, _ = model_from_checkpoint(ckpt, "cpu", ema=True)
    without, _ = model_from_checkpoint(ckpt, "cpu", ema=False)
    assert torch.equal(with_ema.zero_conv.bias, model.zero_conv.bias + 1.0)
    assert torch.equal(without.zero_conv.bias, model.zero_conv.bias)


def test_corrupt_missing_and_wrong_format_raise(tmp_path):
    model = SSSDDenoiser(model_preset("tiny"))
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _payload(model))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FedECGError, match="ck.pt"):
        load_checkpoint(path)
    with pytest.raises(FedECGError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": "other/9", "model_config": {}, "state_dict": {}}, tmp_path / "w.pt")
    with pytest.raises(FedECGError, match="format"):
        load_checkpoint(tmp_path / "w.pt")
    torch.save({"format": "fedecg-checkpoint/1"}, tmp_path / "m.pt")
    with pytest.raises(FedECGError, match="missing keys"):
        load_checkpoint(tmp_path / "m.pt")


def test_mismatched_weights_raise(tmp_path):
    model = SSSDDenoiser(model_preset("tiny"))
    payload = _payload(model)
    payload["model_config"] = model_preset("tiny", num_blocks=3).to_dict()
    save_checkpoint(tmp_path / "ck.pt", payload)
    with pytest.raises(FedECGError, match="do not match"):
        model_from_checkpoint(load_checkpoint(tmp_path / "ck.pt"))


def test_the_one_builder_takes_a_config_and_tensors_or_numpy_weights():
    cfg = model_preset("tiny")
    ref = SSSDDenoiser(cfg)
    with torch.no_grad():
        ref.zero_conv.weight.normal_(0, 0.1)
    as_numpy = {k: v.numpy().copy() for k, v in ref.state_dict().items()}
    for state in (ref.state_dict(), as_numpy):
        built = build_model(cfg, state, "cpu")
        assert built.training and torch.equal(built.zero_conv.weight, ref.zero_conv.weight)
    fresh = build_model(cfg.to_dict())  # a dict config, no weights: the seeded initialisation
    assert torch.equal(fresh.init_conv.weight, SSSDDenoiser(cfg).init_conv.weight)
    with pytest.raises(FedECGError, match="do not match"):
        build_model(model_preset("tiny", num_blocks=3), as_numpy)


def test_the_shipped_builtin_base_loads_with_the_one_format_and_builder():
    from sssd.pretrained import BUILTIN_DIR, load_base

    path = BUILTIN_DIR / "dipole-small.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT == "fedecg-checkpoint/1"
    model, cfg = model_from_checkpoint(ckpt, "cpu")  # EMA weights, what federations start from
    assert not model.training and torch.equal(model.init_conv.weight, ckpt["ema_state_dict"]["init_conv.weight"])
    base = load_base("builtin:dipole-small", cfg)
    assert base.weights == "ema"
    rebuilt = build_model(cfg, base.state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in rebuilt.state_dict().items())


def test_server_checkpoints_carry_the_one_format(tmp_path):
    from server.rundir import RunDir

    model = SSSDDenoiser(model_preset("tiny"))
    payload = _payload(model)  # as server.loop builds it: no "format" key, save_checkpoint fills it in
    RunDir(tmp_path).save_checkpoint(1, payload)
    assert load_checkpoint(tmp_path / "checkpoints" / "round-0001.pt")["format"] == CHECKPOINT_FORMAT
