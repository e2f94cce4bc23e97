"""Parameter-efficient fine-tuning of the denoiser: which parameters a site trains, and what its reply carries.

``train.trainable`` (a string, parsed by :func:`parse_trainable`):

* ``all``           every parameter (the reply carries the whole model, as before);
* ``conditioning``  the label/demographic embedding (``cond_embed.*``) and every block's ``fc_cond`` (the paths
                    through which the 71 statements and the demographics enter); the reply carries only those;
* ``last-blocks:N`` the last N residual blocks and the output head (``final_conv``, ``zero_conv``);
* ``lora:R``        LoRA adapters (Hu et al. 2021) of rank R on every linear layer (our 1x1 convolutions and the
                    k=3 convolution are ``nn.Linear`` in channels-last layout, see ``sssd.model``):
                    y = W x + b + (alpha / R) B A x with A (R x in) drawn at random and B (out x R) = 0 at the start
                    of every round, W and b frozen; alpha = R (scale 1). The reply carries A and B of every adapted
                    layer (keys ``<layer>.lora_A`` / ``<layer>.lora_B``), (in + out) R numbers instead of in x out.

The server turns a reply into a full model before any check that compares models or aggregation
(:func:`expand_reply`): the frozen parameters are the global model's, and for LoRA each adapted layer becomes
W + (alpha / R) B A, the site's own merged layer. Aggregating these merged models is exact (the average of the
sites' low-rank updates, not a product of averaged factors), every strategy and robust rule applies unchanged,
and checkpoints hold the merged model. :func:`reply_reference` gives the names, shapes and dtypes a reply must have
(anything else, a foreign key included, is rejected).

Under DP-SGD only the trained parameters receive (exact, per-sample) gradients: Opacus' Linear grad sampler covers
the adapters (two ``nn.Linear`` without bias), frozen layers are skipped, so the noise is spread over far fewer
coordinates (DP-LoRA, DP-LDM).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedecg.specs import Trainable, parse_trainable  # noqa: F401 - the spec's grammar (torch-free)
from sssd.model import unwrap

LORA_A, LORA_B = "lora_A", "lora_B"
HEAD = ("final_conv.", "zero_conv.")


def shapes_of(state) -> dict[str, tuple[tuple[int, ...], str]]:
    """``name → (shape, dtype name)`` of a state dict of numpy arrays or of Flower ``Array`` objects."""
    out = {}
    for k, v in state.items():
        dtype = v.dtype if isinstance(v.dtype, str) else np.dtype(v.dtype).name
        out[k] = (tuple(int(d) for d in v.shape), dtype)
    return out


def linear_layers(shapes: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, tuple[int, int]]:
    """The linear layers of a denoiser (:func:`shapes_of` its state dict), ``prefix → (out, in)``: every
    ``X.weight`` that is 2-D with a 1-D ``X.bias`` of its output size (S4D and LayerNorm parameters never match)."""
    out = {}
    for key, (shape, _) in shapes.items():
        if not key.endswith(".weight") or len(shape) != 2:
            continue
        prefix = key[: -len(".weight")]
        bias = shapes.get(prefix + ".bias")
        if bias is not None and len(bias[0]) == 1 and bias[0][0] == shape[0]:
            out[prefix] = (shape[0], shape[1])
    return out


def _num_blocks(state) -> int:
    idx = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    return max(idx) + 1 if idx else 0


def trained_keys(state: dict, spec: Trainable) -> list[str]:
    """The names of the plain model's parameters that ``spec`` trains (``lora``: none of them; its adapters are
    new parameters, see :func:`reply_reference`)."""
    keys = list(state)
    if spec.kind == "all":
        return keys
    if spec.kind == "lora":
        return []
    if spec.kind == "conditioning":
        chosen = [k for k in keys if k.startswith("cond_embed.") or re.match(r"^blocks\.\d+\.fc_cond\.", k)]
    else:
        nb = _num_blocks(state)
        if spec.n > nb:
            raise ValueError(f"train.trainable last-blocks:{spec.n} but the model has {nb} blocks")
        first = nb - spec.n
        chosen = [k for k in keys if k.startswith(HEAD)
                  or (k.startswith("blocks.") and int(k.split(".")[1]) >= first)]
    return chosen


def reply_reference(shapes: dict[str, tuple[tuple[int, ...], str]], spec: Trainable
                    ) -> dict[str, tuple[tuple[int, ...], str]]:
    """What a train reply must carry under ``spec`` (``shapes``: :func:`shapes_of` the global model):
    ``name → (shape, dtype name)``, nothing more, nothing less."""
    if spec.kind != "lora":
        return {k: shapes[k] for k in trained_keys(shapes, spec)}
    ref = {}
    for prefix, (n_out, n_in) in linear_layers(shapes).items():
        dtype = shapes[prefix + ".weight"][1]
        ref[f"{prefix}.{LORA_A}"] = ((spec.n, n_in), dtype)
        ref[f"{prefix}.{LORA_B}"] = ((n_out, spec.n), dtype)
    return ref


def lora_scale(spec: Trainable) -> float:
    return 1.0  # alpha = R


def expand_reply(arrays: dict[str, np.ndarray], global_state: dict[str, np.ndarray], spec: Trainable
                 ) -> dict[str, np.ndarray]:
    """The full model a (validated) reply stands for: the global model with the reply's trained parameters,
    or, for LoRA, with each adapted layer merged: W + scale B A."""
    if spec.kind == "all":
        return arrays
    full = dict(global_state)
    if spec.kind != "lora":
        full.update(arrays)
        return full
    scale = lora_scale(spec)
    for prefix in linear_layers(shapes_of(global_state)):
        a = arrays[f"{prefix}.{LORA_A}"].astype(np.float64)
        b = arrays[f"{prefix}.{LORA_B}"].astype(np.float64)
        w = global_state[prefix + ".weight"]
        full[prefix + ".weight"] = (w.astype(np.float64) + scale * (b @ a)).astype(w.dtype)
    return full


class LoRALinear(nn.Linear):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: y = W x + b + scale B(A(x)). Keeps the base
    layer's parameter names (``weight``, ``bias``); the adapters are the children ``lora_A``, ``lora_B``."""

    def __init__(self, base: nn.Linear, rank: int, scale: float, generator: torch.Generator) -> None:
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(base.weight)
            if base.bias is not None:
                self.bias.copy_(base.bias)
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scale = scale
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        with torch.no_grad():  # as in LoRA: A ~ Kaiming-uniform, B = 0, so the layer starts as the base layer
            bound = 1.0 / math.sqrt(base.in_features)
            a = torch.rand(self.lora_A.weight.shape, generator=generator) * 2 * bound - bound
            self.lora_A.weight.copy_(a.to(self.lora_A.weight.device))
            self.lora_B.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * self.lora_B(self.lora_A(x))


