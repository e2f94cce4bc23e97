"""One root seed, every other seed derived from it.

A scenario's ``seed`` is the root. Everything random in a run draws from a seed derived from it by
:func:`derive_seed` (a SHA-256 of the parts, independent of PYTHONHASHSEED and of the platform):

=====================  ==========================================  =====================================
what                   seed                                        where
=====================  ==========================================  =====================================
initial weights        ``model.init_seed`` = seed31(root, "model-init")   fedecg.config (explicit in config.yaml)
partition              ``partition.seed`` = seed31(root, "partition")     fedecg.config (explicit in config.yaml)
site training round    derive_seed(root, round, site) (+1 loss, +2 DP noise, +3 patient draws, +4 LoRA)  client.training
validation             derive_seed(root, "validation", site)       client.training
node sampling          ``random.seed(json([root, round]))``         server.loop
synthesis              ``output`` / sampler seed = root            simulations.finish
=====================  ==========================================  =====================================

A scenario that sets ``model.init_seed`` or ``partition.seed`` itself keeps its value (e.g. to hold the
partition fixed while varying the training seed).
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (seed, round, site name...), independent of PYTHONHASHSEED."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seed31(*parts: object) -> int:
    """:func:`derive_seed` reduced to [0, 2**31): for fields that hold a plain int seed (numpy, torch)."""
    return derive_seed(*parts) % (2**31)
