"""Pretrained bases a federation can start from (scenario key ``init``), torch only (no Flower).

``init`` is ``none`` (fresh, seeded initialisation), ``builtin:<name>`` (``sssd/builtin/<name>.pt``, shipped
as package data) or the path of a checkpoint file. A base is an ordinary fedecg checkpoint
(``sssd.checkpoint.load_checkpoint``: format ``fedecg-checkpoint/1``, ``model_config``, ``state_dict``,
optional ``ema_state_dict``); its weights are the EMA weights when the checkpoint has them, else
``state_dict``. An optional model card ``<stem>.card.json`` next to the weights says where they come from
(data, preset, rounds, licence...); it is copied into the run directory's ``base.json``.

Only the architecture has to match the scenario's model (``ARCHITECTURE_FIELDS``: shapes of the weights,
the signal, the noise schedule); loss and training settings (``mel_lambda``, dropout probabilities, ...)
may differ, the scenario's own apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedecg.errors import FedECGError
from fedecg.io import read_json_object
from sssd.config import PRESET_NAMES, ModelConfig, model_preset

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_PREFIX = "builtin:"

# ModelConfig fields that do not change what the weights mean: loss, regularisation, initialisation, memory.
NON_ARCHITECTURE_FIELDS = frozenset({
    "label_drop_prob", "demo_drop_prob", "demo_field_drop_prob", "s4_dropout",
    "mel_lambda", "mel_n_fft", "mel_hop", "mel_n_mels", "mel_fmin", "mel_fmax", "mel_log_eps",
    "mel_timestep_weight", "checkpoint_blocks", "init_seed", "cond_max_norm", "s4_init", "s4_dt_min", "s4_dt_max",
})


def _architecture_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in NON_ARCHITECTURE_FIELDS)


ARCHITECTURE_FIELDS = _architecture_fields()


@dataclass(frozen=True)
class Base:
    """A loaded base: the file, its SHA-256, its model config, its weights (numpy) and its model card."""

    path: Path
    sha256: str
    model_config: dict
    state: dict[str, np.ndarray]
    card: dict
    weights: str = "state_dict"  # which state dict of the checkpoint ``state`` is: "ema" or "state_dict"

    def record(self, spec: str) -> dict:
        """What the run directory stores about it (``base.json``)."""
        return {"init": spec, "path": str(self.path), "sha256": self.sha256, "weights": self.weights,
                "card": self.card}


def builtin_names() -> list[str]:
    """Names of the shipped bases (the ``*.pt`` files in BUILTIN_DIR), sorted."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.pt") if p.is_file())


def resolve_init(spec: str) -> Path | None:
    """The checkpoint file ``init`` names (None for ``none``). FedECGError for an unknown builtin name
    (listing the available ones), a missing file (naming the path) or an empty spec."""
    spec = str(spec).strip()
    if spec == "none":
        return None
    if not spec:
        raise FedECGError("init: empty (use none, builtin:<name> or the path of a checkpoint file)")
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):].strip()
        names = builtin_names()
        if name not in names:
            available = ", ".join(f"builtin:{n}" for n in names) if names else f"none (no *.pt in {BUILTIN_DIR})"
            raise FedECGError(f"init: unknown built-in base {name!r}; available: {available}")
        return BUILTIN_DIR / f"{name}.pt"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FedECGError(f"init: base checkpoint {path} not found (init is none, builtin:<name> or a file)")
    return path


def card_path(weights: Path) -> Path:
    """``<stem>.card.json`` next to the weights."""
    return weights.with_name(f"{weights.stem}.card.json")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_base(spec: str, model_config: Any = None) -> Base:
    """Load the base ``spec`` names. With ``model_config`` (a ModelConfig or its dict: the scenario's
    resolved model), a base whose architecture differs raises FedECGError naming both presets and the
    differing fields; so do weights that do not fit the base's own model_config."""
    path = resolve_init(spec)
    if path is None:
        raise FedECGError("init is none: there is no base to load")
    from sssd.checkpoint import load_checkpoint, preferred_state  # heavy: torch; resolve_init (config) stays torch-free

    sha = file_sha256(path)  # of the bytes read next (a file replaced in between would show in base.json)
    ckpt = load_checkpoint(path)
    card = _read_card(path)
    base_cfg = dict(ckpt["model_config"])
    if model_config is not None:
        check_compatible(base_cfg, model_config, f"base {spec} ({path})", card)
    sd, which = preferred_state(ckpt, ema=True)
    state = _check_weights({k: v.detach().cpu().numpy().copy() for k, v in sd.items()}, base_cfg, path)
    return Base(path=path, sha256=sha, model_config=base_cfg, state=state, card=card, weights=which)


def check_compatible(base_cfg: dict, model_config: Any, what: str = "base", card: dict | None = None) -> None:
    """FedECGError when the architecture fields of ``base_cfg`` and ``model_config`` differ."""
    want = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
    try:
        have = ModelConfig.from_dict(base_cfg).to_dict()
    except FedECGError as exc:
        raise FedECGError(f"{what}: its model_config is not valid here ({exc})") from exc
    diff = [k for k in ARCHITECTURE_FIELDS if have.get(k) != want.get(k)]
    if diff:
        kind = repr(preset_of(have))
        card = card or {}
        card_says = card.get("preset") or (card.get("model") or {}).get("preset")  # flat or {"model": {"preset"}}
        if card_says and card_says != preset_of(have):
            kind += f" (its card says {card_says!r})"
        fields = ", ".join(f"{k} {have.get(k)!r} vs {want.get(k)!r}" for k in diff)
        raise FedECGError(f"{what} is a {kind} model, the scenario's model is {preset_of(want)!r}: "
                          f"architecture differs (base vs scenario: {fields}); choose a base of the same "
                          "preset, set model= to the base's preset, or init=none")


def preset_of(cfg: dict) -> str:
    """The name of the preset whose architecture ``cfg`` has, else ``custom``."""
    for name in PRESET_NAMES:
        ref = model_preset(name).to_dict()
        if all(ref.get(k) == cfg.get(k) for k in ARCHITECTURE_FIELDS):
            return name
    return "custom"


def _read_card(path: Path) -> dict:
    return read_json_object(card_path(path), "model card") or {}


def _check_weights(state: dict[str, np.ndarray], base_cfg: dict, path: Path) -> dict[str, np.ndarray]:
    """The weights must have exactly the keys and shapes of a denoiser built from the base's config; they are
    returned in the model's key order and dtypes (float32), as the federation sends and validates them."""
    from sssd.model import SSSDDenoiser  # heavy: torch; resolve_init (config) stays torch-free

    model = SSSDDenoiser(ModelConfig.from_dict(base_cfg))  # seeds its own forked RNG: global RNG untouched
    ref_sd = model.state_dict()
    ref = {k: tuple(v.shape) for k, v in ref_sd.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != ref:
        missing = sorted(set(ref) - set(got))[:3]
        extra = sorted(set(got) - set(ref))[:3]
        shapes = [k for k in ref if k in got and got[k] != ref[k]][:3]
        raise FedECGError(f"base {path}: weights do not fit its model_config (missing {missing}, unexpected "
                          f"{extra}, wrong shape {shapes})")
    bad = [k for k, v in state.items() if ref_sd[k].is_floating_point()
           and (not np.issubdtype(v.dtype, np.floating) or not np.isfinite(v).all())]
    if bad:
        raise FedECGError(f"base {path}: non-float or non-finite weights in {bad[:3]}")
    return {k: np.ascontiguousarray(state[k], dtype=ref_sd[k].numpy().dtype) for k in ref_sd}