def apply_trainable(model: nn.Module, spec: Trainable, generator: torch.Generator | None = None) -> nn.Module:
    """Freeze what ``spec`` does not train (in place); ``lora`` replaces every linear layer by a
    :class:`LoRALinear`. Returns the model."""
    if spec.kind == "all":
        return model
    if spec.kind == "lora":
        for p in model.parameters():
            p.requires_grad_(False)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        targets = [(name, mod) for name, mod in model.named_modules()
                   if type(mod) is nn.Linear and mod.bias is not None]
        for name, mod in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear(mod, spec.n, lora_scale(spec), gen))
        return model
    keep = set(trained_keys(dict(model.state_dict()), spec))
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return model


def reply_state(model: nn.Module, spec: Trainable) -> dict[str, np.ndarray]:
    """What the site sends back: every parameter (``all``), the trained ones, or the LoRA factors."""
    state = unwrap(model).state_dict()
    if spec.kind == "all":
        keys = list(state)
    elif spec.kind == "lora":
        keys = [k for k in state if k.endswith((f".{LORA_A}.weight", f".{LORA_B}.weight"))]
    else:
        keys = [n for n, p in unwrap(model).named_parameters() if p.requires_grad]
    out = {}
    for k in keys:
        name = k[: -len(".weight")] if spec.kind == "lora" else k
        out[name] = state[k].detach().cpu().numpy().copy()
    return out


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
