"""The DDPM noise schedule as plain tensors (not a Module: nothing here travels with the weights).

Linear betas beta_t = beta_start + (beta_end - beta_start) t / (T - 1), t = 0..T-1 (SSSD-ECG: T = 200,
1e-4 -> 0.02); alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s.
Forward process: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).
Posterior: q(x_{t-1} | x_t, x_0) = N(mu, beta_tilde_t I) with
    mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)   (eps-parametrisation)
    beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t,  beta_tilde_0 = 0.
Coefficients are computed in float64 and stored as float32 (``Schedule.at`` gathers them per example).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sssd.config import ModelConfig


@dataclass(frozen=True)
class Schedule:
    """Per-step coefficients, each a (T,) float32 tensor on one device."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    alpha_bars_prev: torch.Tensor  # abar_{t-1}, with abar_{-1} = 1
    posterior_variance: torch.Tensor  # beta_tilde_t

    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def linear(
        cls,
        T: int = 200,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        device: torch.device | str = "cpu",
    ) -> Schedule:
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = (1.0 - abar_prev) / (1.0 - abar) * betas
        return cls(*(v.to(device=device, dtype=torch.float32) for v in (betas, alphas, abar, abar_prev, post_var)))

    @classmethod
    def from_config(cls, cfg: ModelConfig, device: torch.device | str = "cpu") -> Schedule:
        return cls.linear(cfg.T, cfg.beta_start, cfg.beta_end, device)

    def to(self, device: torch.device | str) -> Schedule:
        return Schedule(
            *(
                v.to(device)
                for v in (
                    self.betas,
                    self.alphas,
                    self.alpha_bars,
                    self.alpha_bars_prev,
                    self.posterior_variance,
                )
            )
        )

    @staticmethod
    def at(coef: torch.Tensor, t: torch.Tensor, ndim: int = 3) -> torch.Tensor:
        """coef[t] reshaped to (B, 1, ..., 1) for broadcasting against a (B, ...) tensor of ``ndim`` dims."""
        return coef.to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    abar = Schedule.at(schedule.alpha_bars, t, x0.dim())
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def predict_x0(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)."""
    abar = Schedule.at(schedule.alpha_bars, t, x_t.dim())
    return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()


def posterior_mean(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """mu(x_t, eps) = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)."""
    beta = Schedule.at(schedule.betas, t, x_t.dim())
    abar = Schedule.at(schedule.alpha_bars, t, x_t.dim())
    alpha = Schedule.at(schedule.alphas, t, x_t.dim())
    return (x_t - beta / (1.0 - abar).sqrt() * eps) / alpha.sqrt()
