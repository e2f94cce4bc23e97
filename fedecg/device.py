"""Device and precision choice, made once and passed down (no `.cuda()` calls elsewhere)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def choose_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; or an explicit ``cpu``/``cuda``/``cuda:1``."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(preference)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from fedecg.errors import FedECGError

        raise FedECGError(f"device {preference!r} requested but CUDA is not available on this machine")
    return dev


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None):
    """Mixed precision: fp16 on CUDA, bf16 on CPU (fast where the CPU has AVX-512 BF16). Disabled → no-op."""
    if not enabled:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None = leave as is)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
