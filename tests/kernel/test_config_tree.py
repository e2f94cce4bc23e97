"""One typed config tree per process (issue 14): the model spec resolved once, the loss reading only its own
LossConfig, one parser for the ``;``-separated override string."""

from __future__ import annotations

import dataclasses

import librosa
import pytest
import torch
import yaml

import fedecg.config
from fedecg.config import ScenarioConfig, join_overrides, load_scenario, split_overrides
from fedecg.device import torch_threads
from fedecg.errors import FedECGError
from sssd.config import LossConfig, ModelConfig, model_preset
from sssd.diffusion import Schedule
from sssd.losses import diffusion_loss
from sssd.model import SSSDDenoiser


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


def _write(tmp_path, data) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


# ---- the model spec: resolved once per object, bad specs fail at load time ----

def test_model_config_is_resolved_once_per_scenario(tmp_path, monkeypatch):
    calls = []
    real = fedecg.config.model_preset

    def counting(name, **overrides):
        calls.append((name, overrides))
        return real(name, **overrides)

    monkeypatch.setattr(fedecg.config, "model_preset", counting)
    cfg = load_scenario(_write(tmp_path, {"dataset": "demo"}), ["model.mel_lambda=0.3", "model=tiny"])
    assert len(calls) == 1  # validate() resolved it, at load time
    first = cfg.model.resolve()
    assert all(cfg.model.resolve() is first for _ in range(5)) and len(calls) == 1
    assert isinstance(first, ModelConfig) and first.mel_lambda == 0.3 and first.num_blocks == 2
    assert first.loss is first.loss  # and its loss view is built once too
    # the cache is not part of the config: JSON round trip, equality and to_dict are unchanged
    assert "_resolved" not in cfg.to_dict()["model"]
    back = ScenarioConfig.from_json(cfg.to_json())
    assert back == cfg and back.model.resolve() == first


def test_a_new_spec_resolves_anew():
    cfg = ScenarioConfig.from_dict({"model": {"preset": "tiny"}}).validate(check_files=False)
    changed = dataclasses.replace(cfg.model, overrides={**cfg.model.overrides, "mel_lambda": 0.0})
    assert changed.resolve().mel_lambda == 0.0 and cfg.model.resolve().mel_lambda == 0.1


@pytest.mark.parametrize("override, needle", [
    ("model.res_channels=0", "res_channels must be a positive integer"),
    ("model.no_such_field=1", "unknown keys ['no_such_field']"),
    ("model.mel_lambda=-1", "mel_lambda >= 0"),
    ("model=huge", "unknown model preset 'huge'"),
])
def test_bad_model_spec_fails_at_load_with_one_line(tmp_path, override, needle):
    with pytest.raises(FedECGError) as info:
        load_scenario(_write(tmp_path, {"dataset": "demo"}), [override])
    msg = str(info.value)
    assert needle in msg and "\n" not in msg
    assert msg.startswith("model config:") or msg.startswith("unknown model preset")


def test_failed_resolution_is_not_cached():
    spec = fedecg.config.ModelSpec(preset="tiny", overrides={"T": 0})
    for _ in range(2):
        with pytest.raises(FedECGError, match="model config: T must be a positive integer"):
            spec.resolve()


# ---- LossConfig: exactly what the loss reads ----

class _Recorder:
    """A LossConfig stand-in that records which attributes the loss reads."""

    def __init__(self, cfg: LossConfig):
        self._cfg, self.read = cfg, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._cfg, name)


def _model(m: ModelConfig, seed: int = 11) -> SSSDDenoiser:
    torch.manual_seed(0)
    model = SSSDDenoiser(m)
    with torch.no_grad():  # the output layer starts at zero (eps_hat = 0): perturb every weight
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.train()


def _batch(m: ModelConfig, n: int = 3, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m.in_channels, m.seq_len, generator=g)
    labels = (torch.rand(n, m.num_labels, generator=g) < 0.2).float()
    demo = torch.randn(n, m.num_demographics, generator=g)
    return x, labels, demo, torch.ones(n, m.num_demographics)


_CONFIGS = {
    "default": {},
    "unweighted-scaled": dict(mel_lambda=1.0, mel_timestep_weight="none", data_scale=2.0),
    "no-mel": dict(mel_lambda=0.0),
    "odd": dict(seq_len=500, mel_n_fft=32, mel_hop=8, mel_n_mels=8, mel_fmin=1.0, mel_fmax=40.0,
                mel_log_eps=1e-2, label_drop_prob=0.5, demo_drop_prob=0.3, demo_field_drop_prob=0.2),
}


def test_loss_config_is_the_model_configs_loss_fields():
    m = model_preset("tiny", **_CONFIGS["odd"])
    names = [f.name for f in dataclasses.fields(LossConfig)]
    assert set(names) <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert all(getattr(m.loss, n) == getattr(m, n) for n in names)
    # the model config (what checkpoints store) is unchanged by it
    assert "loss" not in m.to_dict() and ModelConfig.from_dict(m.to_dict()) == m
    with pytest.raises(FedECGError, match="loss config: mel_timestep_weight"):
        dataclasses.replace(m.loss, mel_timestep_weight="t")


