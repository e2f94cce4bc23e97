"""Membership inference on the diffusion model itself: a loss (denoising-error) threshold attack.

Score of an ECG x0 with its conditions (labels, demographics)::

    e(x0) = 1/(|τ|·K) · Σ_{t ∈ τ} Σ_{k=1..K} loss(x0, t, ε_k)        score(x0) = −e(x0)

where loss is the model's own training objective per example (``sssd.losses.diffusion_loss`` with
``reduction="none"``, condition dropout off, eval mode): ε-MSE plus λ·mel when the run used the mel loss.
τ are fixed timesteps (default 5, 20, 50, 100 of T = 200: low and medium noise, where a memorised example is
reconstructed best) and ε_k are K Gaussian noise draws from a ``torch.Generator`` seeded once, so every record
is scored with the same (t, noise-draw) protocol and the scores are reproducible. Training members should
have a lower error than unseen records of the same distribution (Carlini et al. 2023; Matsumoto et al. 2023).

Attack quality over members M (training records) and non-members H (holdout):
AUC of the ROC (``sklearn.metrics.roc_curve``/``roc_auc_score``), and TPR at FPR ≤ 1% and ≤ 0.1% (the
largest TPR among ROC points whose FPR does not exceed the target). With |H| non-members the smallest
non-zero FPR is 1/|H|; when 1/|H| exceeds a target FPR, that TPR is the TPR at FPR = 0 and ``fpr_resolution``
in the output says so. AUC 0.5 = chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from fedecg.errors import FedECGError
from sssd.losses import diffusion_loss


@dataclass(frozen=True)
class MIAConfig:
    """Fixed protocol of the denoising-error attack."""

    timesteps: tuple[int, ...] = (5, 20, 50, 100)
    n_noise: int = 2
    batch_size: int = 32
    seed: int = 0


@torch.no_grad()
def denoising_errors(
    model: torch.nn.Module,
    schedule,
    model_cfg,
    x: np.ndarray,
    labels: np.ndarray,
    demo: np.ndarray,
    demo_mask: np.ndarray,
    cfg: MIAConfig | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """e(x0) per record (module docstring), shape (N,), for x (N, 8, L) mV with its conditions."""
    cfg = cfg or MIAConfig()
    dev = torch.device(device)
    if x.ndim != 3 or not (len(x) == len(labels) == len(demo) == len(demo_mask)):
        raise FedECGError(f"MIA inputs: x {x.shape}, labels {labels.shape}, demo {demo.shape} do not align")
    steps = [int(t) for t in cfg.timesteps if 0 <= int(t) < schedule.T]
    if not steps:
        raise FedECGError(f"MIA timesteps {cfg.timesteps} are outside 0..{schedule.T - 1}")
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    out = np.zeros(len(x), dtype=np.float64)
    try:
        for b0 in range(0, len(x), cfg.batch_size):
            sl = slice(b0, b0 + cfg.batch_size)
            xb, lb, db, mb = (
                torch.as_tensor(np.asarray(a[sl]), dtype=torch.float32).to(dev) for a in (x, labels, demo, demo_mask)
            )
            total = torch.zeros(len(xb), dtype=torch.float64)
            for t in steps:
                tt = torch.full((len(xb),), t, dtype=torch.long, device=dev)
                for _ in range(cfg.n_noise):
                    noise = torch.randn(xb.shape, generator=gen).to(dev)
                    loss, _ = diffusion_loss(
                        model,
                        schedule,
                        xb,
                        lb,
                        db,
                        mb,
                        model_cfg.loss,
                        reduction="none",
                        t=tt,
                        noise=noise,
                        cond_dropout=False,
                    )
                    total += loss.detach().double().cpu()
            out[sl] = (total / (len(steps) * cfg.n_noise)).numpy()
    finally:
        model.train(was_training)
    return out


def attack_metrics(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, target_fprs: Sequence[float] = (0.01, 0.001)
) -> dict:
    """AUC, TPR at the target FPRs and the ROC curve for scores where higher = "member"."""
    m, h = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if len(m) == 0 or len(h) == 0:
        raise FedECGError(f"MIA needs members and non-members (got {len(m)} and {len(h)})")
    y = np.concatenate([np.ones(len(m)), np.zeros(len(h))])
    s = np.concatenate([m, h])
    fpr, tpr, _ = roc_curve(y, s)
    tpr_at = {f"{f:g}": float(tpr[fpr <= f].max()) for f in target_fprs}
    return {
        "auc": float(roc_auc_score(y, s)),
        "tpr_at_fpr": tpr_at,
        "n_members": len(m),
        "n_nonmembers": len(h),
        "fpr_resolution": 1.0 / len(h),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }
