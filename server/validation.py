"""Server-side validation of site replies before aggregation.

A reply is rejected (with a logged reason, the round goes on with the others) if it carries a Flower error,
a refusal (privacy budget spent), no arrays, arrays whose names / shapes / dtypes differ from the global model,
NaN or Inf anywhere, a non-positive or non-finite example count, or an update whose L2 norm
``||w_site - w_global||`` exceeds ``strategy.max_update_norm`` (a broken or malicious site).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from fedecg import protocol as P


@dataclass
class Verdict:
    site: str
    accepted: bool
    reason: str = ""
    update_norm: float = float("nan")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_reason(reason: str, limit: int = 300) -> str:
    """The last meaningful line of a (possibly Ray-wrapped) traceback, without colour codes."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(reason)).splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(lines) if "Message:" in ln or "Error" in ln), lines[-1] if lines else "")
    return msg[:limit]


def site_of(msg, names: dict[int, str] | None = None, sent_to: dict[str, int] | None = None) -> str:
    """The public site name of a reply. Error replies carry no site-info, and those made by the SuperLink
    (e.g. "node unavailable") come from the SuperLink's id: attribute them to the node the request went to
    (``sent_to``: request message id → destination node) and name it as it named itself before (``names``)."""
    node = msg.metadata.src_node_id
    if sent_to and msg.metadata.reply_to_message_id and msg.metadata.reply_to_message_id in sent_to:
        node = sent_to[msg.metadata.reply_to_message_id]
    if not msg.has_error():
        info = msg.content.config_records.get(P.SITE_INFO)
        if info is not None and isinstance(info.get("site"), str) and info.get("site"):
            if names is not None:
                names[node] = str(info["site"])
            return str(info["site"])
    return (names or {}).get(node, f"node-{node}")


def check_reply(msg, global_arrays: dict[str, np.ndarray], max_update_norm: float, site: str | None = None
                ) -> Verdict:
    site = site or site_of(msg)
    if msg.has_error():
        return Verdict(site, False, f"site error: {short_reason(msg.error.reason)}")
    content = msg.content
    info = content.config_records.get(P.SITE_INFO, {})
    if info.get("status") == P.STATUS_REFUSED:
        return Verdict(site, False, f"refused: {info.get('message', '')}")
    metrics = content.metric_records.get(P.METRICS)
    if metrics is None or P.NUM_EXAMPLES not in metrics:
        return Verdict(site, False, f"no {P.NUM_EXAMPLES!r} metric")
    n = metrics[P.NUM_EXAMPLES]
    if not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 0:
        return Verdict(site, False, f"bad {P.NUM_EXAMPLES} {n!r}")
    arrays = content.array_records.get(P.ARRAYS)
    if arrays is None:
        return Verdict(site, False, "no arrays in reply")
    if set(arrays.keys()) != set(global_arrays):
        missing = sorted(set(global_arrays) - set(arrays.keys()))[:3]
        extra = sorted(set(arrays.keys()) - set(global_arrays))[:3]
        return Verdict(site, False, f"wrong keys (missing {missing}, unexpected {extra})")
    sq = 0.0
    for name, ref in global_arrays.items():
        arr = arrays[name]
        if tuple(arr.shape) != tuple(ref.shape):
            return Verdict(site, False, f"wrong shape for {name}: {tuple(arr.shape)} != {tuple(ref.shape)}")
        if arr.dtype != ref.dtype.name:
            return Verdict(site, False, f"wrong dtype for {name}: {arr.dtype} != {ref.dtype}")
        value = arr.numpy()
        if not np.all(np.isfinite(value)):
            return Verdict(site, False, f"non-finite values (NaN/Inf) in {name}")
        sq += float(np.sum((value.astype(np.float64) - ref.astype(np.float64)) ** 2))
    norm = math.sqrt(sq)
    if norm > max_update_norm:
        return Verdict(site, False, f"update norm {norm:.3g} exceeds max_update_norm {max_update_norm:.3g}", norm)
    return Verdict(site, True, "", norm)