def test_the_loss_reads_exactly_the_loss_config():
    m = model_preset("tiny", seq_len=200)
    rec = _Recorder(m.loss)
    diffusion_loss(_model(m), Schedule.from_config(m), *_batch(m), rec, torch.Generator().manual_seed(3))
    assert rec.read == {f.name for f in dataclasses.fields(LossConfig)}


def _reference_loss(model, m: ModelConfig, x0, labels, demo, mask, gen):
    """The SSSD-MIDT objective written out from sssd.losses' docstring, without sssd.losses: the same draws
    from ``gen`` (t, noise, then condition dropout), eps-MSE + lambda * w(t) * log-mel L1, per example."""
    b = x0.shape[0]
    abar = torch.cumprod(1.0 - torch.linspace(m.beta_start, m.beta_end, m.T, dtype=torch.float64), 0).float()
    x = x0.float() / m.data_scale
    t = torch.randint(0, m.T, (b,), generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    keep_label = (torch.rand((b, 1), generator=gen) >= m.label_drop_prob).float()
    keep_demo = (torch.rand((b, 1), generator=gen) >= m.demo_drop_prob).float()
    keep_field = (torch.rand(tuple(mask.shape), generator=gen) >= m.demo_field_drop_prob).float()
    a = abar[t].reshape(b, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    eps_hat = model(x_t, t, labels * keep_label, demo, mask * keep_demo * keep_field).float()
    mse = (eps_hat - noise).pow(2).mean(dim=(1, 2))
    if m.mel_lambda == 0:
        return mse
    x0_hat = (x_t - (1 - a).sqrt() * eps_hat) / a.sqrt()
    fb = torch.from_numpy(librosa.filters.mel(sr=m.fs, n_fft=m.mel_n_fft, n_mels=m.mel_n_mels, fmin=m.mel_fmin,
                                              fmax=m.mel_fmax)).float()

    def logmel(s):
        spec = torch.stft(s.reshape(-1, s.shape[-1]), n_fft=m.mel_n_fft, hop_length=m.mel_hop,
                          window=torch.hann_window(m.mel_n_fft), center=True, pad_mode="reflect",
                          return_complex=True).abs()
        return torch.log(fb @ spec + m.mel_log_eps).reshape(b, -1)

    mel = (logmel(x0_hat) - logmel(x)).abs().mean(1)
    w = abar[t] if m.mel_timestep_weight == "abar" else 1.0
    return mse + m.mel_lambda * w * mel


@pytest.mark.parametrize("name", list(_CONFIGS))
def test_diffusion_loss_on_loss_config_matches_the_reference(name):
    m = model_preset("tiny", **_CONFIGS[name])
    model, sched, batch = _model(m), Schedule.from_config(m), _batch(m)
    new, parts_new = diffusion_loss(model, sched, *batch, m.loss, torch.Generator().manual_seed(3),
                                    reduction="none")
    with pytest.raises(TypeError, match="LossConfig"):  # the whole model config is no longer taken
        diffusion_loss(model, sched, *batch, m, torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = _reference_loss(model, m, *batch, torch.Generator().manual_seed(3))
    assert torch.allclose(new.detach(), ref, rtol=1e-5, atol=1e-6), (new, ref)
    assert parts_new["loss"] == pytest.approx(float(ref.mean()), rel=1e-5)
    assert ("mel" in parts_new) == (m.mel_lambda > 0)


# ---- the ";"-separated override string ----

@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("   ", []),
    ("rounds=5", ["rounds=5"]),
    ("rounds=5;dp=false", ["rounds=5", "dp=false"]),
    (" rounds=5 ; ;dp=false;", ["rounds=5", "dp=false"]),
    ("init=builtin:a=b;model.mel_lambda=0", ["init=builtin:a=b", "model.mel_lambda=0"]),
    ("dataset=", ["dataset="]),
])
def test_split_overrides(text, expected):
    assert split_overrides(text) == expected


@pytest.mark.parametrize("text", ["rounds", "rounds=5;dp", "rounds=5;;oops;"])
def test_split_overrides_refuses_items_without_equals(text):
    with pytest.raises(FedECGError, match="not key=value") as info:
        split_overrides(text)
    assert "\n" not in str(info.value)


def test_join_is_the_inverse_of_split():
    items = ["rounds=2", "model=tiny", "model.mel_lambda=0"]
    assert join_overrides(items) == "rounds=2;model=tiny;model.mel_lambda=0"
    assert split_overrides(join_overrides(items)) == items
    assert join_overrides([]) == "" and join_overrides(["", " rounds=1 "]) == "rounds=1"
    for bad in (["name=a;b"], ["rounds"]):
        with pytest.raises(FedECGError):
            join_overrides(bad)


def test_split_overrides_feed_load_scenario(tmp_path):
    cfg = load_scenario(_write(tmp_path, {"dataset": "demo"}), split_overrides("rounds=4; model.mel_lambda=0 ;"))
    assert cfg.rounds == 4 and cfg.model.resolve().mel_lambda == 0
