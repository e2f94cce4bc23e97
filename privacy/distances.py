"""Distances between ECGs and exact nearest neighbours by chunked matrix products.

Signals are arrays ``(N, L, T)`` in mV (L = 8 model leads or 12 leads, T = 1000 samples at 100 Hz).

**Per-lead normalised Euclidean distance** (the default, on time-aligned 10 s records)::

    z(x)_{l,t} = (x_{l,t} − mean_t x_{l,·}) / s_l
    d(x, y)    = sqrt( 1/(L·T) · Σ_l Σ_t (z(x)_{l,t} − z(y)_{l,t})² )

Each lead's own baseline (per-record mean) is removed, and every lead is divided by a per-lead scale ``s_l``
(the standard deviation of lead l over the reference/training set, :func:`lead_scales`), so low-amplitude
leads weigh as much as the large precordial leads and d is an RMS difference in units of typical lead
amplitude (d = 0: identical up to baseline; d ≈ √2 for two unrelated standardised records). Amplitude
differences are deliberately kept (no per-record gain normalisation): a copy with the patient's exact
amplitudes is what a privacy audit must find.

**Shift-tolerant variant**: the minimum over lags |τ| ≤ W samples of the same RMS difference computed over the
overlap of z(x) and z(y) shifted by τ (W = 10 samples = 100 ms by default). For z-normalised signals this is
the max cross-correlation within the lag window, with the overlap's energies kept (so amplitude still
counts). It tolerates a copy re-cropped by a few samples. :func:`shift_tolerant_distance` computes it for
pairs from one FFT cross-correlation; :func:`nearest_neighbours_shift_tolerant` finds exact neighbours with
(2W+1) Euclidean searches, one per lag (21× the default cost for W = 10). Default is OFF: PTB-XL records
and the generator's outputs are both aligned 10 s windows, and a plain distance is easier to recompute.

**Exact nearest neighbours**: ``‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b`` evaluated in float32 blocks of
``query_chunk × ref_chunk`` with a running top-k; the k' = k + 8 best candidates per query are then
re-scored exactly in float64 so rounding cannot hide a near-copy (d ≈ 0). Works on any torch device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedecg.errors import FedECGError


def lead_scales(reference: np.ndarray) -> np.ndarray:
    """Per-lead scale s_l: std over records and samples of the baseline-removed reference, shape (L,)."""
    x = _check(reference, "reference")
    centred = x - x.mean(axis=2, keepdims=True)
    s = centred.std(axis=(0, 2)).astype(np.float64)
    return np.where(s > 1e-8, s, 1.0)


def normalise(x: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """z(x): per-record, per-lead baseline removed, divided by s_l and by √(L·T) (so ‖z(x) − z(y)‖ = d)."""
    x = _check(x, "signals")
    if scales.shape != (x.shape[1],):
        raise FedECGError(f"lead scales have shape {scales.shape}, signals have {x.shape[1]} leads")
    factor = (1.0 / (scales * np.sqrt(x.shape[1] * x.shape[2]))).astype(np.float32)
    return ((x - x.mean(axis=2, keepdims=True)) * factor[None, :, None]).astype(np.float32, copy=False)


def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] == 0:
        raise FedECGError(f"{name}: expected a non-empty (N, leads, samples) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise FedECGError(f"{name}: contains NaN or infinite values")
    return x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Neighbours:
    """``distance[i, j]`` = d(query i, its (j+1)-th nearest reference), ``index`` = that reference's row."""

    distance: np.ndarray  # (N, k) float64, ascending per row
    index: np.ndarray  # (N, k) int64


def nearest_neighbours(
    queries: np.ndarray,
    reference: np.ndarray,
    k: int = 2,
    scales: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    query_chunk: int = 1024,
    ref_chunk: int = 8192,
    normalised: bool = False,
) -> Neighbours:
    """Exact k nearest references of each query under the per-lead normalised Euclidean distance.

    ``scales`` default to :func:`lead_scales` of ``reference``. With ``normalised=True`` the inputs are
    already flat z-vectors ``(N, D)`` (see :func:`normalise`) and are used as they are."""
    if normalised:
        zq, zr = np.asarray(queries, np.float32), np.asarray(reference, np.float32)
    else:
        scales = lead_scales(reference) if scales is None else scales
        zq = normalise(queries, scales).reshape(len(queries), -1)
        zr = normalise(reference, scales).reshape(len(reference), -1)
    if zq.shape[1] != zr.shape[1]:
        raise FedECGError(f"queries have {zq.shape[1]} values per record, reference has {zr.shape[1]}")
    k = min(k, len(zr))
    kc = min(k + 8, len(zr))  # candidates re-scored exactly
    dev = torch.device(device)
    ref = torch.from_numpy(zr)
    ref_sq = (ref.double() ** 2).sum(1).float()
    out_d = np.empty((len(zq), k))
    out_i = np.empty((len(zq), k), dtype=np.int64)
    for q0 in range(0, len(zq), query_chunk):
        q = torch.from_numpy(zq[q0 : q0 + query_chunk]).to(dev)
        q_sq = (q.double() ** 2).sum(1).float()
        best_d = torch.full((len(q), 0), float("inf"), device=dev)
        best_i = torch.empty((len(q), 0), dtype=torch.long, device=dev)
        for r0 in range(0, len(zr), ref_chunk):
            r = ref[r0 : r0 + ref_chunk].to(dev)
            d2 = q_sq[:, None] + ref_sq[r0 : r0 + ref_chunk].to(dev)[None, :] - 2.0 * (q @ r.T)
            kk = min(kc, d2.shape[1])
            dv, di = torch.topk(d2, kk, dim=1, largest=False)
            best_d = torch.cat([best_d, dv], 1)
            best_i = torch.cat([best_i, di + r0], 1)
            if best_d.shape[1] > kc:
                best_d, pos = torch.topk(best_d, kc, dim=1, largest=False)
                best_i = torch.gather(best_i, 1, pos)
        cand = best_i.cpu().numpy()
        qd = zq[q0 : q0 + query_chunk].astype(np.float64)
        exact = np.stack(
            [np.sqrt(((qd - zr[cand[:, j]].astype(np.float64)) ** 2).sum(-1)) for j in range(cand.shape[1])],
            1,
        )
        order = np.argsort(exact, axis=1, kind="stable")[:, :k]
        out_d[q0 : q0 + len(q)] = np.take_along_axis(exact, order, 1)
        out_i[q0 : q0 + len(q)] = np.take_along_axis(cand, order, 1)
    return Neighbours(distance=out_d, index=out_i)


