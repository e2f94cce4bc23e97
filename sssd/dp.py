"""Opacus glue: register the exact per-sample gradient sampler of the S4D convolution.

``sssd.model.SSSDDenoiser`` calls ``register_grad_samplers()`` itself when Opacus is already imported;
call it explicitly (or import this module) before ``PrivacyEngine.make_private`` otherwise. Without it
Opacus falls back to functorch for ``S4DConv`` (correct, slower, more memory)."""

from __future__ import annotations


def register_grad_samplers() -> None:
    """Idempotently register ``sssd.s4.s4d_grad_sample`` for ``S4DConv`` with Opacus."""
    from opacus.grad_sample import GradSampleModule

    from sssd.s4 import S4DConv, s4d_grad_sample

    GradSampleModule.GRAD_SAMPLERS.setdefault(S4DConv, s4d_grad_sample)
