"""Training objective of SSSD-MIDT: DDPM epsilon-MSE plus a weighted log-mel loss on the implied clean signal.

Every function here reads a :class:`sssd.config.LossConfig` ``cfg`` (``model_cfg.loss``: the few model-config
fields named below). For an example x0 (B, 8, L) in mV, with s = ``cfg.data_scale``, x = x0 / s,
t ~ U{0..T-1}, eps ~ N(0, I):

    x_t      = sqrt(abar_t) x + sqrt(1 - abar_t) eps
    eps_hat  = model(x_t, t, labels', demo, mask')        (labels'/mask' after condition dropout)
    x0_hat   = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
    loss_b   = mean_{c,l} (eps - eps_hat)^2  +  lambda * w(t) * mel(x0_hat, x)
    mel(a, b) = mean_{lead, mel band, frame} | log(M |STFT(a)| + e) - log(M |STFT(b)| + e) |

where STFT is per lead with a Hann window of n_fft samples and hop ``mel_hop`` (centre padding, reflect),
M the (n_mels x (n_fft/2+1)) mel filter bank of librosa.filters.mel(sr=fs, n_fft, n_mels, fmin, fmax)
(Slaney norm), e = ``mel_log_eps``, lambda = ``mel_lambda`` (0 = plain SSSD-ECG) and w(t) = abar_t
(``mel_timestep_weight="abar"``, so that very noisy steps, where x0_hat is mostly guesswork amplified by
1/sqrt(abar_t), do not dominate) or 1 (``"none"``). Defaults for 100 Hz: n_fft 64 (0.64 s), hop 16,
16 mel bands over 0.5-50 Hz. ``reduction="none"`` returns loss_b per example (membership-inference audits
use it), ``"mean"`` their mean.

Condition dropout (classifier-free guidance): per example, with probability ``label_drop_prob`` the labels
are zeroed ("unknown"), with ``demo_drop_prob`` the whole demographic mask is zeroed and with
``demo_field_drop_prob`` each demographic field independently; all draws use the given generator.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import torch
from torch import nn

from sssd.config import LossConfig, ModelConfig
from sssd.diffusion import Schedule, predict_x0, q_sample


@functools.lru_cache(maxsize=16)
def _mel_basis(fs: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    basis = librosa.filters.mel(sr=fs, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)
    basis.setflags(write=False)
    return basis


def log_mel(x: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Per-lead log-mel magnitude spectrogram: (B, C, L) -> (B, C, n_mels, frames), float32."""
    b, c, length = x.shape
    fb = torch.tensor(_mel_basis(cfg.fs, cfg.mel_n_fft, cfg.mel_n_mels, cfg.mel_fmin, cfg.mel_fmax))
    fb = fb.to(x.device)
    window = torch.hann_window(cfg.mel_n_fft, device=x.device)
    spec = torch.stft(
        x.float().reshape(b * c, length),
        n_fft=cfg.mel_n_fft,
        hop_length=cfg.mel_hop,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()
    mel = torch.matmul(fb, spec)
    return torch.log(mel + cfg.mel_log_eps).reshape(b, c, cfg.mel_n_mels, -1)


def mel_loss(x_hat: torch.Tensor, x: torch.Tensor, cfg: LossConfig, reduction: str = "mean") -> torch.Tensor:
    """mean |log_mel(x_hat) - log_mel(x)| over leads, bands and frames; per example if reduction='none'."""
    if x_hat.shape[0] == 0:  # empty batch: torch.stft rejects it
        return _reduce(x_hat.sum(dim=(1, 2)), reduction)
    diff = (log_mel(x_hat, cfg) - log_mel(x, cfg)).abs().flatten(1).mean(1)
    return _reduce(diff, reduction)


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return v.mean() if v.numel() else v.sum()  # an empty batch gives 0, not NaN
    if reduction == "none":
        return v
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def condition_dropout(
    labels: torch.Tensor,
    demo_mask: torch.Tensor,
    cfg: LossConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero labels / demographic masks at random for classifier-free guidance (see module docstring)."""
    b, dev = labels.shape[0], labels.device
    keep_label = (_uniform((b, 1), generator, dev) >= cfg.label_drop_prob).to(labels.dtype)
    keep_demo = (_uniform((b, 1), generator, dev) >= cfg.demo_drop_prob).to(demo_mask.dtype)
    keep_field = (_uniform(tuple(demo_mask.shape), generator, dev) >= cfg.demo_field_drop_prob).to(demo_mask.dtype)
    return labels * keep_label, demo_mask * keep_demo * keep_field


def diffusion_loss(
    model: nn.Module,
    schedule: Schedule,
    x0: torch.Tensor,
    labels: torch.Tensor,
    demo: torch.Tensor,
    demo_mask: torch.Tensor,
    cfg: LossConfig,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    *,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    cond_dropout: bool | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SSSD-MIDT loss of a batch (x0 in mV). Returns (loss, parts) with parts' batch means as floats.

    ``cfg`` is the model config's ``.loss`` (a whole ModelConfig is refused: the loss reads only these fields).
    ``t``/``noise`` may be given (e.g. fixed for an audit); otherwise drawn from ``generator``. ``cond_dropout``
    defaults to ``model.training``."""
    if isinstance(cfg, ModelConfig):
        raise TypeError("diffusion_loss takes a LossConfig (model_cfg.loss), not the whole ModelConfig")
    dev = x0.device
    x = x0.float() / cfg.data_scale
    b = x.shape[0]
    gen_dev = generator.device if generator is not None else dev
    if t is None:
        t = torch.randint(0, schedule.T, (b,), generator=generator, device=gen_dev).to(dev)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=gen_dev).to(dev)
    if cond_dropout is None:
        cond_dropout = model.training
    if cond_dropout:
        labels, demo_mask = condition_dropout(labels, demo_mask, cfg, generator)
    x_t = q_sample(schedule, x, t, noise)
    eps_hat = model(x_t, t, labels, demo, demo_mask).float()
    mse = (eps_hat - noise).pow(2).flatten(1).mean(1)
    total = mse
    parts = {"eps_mse": float(mse.detach().mean())}
    if cfg.mel_lambda > 0:
        x0_hat = predict_x0(schedule, x_t, t, eps_hat)
        mel = mel_loss(x0_hat, x, cfg, reduction="none")
        weight = Schedule.at(schedule.alpha_bars, t, 1) if cfg.mel_timestep_weight == "abar" else 1.0
        total = total + cfg.mel_lambda * weight * mel
        parts["mel"] = float(mel.detach().mean())
    loss = _reduce(total, reduction)
    parts["loss"] = float(total.detach().mean())
    return loss, parts
