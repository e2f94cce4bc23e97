"""The one checkpoint format (``CHECKPOINT_FORMAT``: atomic save, validated load) and the one model builder
(``build_model``: a denoiser from a model config and, optionally, its weights; ``model_from_checkpoint`` picks
the weights of a loaded checkpoint for it).

Payload (docs/INTERFACES.md): ``{"format": "fedecg-checkpoint/1", "round", "model_config", "state_dict",
"ema_state_dict" | None, "label_codes", "demographics", "run_config", "privacy_ledger", "rng_state",
"manifest_path", "base"}`` (``base``: ``{"init", "sha256"}`` of the pretrained base a federation started
from, see sssd.pretrained). Files are read with ``torch.load(weights_only=True)`` (no arbitrary pickles), so
payload values must be tensors, numbers, strings, bools, None and lists/dicts/tuples of these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedecg.errors import FedECGError
from fedecg.io import atomic_save
from sssd.config import ModelConfig
from sssd.model import SSSDDenoiser

CHECKPOINT_FORMAT = "fedecg-checkpoint/1"
REQUIRED_KEYS = ("format", "model_config", "state_dict")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (``format`` is filled in when missing; required keys are checked)."""
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    _validate(payload, Path(path))
    atomic_save(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; FedECGError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FedECGError(f"checkpoint {path}: file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise FedECGError(
            f"checkpoint {path}: cannot be read ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})"
        ) from exc
    _validate(payload, path)
    return payload


def _validate(payload: Any, path: Path) -> None:
    if not isinstance(payload, dict):
        raise FedECGError(f"checkpoint {path}: expected a dict payload, got {type(payload).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise FedECGError(f"checkpoint {path}: missing keys {missing}")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise FedECGError(f"checkpoint {path}: format {payload['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    if not isinstance(payload["model_config"], dict):
        raise FedECGError(f"checkpoint {path}: model_config must be a dict")
    for key in ("state_dict", "ema_state_dict"):
        sd = payload.get(key)
        if key == "ema_state_dict" and sd is None:
            continue
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise FedECGError(f"checkpoint {path}: {key} must be a dict of tensors")


def preferred_state(ckpt: dict[str, Any], ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The weights to use from a loaded checkpoint and which they are: ``(ema_state_dict, "ema")`` when
    present and ``ema`` is true, else ``(state_dict, "state_dict")``."""
    if ema and ckpt.get("ema_state_dict") is not None:
        return ckpt["ema_state_dict"], "ema"
    return ckpt["state_dict"], "state_dict"


def build_model(
    config: ModelConfig | Mapping[str, Any],
    state: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    device: str | torch.device = "cpu",
) -> SSSDDenoiser:
    """The one model builder: a denoiser of ``config`` (a ModelConfig or its dict) on ``device``, in training
    mode, with ``state`` (tensors or numpy arrays) loaded strictly when given, else its seeded initialisation
    (``model.init_seed``; the global RNG is untouched). Weights that do not fit the config raise FedECGError."""
    cfg = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(dict(config))
    model = SSSDDenoiser(cfg)
    if state is not None:
        sd = {k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for k, v in state.items()}
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise FedECGError(f"weights do not match the model config: {str(exc).splitlines()[0]}") from exc
    return model.to(device)


def model_from_checkpoint(
    ckpt: dict[str, Any], device: str | torch.device = "cpu", ema: bool = True
) -> tuple[SSSDDenoiser, ModelConfig]:
    """(model in eval mode on ``device``, config) from a loaded checkpoint (:func:`build_model` of its
    ``model_config``); EMA weights when present and ``ema`` is true. Mismatched weights raise FedECGError."""
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    sd, _ = preferred_state(ckpt, ema)
    try:
        model = build_model(cfg, sd, device)
    except FedECGError as exc:
        raise FedECGError(f"checkpoint {exc}") from exc
    return model.eval(), cfg
