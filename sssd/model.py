"""The conditional SSSD-MIDT denoiser: SSSD-ECG's residual stack of S4 layers, conditioned on the diffusion
step, the 71 PTB-XL statements (multi-hot) and demographics (age, sex, height, weight with missing masks).

Layout (Alcaraz & Strodthoff 2023, SSSD-ECG); the interface is (B, C, L), inside the network tensors are
channels-last (B, L, C) so that every 1x1 conv is an ``nn.Linear`` (one GEMM, fast forward and backward on
CPU; the k=3 conv is a Linear on [h_{l-1}, h_l, h_{l+1}], see ``shift_stack``):

    x (B, 8, L) -> 1x1 conv to C, ReLU -> blocks -> sum of skips * sqrt(1/num_blocks)
                -> 1x1 conv, ReLU -> 1x1 conv to 8 (zero-initialised: the model outputs 0 at init)
    block(h):  z = h + fc_t(step_emb);  z = conv_k3(z) (C -> 2C);  z = S4(z);  z = z + fc_c(cond);
               z = S4(z);  o = tanh(z[:C]) * sigmoid(z[C:]);
               return (h + res_conv(o)) * sqrt(1/2), skip_conv(o)
               (the last block has no res_conv: its residual output is unused)
    step_emb = swish(W2 swish(W1 sinusoid_128(t)))  (128 -> 512 -> 512)
    cond = label_embed(labels) + demo_embed([demo * mask, mask])  (label_embed_dim)

Differences from the reference code (documented in docs/model.md): diagonal S4D kernels instead of DPLR;
no weight normalisation on the convolutions (a reparametrisation that complicates per-sample clipping
under DP-SGD); the label embedding is ``Linear(71, 128)`` (the reference multiplies the multi-hot vector
by an ``nn.Embedding`` weight, the same map without bias; the bias is the "no labels" embedding used
for classifier-free guidance). An all-zero label vector therefore means "labels unknown" and an all-zero
``demo_mask`` means "demographics unknown"; condition dropout for guidance is applied by the loss
(``sssd.losses``) with an explicit generator, so ``forward`` is deterministic.

No module holds buffers and every trainable leaf receives the batch in ``forward`` (Opacus DP-SGD).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sssd.config import ModelConfig
from sssd.dp import register_grad_samplers
from sssd.s4 import S4Layer


def step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal step embedding (B,) -> (B, dim): [sin(t f_j), cos(t f_j)], f_j = 10^(-4 j / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / max(half - 1, 1))
    )
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class ConditionEmbedding(nn.Module):
    """labels (B, 71) multi-hot, demo (B, 4), demo_mask (B, 4) -> (B, label_embed_dim)."""

    def __init__(self, num_labels: int, num_demographics: int, dim: int, max_norm: float = 0.0) -> None:
        super().__init__()
        self.max_norm = float(max_norm)
        self.label = nn.Linear(num_labels, dim)
        self.demo_in = nn.Linear(2 * num_demographics, dim)
        self.demo_out = nn.Linear(dim, dim)

    def forward(self, labels: torch.Tensor, demo: torch.Tensor, demo_mask: torch.Tensor) -> torch.Tensor:
        d = torch.cat([demo * demo_mask, demo_mask], dim=1)
        e = self.label(labels) + self.demo_out(F.silu(self.demo_in(d)))
        if self.max_norm > 0:  # bounded conditioning: ||e|| <= max_norm per example (a smooth rescale)
            e = e * torch.clamp(self.max_norm / (e.norm(dim=1, keepdim=True) + 1e-12), max=1.0)
        return e


def shift_stack(z: torch.Tensor) -> torch.Tensor:
    """(B, L, C) -> (B, L, 3C) = [z_{l-1}, z_l, z_{l+1}] with zero padding: a k=3 conv becomes one matmul."""
    prev = F.pad(z, (0, 0, 1, 0))[:, :-1]
    nxt = F.pad(z, (0, 0, 0, 1))[:, 1:]
    return torch.cat([prev, z, nxt], dim=-1)


class ResidualBlock(nn.Module):
    """One SSSD-ECG residual block (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, last: bool = False) -> None:
        super().__init__()
        c = cfg.res_channels
        s4 = dict(
            state=cfg.s4_state,
            bidirectional=cfg.s4_bidirectional,
            layernorm=cfg.s4_layernorm,
            dropout=cfg.s4_dropout,
            init=cfg.s4_init,
            dt_min=cfg.s4_dt_min,
            dt_max=cfg.s4_dt_max,
        )
        self.res_channels = c
        self.fc_t = nn.Linear(cfg.step_embed_dim_out, c)
        self.conv_layer = nn.Linear(3 * c, 2 * c)  # conv k=3, padding 1, as a linear map of [h_{l-1}, h_l, h_{l+1}]
        self.s4_1 = S4Layer(2 * c, **s4)
        self.fc_cond = nn.Linear(cfg.label_embed_dim, 2 * c)
        self.s4_2 = S4Layer(2 * c, **s4)
        # the last block's residual output is never used: no res_conv there (no dead, gradient-less weights,
        # which Opacus would reject)
        self.res_conv = None if last else nn.Linear(c, c)
        self.skip_conv = nn.Linear(c, cfg.skip_channels)
        for conv in (self.conv_layer, self.res_conv, self.skip_conv):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight)

    def forward(self, h: torch.Tensor, step_emb: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = h + self.fc_t(step_emb).unsqueeze(1)
        z = self.s4_1(self.conv_layer(shift_stack(z)))
        z = z + self.fc_cond(cond).unsqueeze(1)
        z = self.s4_2(z)
        c = self.res_channels
        out = torch.tanh(z[..., :c]) * torch.sigmoid(z[..., c:])
        skip = self.skip_conv(out)
        if self.res_conv is None:
            return h, skip
        return (h + self.res_conv(out)) * math.sqrt(0.5), skip


class SSSDDenoiser(nn.Module):
    """eps-prediction: forward(x_t (B,8,L), t (B,) long, labels (B,71), demo (B,4), demo_mask (B,4))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the caller's RNG
            torch.manual_seed(cfg.init_seed)
            self.init_conv = nn.Linear(cfg.in_channels, cfg.res_channels)
            nn.init.kaiming_normal_(self.init_conv.weight)
            self.fc_t1 = nn.Linear(cfg.step_embed_dim_in, cfg.step_embed_dim_mid)
            self.fc_t2 = nn.Linear(cfg.step_embed_dim_mid, cfg.step_embed_dim_out)
            self.cond_embed = ConditionEmbedding(cfg.num_labels, cfg.num_demographics, cfg.label_embed_dim,
                                                 cfg.cond_max_norm)
            self.blocks = nn.ModuleList(ResidualBlock(cfg, last=i == cfg.num_blocks - 1) for i in range(cfg.num_blocks))
            self.final_conv = nn.Linear(cfg.skip_channels, cfg.skip_channels)
            nn.init.kaiming_normal_(self.final_conv.weight)
            self.zero_conv = nn.Linear(cfg.skip_channels, cfg.out_channels)
            nn.init.zeros_(self.zero_conv.weight)
            nn.init.zeros_(self.zero_conv.bias)
        if "opacus" in sys.modules:  # make exact S4D per-sample gradients available to an active Opacus
            register_grad_samplers()

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        demo: torch.Tensor,
        demo_mask: torch.Tensor,
    ) -> torch.Tensor:
        step = F.silu(self.fc_t2(F.silu(self.fc_t1(step_embedding(t, self.cfg.step_embed_dim_in)))))
        cond = self.cond_embed(labels, demo, demo_mask)
        h = F.relu(self.init_conv(x_t.transpose(1, 2)))  # channels-last (B, L, C) inside
        skip = None
        # activation checkpointing saves memory but re-runs forwards, which Opacus's hooks cannot follow:
        # it is switched off while Opacus hooks are attached
        use_ckpt = (
            self.cfg.checkpoint_blocks
            and self.training
            and torch.is_grad_enabled()
            and not hasattr(self, "autograd_grad_sample_hooks")
        )
        for block in self.blocks:
            if use_ckpt:
                h, s = checkpoint(block, h, step, cond, use_reentrant=False)
            else:
                h, s = block(h, step, cond)
            skip = s if skip is None else skip + s
        skip = skip * math.sqrt(1.0 / len(self.blocks))
        return self.zero_conv(F.relu(self.final_conv(skip))).float().transpose(1, 2)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain denoiser inside Opacus's GradSampleModule (``_module``) or torch.compile (``_orig_mod``)."""
    while True:
        inner = getattr(model, "_module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
