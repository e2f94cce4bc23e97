"""Opacus glue: register the exact per-sample gradient sampler of the S4D convolution.

``sssd.model.SSSDDenoiser`` calls ``register_grad_samplers()`` itself when Opacus is already imported;
call it explicitly (or import this module) before ``PrivacyEngine.make_private`` otherwise. Without it
Opacus falls back to functorch for ``S4DConv`` (correct, slower, more memory)."""

from __future__ import annotations

import torch

from sssd.s4 import S4DConv, s4d_grad_sample


def register_grad_samplers() -> None:
    """Idempotently register ``sssd.s4.s4d_grad_sample`` for ``S4DConv`` with Opacus."""
    from opacus.grad_sample import GradSampleModule  # heavy: opacus (~2 s); sssd.model imports this module, not opacus

    GradSampleModule.GRAD_SAMPLERS.setdefault(S4DConv, s4d_grad_sample)


def repeat_draws(k: int, *tensors):
    """Noise multiplicity (DPDM): each example repeated ``k`` times in a row, (B, ...) → (B k, ...), so that the
    loss draws k (timestep, noise, condition-dropout) triples per example."""
    if k == 1:
        return tensors
    return tuple(t.repeat_interleave(k, dim=0) for t in tensors)


def average_draws(module, batch: int, k: int) -> None:
    """After ``backward`` of the mean loss over B k rows (:func:`repeat_draws`): replace every per-row gradient
    Opacus computed (``p.grad_sample``, B k rows) by the mean over each example's k rows, in place.

    With Opacus' ``loss_reduction="mean"`` row i's grad_sample is ∇ℓ_i (the 1/(B k) of the mean is undone by the
    row count), so the result is ∇ (1/k) Σ_j ℓ_(b, j): the per-example gradient of the k-averaged loss, which the
    DP optimizer then clips per *example* (accounting unchanged: one sampled example, one clipped gradient).

    Every per-sample gradient is also brought to float32, for any k: under bf16 autocast Opacus computes the
    gradients of autocast layers in bfloat16, and its clipping would then take their norms and scale them in
    bfloat16, so a clipped gradient could exceed ``max_grad_norm`` by bf16 rounding (~2^-8): more sensitivity
    than the accountant was told. In float32 the clipped norm is at most C (1 + ~1e-7)."""
    for p in module.parameters():
        gs = getattr(p, "grad_sample", None)
        if gs is None or not p.requires_grad:
            continue
        if hasattr(gs, "dtype") and gs.dtype != torch.float32:
            p.grad_sample = gs = gs.float()
        if k == 1:
            continue
        if not hasattr(gs, "shape") or gs.shape[0] != batch * k:
            raise RuntimeError(f"noise multiplicity: a per-sample gradient has {getattr(gs, 'shape', '?')} rows, "
                               f"expected {batch} x {k}")
        p.grad_sample = gs.reshape(batch, k, *gs.shape[1:]).mean(dim=1)
