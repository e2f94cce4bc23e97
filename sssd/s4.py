"""Diagonal structured state-space (S4D) layer, bidirectional, computed as an FFT long convolution.

Choice (documented in docs/model.md): SSSD-ECG used the full S4 (DPLR) kernel; we use its diagonal
restriction S4D (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space
Models"), which matches S4 on long-range benchmarks, needs no Cauchy kernel or custom extensions and runs
on CPU and CUDA in plain torch. Initialisation is HiPPO-derived:

* ``legs`` (default, S4D-LegS): A = eigenvalues of the normal part of the HiPPO-LegS matrix
  (A_N = A_LegS + P P^T, P_n = sqrt(n + 1/2); eigenvalues -1/2 + i w_n, the N/2 with w_n > 0) and
  B = V^* B_LegS in the same eigenbasis, folded into C;
* ``lin`` (S4D-Lin): A_n = -1/2 + i pi n, B = 1.

Per channel h (H channels) with N/2 complex modes, step dt_h and zero-order-hold discretisation, the
kernel is

    K[h, l] = 2 Re( sum_n C[h, n] (exp(dt_h A[h, n]) - 1) / A[h, n] * exp(dt_h A[h, n] l) ),  l < L

and y = K * u (+ a second, anti-causal kernel when bidirectional) + D u. The Vandermonde factor
exp(dtA l) is never materialised as a (H, N/2, L) tensor: with l = g M + m (M ~ sqrt(L)) it factorises
into exp(dtA g M) (H, N/2, L/M) and exp(dtA m) (H, N/2, M), and the sum over modes becomes one batched
matmul. Memory and autograd state per layer are O(H N sqrt(L)) instead of O(H N L) (262 MB per layer at
the paper size); with activation checkpointing per block the paper configuration trains in about 6 GB.

DP-SGD: the kernel is computed inside ``S4DConv.forward`` (which receives the batch), so Opacus hooks see
the batch; ``s4d_grad_sample`` computes exact per-sample gradients of the kernel parameters (cross-
correlation by FFT, then the kernel's vector-Jacobian products in closed form, ``kernel_vjp``), registered with Opacus
by ``sssd.dp``. Without that registration Opacus's functorch fallback also works, more slowly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def hippo_diagonal_init(n_modes: int, init: str = "legs") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Diagonal state matrix for ``n_modes`` conjugate pairs: (A_real (n,), A_imag (n,), B (n,) complex)."""
    if init == "lin":
        return (
            -0.5 * np.ones(n_modes),
            math.pi * np.arange(n_modes, dtype=np.float64),
            np.ones(n_modes, complex),
        )
    if init != "legs":
        raise ValueError(f"unknown S4D init {init!r}")
    n = 2 * n_modes
    q = np.sqrt(2 * np.arange(n) + 1.0)
    a = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(n) + 1.0)  # HiPPO-LegS
    b = q.copy()
    p = np.sqrt(np.arange(n) + 0.5)
    skew = a + np.outer(p, p) + 0.5 * np.eye(n)  # normal part A_N = -I/2 + skew
    w, v = np.linalg.eigh(-1j * skew)  # skew v = i w v
    keep = np.argsort(w)[n_modes:]  # the half with w > 0 (the other half are conjugates)
    b_diag = v[:, keep].conj().T @ b
    return -0.5 * np.ones(n_modes), w[keep], b_diag


