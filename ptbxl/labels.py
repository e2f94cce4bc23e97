"""Multi-hot labels over the 71 SCP statements of ``scp_statements.csv``.

The order is the row order of that file and is saved with every manifest/checkpoint (``to_list``), so a model
trained on one vocabulary is never fed codes in another order. A statement counts as present when it appears
in the record's ``scp_codes`` (PTB-XL's likelihood is 0 for non-diagnostic statements, so it is not a
threshold unless ``min_likelihood`` is given).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedecg.errors import FedECGError
from ptbxl.scp_table import CODES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelVocab:
    """A fixed, ordered tuple of SCP codes; ``encode`` maps ``{code: likelihood}`` to a float32 multi-hot
    vector."""

    codes: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = tuple(str(c) for c in self.codes)
        if len(set(codes)) != len(codes) or not codes:
            raise FedECGError(f"label vocabulary must be non-empty and unique, got {len(codes)} codes")
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(codes)})

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def from_statements(cls, statements: pd.DataFrame) -> LabelVocab:
        """Vocabulary in the row order of ``scp_statements.csv`` (``read_scp_statements``)."""
        return cls(tuple(str(c) for c in statements.index))

    @classmethod
    def default(cls) -> LabelVocab:
        """PTB-XL's 71 statements in the order of its ``scp_statements.csv`` (built-in copy of the code
        list)."""
        return cls(CODES)

    def to_list(self) -> list[str]:
        return list(self.codes)

    @classmethod
    def from_list(cls, codes: Iterable[str]) -> LabelVocab:
        return cls(tuple(codes))

    def encode(
        self, scp_codes: Mapping[str, float], *, strict: bool = False, min_likelihood: float | None = None
    ) -> np.ndarray:
        """(len(codes),) float32 multi-hot. Unknown codes raise FedECGError when ``strict``, else are
        skipped."""
        out = np.zeros(len(self.codes), dtype=np.float32)
        for code, likelihood in scp_codes.items():
            idx = self._index.get(code)
            if idx is None:
                if strict:
                    raise FedECGError(f"SCP code {code!r} is not in the label vocabulary")
                log.debug("skipping unknown SCP code %r", code)
                continue
            if min_likelihood is None or float(likelihood) >= min_likelihood:
                out[idx] = 1.0
        return out

    def encode_many(self, many: Iterable[Mapping[str, float]], **kwargs) -> np.ndarray:
        """(N, len(codes)) float32 multi-hot for an iterable of ``scp_codes`` dicts."""
        rows = [self.encode(codes, **kwargs) for codes in many]
        if not rows:
            return np.zeros((0, len(self.codes)), dtype=np.float32)
        return np.stack(rows)

    def decode(self, multi_hot: np.ndarray, threshold: float = 0.5) -> list[str]:
        """Codes whose entry is at least ``threshold``."""
        return [c for c, v in zip(self.codes, np.asarray(multi_hot).ravel(), strict=False) if v >= threshold]
