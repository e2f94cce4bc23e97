"""The egress guard: a Flower client mod that inspects every reply before it leaves the site.

Allowed: an ArrayRecord ``arrays`` whose names and shapes equal the global model the server sent (parameters
only), a MetricRecord ``metrics`` of allow-listed aggregate scalars (fedecg.protocol.ALLOWED_METRICS), and a
ConfigRecord ``site-info`` of short strings. Anything else (records, per-record values, lists, extra keys)
stops the reply: the mod raises, so Flower sends an error reply carrying only the reason.
"""

from __future__ import annotations

from flwr.app import Context, Message

from fedecg import protocol as P
from fedecg.errors import FedECGError

_SITE_INFO_KEYS = {"site", "status", "message"}


def check_outgoing(reply: Message, request: Message) -> None:
    """Raise FedECGError if ``reply`` carries anything but parameters and allow-listed aggregate metrics."""
    if reply.has_error():
        return
    content = reply.content
    extra = set(content.keys()) - {P.ARRAYS, P.METRICS, P.SITE_INFO}
    if extra:
        raise FedECGError(f"egress blocked: reply carries unexpected records {sorted(extra)}")
    if P.ARRAYS in content.array_records:
        sent = request.content.array_records.get(P.ARRAYS)
        got = content.array_records[P.ARRAYS]
        if sent is None or list(got.keys()) != list(sent.keys()):
            raise FedECGError("egress blocked: reply arrays are not exactly the global model's parameters")
        for name, arr in got.items():
            if tuple(arr.shape) != tuple(sent[name].shape):
                raise FedECGError(f"egress blocked: array {name!r} has shape {tuple(arr.shape)}, "
                                  f"the model's is {tuple(sent[name].shape)}")
    for name, value in content.metric_records.get(P.METRICS, {}).items():
        if name not in P.ALLOWED_METRICS:
            raise FedECGError(f"egress blocked: metric {name!r} is not an allow-listed aggregate metric")
        if not isinstance(value, (int, float)):
            raise FedECGError(f"egress blocked: metric {name!r} is not a scalar")
    info = content.config_records.get(P.SITE_INFO, {})
    for name, value in info.items():
        if name not in _SITE_INFO_KEYS or not isinstance(value, str) or len(value) > 500:
            raise FedECGError(f"egress blocked: site-info entry {name!r} is not an allowed short string")


def egress_guard(msg: Message, context: Context, call_next) -> Message:
    reply = call_next(msg, context)
    check_outgoing(reply, msg)
    return reply
