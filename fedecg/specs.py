"""The small grammars of the run config, parsed without torch: ``train.trainable`` (which parameters a site
trains, see sssd.peft) and ``strategy.robust`` (the aggregation rule, see server.robust). The config validates
them, the model and federation layers read the parsed values."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fedecg.errors import FedECGError

_TRAINABLE = re.compile(r"^(all|conditioning|last-blocks:([1-9][0-9]*)|lora:([1-9][0-9]*))$")


@dataclass(frozen=True)
class Trainable:
    """``train.trainable`` parsed: which parameters a site trains (see sssd.peft)."""

    kind: str  # all | conditioning | last-blocks | lora
    n: int = 0  # last-blocks: N; lora: rank R

    @property
    def partial(self) -> bool:
        return self.kind != "all"

    def __str__(self) -> str:
        return self.kind if self.kind in ("all", "conditioning") else f"{self.kind}:{self.n}"


def parse_trainable(spec: str) -> Trainable:
    """``all | conditioning | last-blocks:N | lora:R`` → :class:`Trainable`; ValueError names the bad value."""
    m = _TRAINABLE.match(str(spec).strip())
    if m is None:
        raise ValueError(f"train.trainable must be all, conditioning, last-blocks:N or lora:R (N, R >= 1), "
                         f"got {spec!r}")
    if m.group(2):
        return Trainable("last-blocks", int(m.group(2)))
    if m.group(3):
        return Trainable("lora", int(m.group(3)))
    return Trainable(m.group(1))


KINDS = ("none", "median", "trimmed-mean", "norm-bound")


@dataclass(frozen=True)
class RobustRule:
    kind: str = "none"
    param: float = 0.0

    @property
    def combines(self) -> bool:
        """True when the rule replaces the replies by one combined reply (median, trimmed mean)."""
        return self.kind in ("median", "trimmed-mean")


def parse_robust(spec: str) -> RobustRule:
    """``none`` | ``median`` | ``trimmed-mean:β`` (0 ≤ β < 0.5) | ``norm-bound:C`` (C > 0); FedECGError otherwise."""
    text = str(spec).strip().lower()
    kind, _, arg = text.partition(":")
    if kind not in KINDS:
        raise FedECGError(f"strategy.robust {spec!r}: expected none, median, trimmed-mean:BETA or norm-bound:C")
    if kind in ("none", "median"):
        if arg:
            raise FedECGError(f"strategy.robust {spec!r}: {kind} takes no parameter")
        return RobustRule(kind)
    try:
        value = float(arg)
    except ValueError:
        raise FedECGError(f"strategy.robust {spec!r}: {kind} needs a number, e.g. "
                          f"{'trimmed-mean:0.2' if kind == 'trimmed-mean' else 'norm-bound:5'}") from None
    if kind == "trimmed-mean" and not 0.0 <= value < 0.5:
        raise FedECGError(f"strategy.robust {spec!r}: the trimmed fraction β must be in [0, 0.5)")
    if kind == "norm-bound" and not (math.isfinite(value) and value > 0):
        raise FedECGError(f"strategy.robust {spec!r}: the norm bound C must be > 0")
    return RobustRule(kind, value)
