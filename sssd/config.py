"""Model, diffusion and loss configuration of the SSSD-MIDT denoiser: one frozen dataclass with named presets.

``model_preset(name, **overrides)`` builds ``tiny`` (tests/CI), ``small`` (CPU demo) or ``paper``
(SSSD-ECG: 36 blocks x 256 channels, S4 state 64); any field can be overridden. ``to_dict``/``from_dict``
round-trip through plain JSON types (this dict is what checkpoints store as ``model_config``).

Units: the model sees 8 leads (I, II, V1..V6) x ``seq_len`` samples at ``fs`` Hz; signals enter in mV and
are divided by ``data_scale`` before diffusion (sampling multiplies back, so outputs are mV again).

``ModelConfig.loss`` is the :class:`LossConfig` view of it: exactly the fields the training objective
(``sssd.losses``) reads, so the loss takes those and not the whole model config.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, fields
from typing import Any

from fedecg.errors import FedECGError

_S4_INITS = ("legs", "lin")
_TIMESTEP_WEIGHTS = ("none", "abar")


@dataclass(frozen=True)
class LossConfig:
    """What the SSSD-MIDT objective reads (``sssd.losses``): input scaling, condition dropout and the Mel term.

    Built from a model config by ``ModelConfig.loss``: the model config stays what checkpoints store and what
    the scenario's ``model.*`` keys set. Field names and meanings are the model config's; no defaults here,
    so there is one set of defaults (ModelConfig's)."""

    fs: int  # Hz: the Mel filter bank's sampling rate
    data_scale: float  # model input = signal_mV / data_scale
    label_drop_prob: float
    demo_drop_prob: float
    demo_field_drop_prob: float
    mel_lambda: float  # 0 = plain SSSD-ECG objective
    mel_n_fft: int
    mel_hop: int
    mel_n_mels: int
    mel_fmin: float  # Hz
    mel_fmax: float  # Hz
    mel_log_eps: float
    mel_timestep_weight: str  # "none" | "abar"

    def __post_init__(self) -> None:
        for name in ("fs", "mel_n_fft", "mel_hop", "mel_n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FedECGError(f"loss config: {name} must be a positive integer, got {value!r}")
        if self.mel_timestep_weight not in _TIMESTEP_WEIGHTS:
            raise FedECGError(f"loss config: mel_timestep_weight must be one of {_TIMESTEP_WEIGHTS}, "
                              f"got {self.mel_timestep_weight!r}")
        for name in ("label_drop_prob", "demo_drop_prob", "demo_field_drop_prob"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise FedECGError(f"loss config: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (self.data_scale > 0 and self.mel_lambda >= 0 and self.mel_log_eps > 0):
            raise FedECGError("loss config: data_scale and mel_log_eps must be > 0, mel_lambda >= 0")
        if self.mel_hop > self.mel_n_fft:
            raise FedECGError("loss config: need mel_hop <= mel_n_fft")
        if not 0.0 <= self.mel_fmin < self.mel_fmax <= self.fs / 2:
            raise FedECGError(f"loss config: need 0 <= mel_fmin < mel_fmax <= fs/2 = {self.fs / 2}")


_LOSS_FIELDS = tuple(f.name for f in fields(LossConfig))


@dataclass(frozen=True)
class ModelConfig:
    """All hyper-parameters of the denoiser, the noise schedule and the training loss (paper defaults)."""

    # signal
    in_channels: int = 8
    out_channels: int = 8
    seq_len: int = 1000
    fs: int = 100  # Hz
    data_scale: float = 1.0  # model input = signal_mV / data_scale
    # residual stack (SSSD-ECG)
    num_blocks: int = 36
    res_channels: int = 256
    skip_channels: int = 256
    step_embed_dim_in: int = 128
    step_embed_dim_mid: int = 512
    step_embed_dim_out: int = 512
    # S4 layers
    s4_state: int = 64  # N; the diagonal kernel uses N/2 complex-conjugate modes
    s4_bidirectional: bool = True
    s4_layernorm: bool = True
    s4_dropout: float = 0.0
    s4_init: str = "legs"  # "legs" (S4D-LegS) | "lin" (S4D-Lin)
    s4_dt_min: float = 1e-3
    s4_dt_max: float = 1e-1
    # conditioning
    num_labels: int = 71
    label_embed_dim: int = 128
    num_demographics: int = 4
    label_drop_prob: float = 0.1  # classifier-free guidance: P(labels dropped) per example in training
    demo_drop_prob: float = 0.1  # P(all demographics dropped) per example
    demo_field_drop_prob: float = 0.1  # P(one demographic field dropped), independently per field
    # > 0: each example's condition embedding (labels + demographics) is rescaled to L2 norm <= this (bounded
    # conditioning for DP fine-tuning, sssd.model.ConditionEmbedding); 0 = unbounded (the built-in base)
    cond_max_norm: float = 0.0
    # diffusion
    T: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # MIDT mel loss
    mel_lambda: float = 0.1  # 0 = plain SSSD-ECG objective
    mel_n_fft: int = 64
    mel_hop: int = 16
    mel_n_mels: int = 16
    mel_fmin: float = 0.5  # Hz
    mel_fmax: float = 50.0  # Hz (Nyquist at 100 Hz)
    mel_log_eps: float = 1e-3
    mel_timestep_weight: str = "abar"  # "none" | "abar" (weight mel term by alpha_bar_t)
    # engineering
    checkpoint_blocks: bool = False  # activation checkpointing per block (saves memory; NOT with Opacus)
    init_seed: int = 0  # parameter initialisation seed (same seed -> same initial weights)

    def __post_init__(self) -> None:
        positive = (
            "in_channels",
            "out_channels",
            "seq_len",
            "fs",
            "num_blocks",
            "res_channels",
            "skip_channels",
            "step_embed_dim_in",
            "step_embed_dim_mid",
            "step_embed_dim_out",
            "s4_state",
            "num_labels",
            "label_embed_dim",
            "num_demographics",
            "T",
            "mel_n_fft",
            "mel_hop",
            "mel_n_mels",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FedECGError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.step_embed_dim_in % 2:
            raise FedECGError("model config: step_embed_dim_in must be even (sinusoidal embedding)")
        if self.s4_state % 2:
            raise FedECGError(f"model config: s4_state must be even (conjugate pairs), got {self.s4_state}")
        if self.s4_init not in _S4_INITS:
            raise FedECGError(f"model config: s4_init must be one of {_S4_INITS}, got {self.s4_init!r}")
        if self.mel_timestep_weight not in _TIMESTEP_WEIGHTS:
            raise FedECGError(
                f"model config: mel_timestep_weight must be one of {_TIMESTEP_WEIGHTS}, "
                f"got {self.mel_timestep_weight!r}"
            )
        for name in ("label_drop_prob", "demo_drop_prob", "demo_field_drop_prob", "s4_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise FedECGError(f"model config: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if not (math.isfinite(self.cond_max_norm) and self.cond_max_norm >= 0):
            raise FedECGError(f"model config: cond_max_norm must be a finite number >= 0, got {self.cond_max_norm}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise FedECGError(
                f"model config: need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if not 0.0 < self.s4_dt_min <= self.s4_dt_max:
            raise FedECGError("model config: need 0 < s4_dt_min <= s4_dt_max")
        if self.data_scale <= 0 or self.mel_lambda < 0 or self.mel_log_eps <= 0:
            raise FedECGError("model config: data_scale and mel_log_eps must be > 0, mel_lambda >= 0")
        if self.mel_n_fft > self.seq_len or self.mel_hop > self.mel_n_fft:
            raise FedECGError("model config: need mel_hop <= mel_n_fft <= seq_len")
        if not 0.0 <= self.mel_fmin < self.mel_fmax <= self.fs / 2:
            raise FedECGError(f"model config: need 0 <= mel_fmin < mel_fmax <= fs/2 = {self.fs / 2}")

    @functools.cached_property
    def loss(self) -> LossConfig:
        """The fields of this config that the training objective reads (built once per config object)."""
        return LossConfig(**{name: getattr(self, name) for name in _LOSS_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys raise FedECGError, missing keys take the defaults."""
        if not isinstance(data, dict):
            raise FedECGError(f"model config: expected a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FedECGError(f"model config: unknown keys {unknown}")
        return cls(**data)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return ModelConfig.from_dict({**self.to_dict(), **overrides})


_PRESETS: dict[str, dict[str, Any]] = {
    # tests/CI: a training step in well under a second on one CPU core
    "tiny": dict(
        num_blocks=2,
        res_channels=16,
        skip_channels=16,
        s4_state=8,
        step_embed_dim_in=32,
        step_embed_dim_mid=64,
        step_embed_dim_out=64,
        label_embed_dim=32,
    ),
    # CPU demo: trains for a few rounds on a laptop
    "small": dict(num_blocks=6, res_channels=64, skip_channels=64, s4_state=32),
    # SSSD-ECG (Alcaraz & Strodthoff 2023)
    "paper": dict(checkpoint_blocks=True),  # activation checkpointing: one step at batch 8 in a few GB
}

PRESET_NAMES = tuple(_PRESETS)


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset (``tiny``/``small``/``paper``) with optional field overrides."""
    if name not in _PRESETS:
        raise FedECGError(f"unknown model preset {name!r}; choose one of {PRESET_NAMES}")
    return ModelConfig.from_dict({**_PRESETS[name], **overrides})