def shift_tolerant_distance(x: np.ndarray, y: np.ndarray, scales: np.ndarray, max_lag: int = 10) -> np.ndarray:
    """Pairwise (row i of x vs row i of y) shift-tolerant distance, shape (P,).

    d_W(x, y) = min_{|τ| ≤ W} sqrt( Σ_l Σ_{t ∈ overlap(τ)} (z_{l,t} − z'_{l,t+τ})² / (L·|overlap(τ)|) ),
    with z, z' the per-lead normalised signals; τ = 0 gives :func:`normalise`'s d. The cross term for all
    lags comes from one zero-padded FFT per pair; the overlap energies from cumulative sums."""
    zx = normalise(x, scales).astype(np.float64)
    zy = normalise(y, scales).astype(np.float64)
    if zx.shape != zy.shape:
        raise FedECGError(f"shift-tolerant distance needs equal shapes, got {zx.shape} and {zy.shape}")
    n_leads, t = zx.shape[1], zx.shape[2]
    scale = n_leads * t  # undo normalise()'s 1/sqrt(L·T) so energies are per-sample
    zx, zy = zx * np.sqrt(scale), zy * np.sqrt(scale)
    w = int(min(max_lag, t - 1))
    nfft = 1 << int(np.ceil(np.log2(2 * t)))
    fx = np.fft.rfft(zx, nfft, axis=2)
    fy = np.fft.rfft(zy, nfft, axis=2)
    cc = np.fft.irfft(fx.conj() * fy, nfft, axis=2).sum(1)  # cc[τ] = Σ_l Σ_t z_t z'_{t+τ} (τ mod nfft)
    ex = np.concatenate([np.zeros((len(zx), 1)), np.cumsum((zx**2).sum(1), axis=1)], 1)  # prefix energies
    ey = np.concatenate([np.zeros((len(zy), 1)), np.cumsum((zy**2).sum(1), axis=1)], 1)
    best = np.full(len(zx), np.inf)
    for tau in range(-w, w + 1):
        # overlap: t in [max(0,-τ), min(T, T-τ)) for x, t+τ for y
        a0, a1 = max(0, -tau), min(t, t - tau)
        ssx = ex[:, a1] - ex[:, a0]
        ssy = ey[:, a1 + tau] - ey[:, a0 + tau]
        cross = cc[:, tau % nfft]
        d2 = np.maximum(ssx + ssy - 2 * cross, 0.0) / (n_leads * (a1 - a0))
        best = np.minimum(best, d2)
    return np.sqrt(best)


def nearest_neighbours_shift_tolerant(
    queries: np.ndarray,
    reference: np.ndarray,
    k: int = 2,
    scales: np.ndarray | None = None,
    max_lag: int = 10,
    device: torch.device | str = "cpu",
) -> Neighbours:
    """Exact k nearest references under the shift-tolerant distance d_W (:func:`shift_tolerant_distance`).

    For every lag τ the overlap crops of queries and references are compared with the chunked Euclidean
    search (crops scaled by √(T/|overlap|) so distances stay per-sample RMS); each reference keeps its best
    lag. Exact because a reference among the k nearest under d_W is among the k nearest at its best lag.
    Costs (2W+1) Euclidean searches."""
    scales = lead_scales(reference) if scales is None else scales
    zq, zr = normalise(queries, scales), normalise(reference, scales)
    t = zq.shape[2]
    w = int(min(max_lag, t - 1))
    k = min(k, len(zr))
    cand_d, cand_i = [], []
    for tau in range(-w, w + 1):
        a0, a1 = max(0, -tau), min(t, t - tau)
        f = np.float32(np.sqrt(t / (a1 - a0)))
        q = np.ascontiguousarray(zq[:, :, a0:a1] * f).reshape(len(zq), -1)
        r = np.ascontiguousarray(zr[:, :, a0 + tau : a1 + tau] * f).reshape(len(zr), -1)
        nn = nearest_neighbours(q, r, k=k, device=device, normalised=True)
        cand_d.append(nn.distance)
        cand_i.append(nn.index)
    d, idx = np.concatenate(cand_d, 1), np.concatenate(cand_i, 1)
    out_d = np.empty((len(zq), k))
    out_i = np.empty((len(zq), k), dtype=np.int64)
    for row in range(len(zq)):
        best: dict[int, float] = {}
        for dist, ref in zip(d[row], idx[row], strict=True):
            if dist < best.get(int(ref), np.inf):
                best[int(ref)] = float(dist)
        top = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))[:k]
        out_i[row] = [r for r, _ in top]
        out_d[row] = [v for _, v in top]
    return Neighbours(out_d, out_i)