def _exp_complex(z: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """exp(z[..., None] * steps) for complex z and real steps, via real exp/cos/sin (vectorised on CPU,
    about 6x faster than complex exp)."""
    re = z.real[..., None] * steps
    im = z.imag[..., None] * steps
    mag = torch.exp(re)
    return torch.complex(mag * torch.cos(im), mag * torch.sin(im))


class S4DConv(nn.Module):
    """u (B, L, H) -> K * u + D u: the S4D convolution with its kernel computed from the parameters."""

    def __init__(
        self,
        channels: int,
        state: int,
        bidirectional: bool = True,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        n = state // 2
        self.channels = channels
        self.bidirectional = bidirectional
        k = 2 if bidirectional else 1
        a_re, a_im, b = hippo_diagonal_init(n, init)
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(k, channels, n, dtype=torch.cfloat) * torch.from_numpy(b).to(torch.cfloat)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.log(-torch.tensor(a_re, dtype=torch.float32)).repeat(channels, 1))
        self.A_imag = nn.Parameter(torch.tensor(a_im, dtype=torch.float32).repeat(channels, 1))
        self.C = nn.Parameter(torch.view_as_real(c).contiguous())  # real view: (k, H, n, 2)
        self.D = nn.Parameter(torch.randn(channels))
        self._cached_kf: tuple[int, torch.Tensor] | None = None  # plain attribute, never in state_dict

    def kernel(self, length: int) -> torch.Tensor:
        """The real convolution kernel(s), shape (k, H, length); k = 2 when bidirectional."""
        dt = torch.exp(self.log_dt.float())
        a = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())  # (H, n)
        dta = a * dt[:, None]
        w = torch.view_as_complex(self.C.float()) * (torch.exp(dta) - 1.0) / a  # (k, H, n)
        m = max(1, math.isqrt(length - 1) + 1)
        g = -(-length // m)
        steps_m = torch.arange(m, device=dta.device, dtype=torch.float32)
        steps_g = torch.arange(g, device=dta.device, dtype=torch.float32) * m
        z_m = _exp_complex(dta, steps_m)  # (H, n, m)
        z_g = _exp_complex(dta, steps_g)  # (H, n, g)
        k, h, n = w.shape
        u = (w[..., None] * z_g).permute(1, 0, 3, 2).reshape(h, k * g, n)  # (H, k g, n)
        kern = torch.bmm(u, z_m).real.reshape(h, k, g * m)[..., :length]  # (H, k, L)
        return 2.0 * kern.permute(1, 0, 2)

    def full_kernel(self, length: int) -> torch.Tensor:
        """Kernel laid out for a circular convolution of size 2L, shape (H, 2L); D sits at lag 0."""
        k = self.kernel(length)
        full = F.pad(k[0], (0, length))
        if self.bidirectional:
            full = full + F.pad(k[1].flip(-1), (length, 0))
        return full + F.pad(self.D.float()[:, None], (0, 2 * length - 1))

    def kernel_fft(self, length: int) -> torch.Tensor:
        """rfft of ``full_kernel``, shape (H, L + 1) complex (cached by ``cached_kernels``)."""
        if self._cached_kf is not None and self._cached_kf[0] == length:
            return self._cached_kf[1]
        return torch.fft.rfft(self.full_kernel(length), n=2 * length)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, H) channels-last -> (B, L, H). The FFTs always run in float32; under autocast the output
        is cast to the autocast dtype in the same copy that makes it contiguous."""
        length = u.shape[1]
        dev = u.device.type
        out_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32
        with torch.autocast(device_type=dev, enabled=False):
            ut = u.float().transpose(1, 2)  # (B, H, L)
            if self._cached_kf is not None and self._cached_kf[0] == length:
                kf = self._cached_kf[1]
                y = torch.fft.irfft(torch.fft.rfft(ut, n=2 * length) * kf, n=2 * length)[..., :length]
            else:
                y = FFTConv.apply(ut, self.full_kernel(length))
            y = y.transpose(1, 2)
            # channels-last and contiguous: .to(memory_format=...) alone returns the strided view when the dtype
            # already matches (fp32), and every op after it (GELU, the next matmul) then runs strided (issue 15's
            # profile: -15 % of the 4x256 fp32 step with the copy)
            if y.dtype == out_dtype:
                return y.contiguous()
            return y.to(dtype=out_dtype, memory_format=torch.contiguous_format)


class FFTConv(torch.autograd.Function):
    """y = (k circularly convolved with zero-padded u)[:L] by FFT of size n = 2L; u (B, H, L), k (H, n).

    Saves only u and k for backward (torch's own autograd would keep rfft(u) and the padded u, 4x more):
    du = (g correlated with k)[:L], dk = sum_b g correlated with u, both by FFT."""

    generate_vmap_rule = True

    @staticmethod
    def forward(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n, length = k.shape[-1], u.shape[-1]
        if u.numel() == 0:  # an empty batch (Poisson sampling under DP-SGD); MKL's FFT rejects it
            return u.new_zeros(u.shape)
        return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k), n=n)[..., :length]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        u, k = ctx.saved_tensors
        n, length = k.shape[-1], u.shape[-1]
        if u.numel() == 0:
            return torch.zeros_like(u), torch.zeros_like(k)
        gf = torch.fft.rfft(grad, n=n)
        du = dk = None
        if ctx.needs_input_grad[0]:
            du = torch.fft.irfft(gf * torch.fft.rfft(k).conj(), n=n)[..., :length]
        if ctx.needs_input_grad[1]:
            cross = gf * torch.fft.rfft(u, n=n).conj()
            dk = torch.fft.irfft(cross.sum(dim=tuple(range(cross.dim() - 2))), n=n)
        return du, dk


def s4d_grad_sample(
    layer: S4DConv, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of an ``S4DConv`` (Opacus grad-sampler signature).

    For sample b with input u_b and output gradient g_b, dK_b[lag] = sum_t g_b[t] u_b[t - lag]
    (causal kernel, lags 0..L-1) and sum_t g_b[t] u_b[t + j] (anti-causal kernel, lag j = 1..L), both
    read off one FFT cross-correlation of size 2L; the kernel parameters' per-sample gradients are then
    the vector-Jacobian products of ``layer.kernel`` with the B cotangents dK_b (:func:`kernel_vjp`)."""
    u = activations[0].float().transpose(1, 2)  # (B, H, L)
    g = backprops.float().transpose(1, 2)
    length = u.shape[-1]
    if u.shape[0] == 0:
        return {p: p.new_zeros((0, *p.shape)) for p in layer.parameters() if p.requires_grad}
    corr = torch.fft.irfft(
        torch.fft.rfft(g, n=2 * length) * torch.fft.rfft(u, n=2 * length).conj(), n=2 * length
    )  # (B, H, 2L)
    dk = corr[..., :length].unsqueeze(1)
    if layer.bidirectional:
        dk = torch.cat([dk, corr[..., length:].flip(-1).unsqueeze(1)], dim=1)  # (B, 2, H, L)
    params = [layer.log_dt, layer.log_A_real, layer.A_imag, layer.C]
    grads = kernel_vjp(layer, dk)
    out = {p: gs for p, gs in zip(params, grads, strict=True) if p.requires_grad}
    if layer.D.requires_grad:
        out[layer.D] = (g * u).sum(-1)
    return out


_VJP_CHUNK = 256  # lags per chunk of kernel_vjp's Vandermonde basis


@torch.no_grad()
def kernel_vjp(layer: S4DConv, dk: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-sample vector-Jacobian products of ``layer.kernel``: for B cotangents ``dk`` (B, k, H, L) of the
    kernels, the gradients (B, *p.shape) of sum(dk_b * K) w.r.t. log_dt, log_A_real, A_imag and C, in closed form.

    With z = exp(dt A) and w = C (z - 1) / A, K[k, h, l] = 2 Re sum_n w z^l, so everything follows from two
    Vandermonde sums per sample, S0 = sum_l dk z^l and S1 = sum_l dk l z^l (batched real matmuls against the
    Vandermonde basis, built a chunk of lags at a time so it never exceeds (H, 4 N/2, 256) floats):
    dC = 2 conj(S0 (z - 1)/A); with P = sum_k (dw/dA S0 + w dt S1): dA_real = 2 Re P, dA_imag = -2 Im P;
    d dt = 2 Re sum_(k,n) (C z S0 + w A S1). This replaces a batched autograd pass through the kernel (vmap
    over B cotangents), which cost more than the rest of the DP-SGD step's per-sample gradients together."""
    with torch.autocast(device_type=dk.device.type, enabled=False):  # float32 throughout, whoever calls it
        return _kernel_vjp(layer, dk)


def _kernel_vjp(layer: S4DConv, dk: torch.Tensor) -> tuple[torch.Tensor, ...]:
    b, kk, h, length = dk.shape
    dt = torch.exp(layer.log_dt.float())  # (H,)
    a_real = -torch.exp(layer.log_A_real.float())
    a = torch.complex(a_real, layer.A_imag.float())  # (H, n)
    dta = a * dt[:, None]
    z1 = torch.exp(dta)
    q = (z1 - 1.0) / a  # (H, n)
    c = torch.view_as_complex(layer.C.float())  # (k, H, n)
    w = c * q
    dw_da = c * (dt[:, None] * z1 / a - q / a)
    n = a.shape[-1]
    x = dk.float().permute(2, 0, 1, 3).reshape(h, b * kk, length)  # (H, B k, L)
    y = x.new_zeros(h, b * kk, 4 * n)
    basis = x.new_empty(h, 4 * n, min(length, _VJP_CHUNK))  # [Re z^l, Im z^l, Re l z^l, Im l z^l], by chunk of lags
    for l0 in range(0, length, _VJP_CHUNK):
        steps = torch.arange(l0, min(length, l0 + _VJP_CHUNK), device=dk.device, dtype=torch.float32)
        part = basis[..., :steps.numel()]
        mag = torch.exp(dta.real[..., None] * steps)  # (H, n, chunk)
        ang = dta.imag[..., None] * steps
        torch.mul(mag, torch.cos(ang), out=part[:, :n])
        torch.mul(mag, torch.sin(ang), out=part[:, n:2 * n])
        torch.mul(part[:, :2 * n], steps, out=part[:, 2 * n:])
        y.baddbmm_(x[..., l0:l0 + steps.numel()], part.transpose(1, 2))
    y = y.reshape(h, b, kk, 4, n)
    s0 = torch.complex(y[..., 0, :], y[..., 1, :])  # sum_l dk z^l, (H, B, k, n)
    s1 = torch.complex(y[..., 2, :], y[..., 3, :])  # sum_l dk l z^l
    w_, dw_da_, c_ = (t.transpose(0, 1)[:, None] for t in (w, dw_da, c))  # (H, 1, k, n)
    p = (dw_da_ * s0 + w_ * dt[:, None, None, None] * s1).sum(2)  # (H, B, n)
    d_a_real = 2.0 * p.real
    d_a_imag = -2.0 * p.imag
    d_dt = 2.0 * (c_ * z1[:, None, None] * s0 + w_ * a[:, None, None] * s1).real.sum((2, 3))  # (H, B)
    d_log_dt = (d_dt * dt[:, None]).transpose(0, 1)
    d_log_a_real = (d_a_real * a_real[:, None]).transpose(0, 1)
    d_c = torch.view_as_real(2.0 * (q[:, None, None] * s0).conj()).permute(1, 2, 0, 3, 4)  # (B, k, H, n, 2)
    return d_log_dt.contiguous(), d_log_a_real.contiguous(), d_a_imag.transpose(0, 1).contiguous(), d_c.contiguous()


class S4Layer(nn.Module):
    """SSSD-ECG's S4 layer on channels-last (B, L, H): S4D conv -> GELU -> linear to 2H -> GLU, + residual,
    LayerNorm over channels."""

    def __init__(
        self,
        channels: int,
        state: int,
        bidirectional: bool = True,
        layernorm: bool = True,
        dropout: float = 0.0,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        self.conv = S4DConv(channels, state, bidirectional, init, dt_min, dt_max)
        self.output_linear = nn.Linear(channels, 2 * channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(channels) if layernorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(F.gelu(self.conv(x)))
        y = self.dropout(F.glu(self.output_linear(y), dim=-1))
        return self.norm(y + x)


@contextmanager
def cached_kernels(model: nn.Module, length: int) -> Iterator[None]:
    """Precompute every S4D layer's FFT'd kernel for sequences of ``length`` (inference only).

    Kernels depend only on the weights, so during sampling they are computed once instead of at every
    denoiser call. The cache is a plain attribute (never saved) and is dropped on exit."""
    convs = [m for m in model.modules() if isinstance(m, S4DConv)]
    try:
        with torch.no_grad():
            for conv in convs:
                conv._cached_kf = (length, torch.fft.rfft(conv.full_kernel(length), n=2 * length))
        yield
    finally:
        for conv in convs:
            conv._cached_kf = None
