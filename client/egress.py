"""The egress guard: a Flower client mod that inspects every reply before it leaves the site.

Allowed: an ArrayRecord ``arrays`` whose names and shapes equal the global model the server sent (parameters
only), a MetricRecord ``metrics`` of allow-listed aggregate scalars (fedecg.protocol.ALLOWED_METRICS), and a
ConfigRecord ``site-info`` of short strings (``site``, ``status``, ``message``, and ``ledger-digest``, which must be
exactly 64 lowercase hex characters). Anything else (records, per-record values, lists, extra keys)
stops the reply.

Errors never carry details off the site: any exception raised while handling a message (a corrupt record, a
malformed CSV cell holding a patient's name, a path, a blocked reply) becomes an error reply whose reason is
``fedecg/<class>: <fixed message>`` from ``fedecg.protocol.ERROR_MESSAGES`` (class chosen from where it was
raised: data, config, privacy, training, resources, egress, internal); the exception text and traceback go to
the site's local log (the ``client.egress`` logger, and ``site-errors.log`` in the site's state folder when it
has one). A :class:`fedecg.errors.SiteRefusal` (e.g. too few valid training records) becomes a normal
``refused`` reply with the site's name, a fixed sentence and allow-listed counts. Replies of the site's own
data loader gain the allow-listed ``records-invalid`` count (records skipped as invalid, ids stay local).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import re
import traceback
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from fedecg import protocol as P
from fedecg.errors import FedECGError, SiteRefusal
from fedecg.wire import WireError, from_record, layout_of

log = logging.getLogger(__name__)

_SITE_INFO_KEYS = {"site", "status", "message", P.LEDGER_DIGEST}
_DIGEST = re.compile(r"[0-9a-f]{64}")  # the ledger digest: exactly a sha256 hex string, nothing else rides on it


def _expected_arrays(request: Message, sent) -> dict:
    """Name → (shape, dtype) of what a train reply may carry: the global model's parameters, or under a
    partial ``train.trainable`` exactly the trained ones / LoRA factors (sssd.peft.reply_reference)."""
    from sssd.peft import parse_trainable, reply_reference  # local: keeps the flwr-clientapp import thin (no torch)

    try:
        shapes = layout_of(sent)
    except WireError as exc:
        raise FedECGError(f"egress blocked: the request's model is malformed ({exc})") from exc
    spec = "all"
    config = request.content.config_records.get(P.CONFIG)
    if config is not None and P.RUN_CONFIG_JSON in config:
        try:
            spec = json.loads(str(config[P.RUN_CONFIG_JSON])).get("train", {}).get("trainable", "all")
        except (ValueError, AttributeError) as exc:
            raise FedECGError("egress blocked: the request's run config does not parse") from exc
    try:
        return reply_reference(shapes, parse_trainable(spec))
    except ValueError as exc:
        raise FedECGError(f"egress blocked: {exc}") from exc


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
        if sent is None:
            raise FedECGError("egress blocked: reply carries arrays but the request carried no model")
        expected = _expected_arrays(request, sent)
        try:
            if list(layout_of(got)) != list(expected):
                raise FedECGError("egress blocked: reply arrays are not exactly the model parameters the site "
                                  "trains (train.trainable)")
            from_record(got, expected)  # shapes, dtypes and sizes: nothing rides along in the bytes
        except WireError as exc:
            raise FedECGError(f"egress blocked: {exc}") from exc
    for name, value in content.metric_records.get(P.METRICS, {}).items():
        if name not in P.ALLOWED_METRICS:
            raise FedECGError(f"egress blocked: metric {name!r} is not an allow-listed aggregate metric")
        if not isinstance(value, (int, float)):
            raise FedECGError(f"egress blocked: metric {name!r} is not a scalar")
    info = content.config_records.get(P.SITE_INFO, {})
    for name, value in info.items():
        if name not in _SITE_INFO_KEYS or not isinstance(value, str) or len(value) > 500:
            raise FedECGError(f"egress blocked: site-info entry {name!r} is not an allowed short string")
        if name == P.LEDGER_DIGEST and not _DIGEST.fullmatch(value):
            raise FedECGError(f"egress blocked: site-info {P.LEDGER_DIGEST!r} is not a sha256 hex digest")


def egress_guard(msg: Message, context: Context, call_next) -> Message:
    """The ClientApp mod: run the handler, then let out only an allowed reply, a refusal, or a sanitized error."""
    try:
        reply = call_next(msg, context)
        if not reply.has_error():
            _add_load_report(reply, msg, context)
        elif P.parse_error_reason(reply.error.reason) is None:  # an error reply built further in: sanitize it
            _log_locally(context, msg, "internal", f"error reply from the handler: {reply.error.reason}", None)
            return _error_reply(msg, "internal")
        check_outgoing(reply, msg)
        return reply
    except SiteRefusal as exc:
        _log_locally(context, msg, "refused", str(exc), None)
        return _refusal_reply(msg, exc)
    except Exception as exc:  # noqa: BLE001 - every exception leaves the site as a fixed message only
        cls = error_class(exc)
        _log_locally(context, msg, cls, f"{type(exc).__name__}: {exc}", exc)
        return _error_reply(msg, cls)


# ---- errors and refusals ---------------------------------------------------------------------------------

_ROOT = Path(__file__).resolve().parent.parent
_AREAS = (  # (path prefix relative to the project, error class), most specific first
    ("client/data.py", "data"), ("ptbxl/", "data"),
    ("fedecg/config.py", "config"), ("sssd/config.py", "config"),
    ("privacy/policy.py", "privacy"), ("privacy/", "privacy"),
    ("client/training.py", "training"), ("sssd/", "training"),
)


def error_class(exc: BaseException) -> str:
    """The allow-listed class of an exception: resources for MemoryError / full disks, else from the deepest
    project frame of its traceback (``_AREAS``; ``read_run_config`` counts as config, ``check_outgoing`` as
    egress), else internal."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.ENOMEM)):
        return "resources"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        try:
            rel = Path(frame.filename).resolve().relative_to(_ROOT).as_posix()
        except ValueError:
            continue  # a library frame (torch, opacus, numpy, pandas, flwr)
        if frame.name == "read_run_config":
            return "config"
        if rel == "client/egress.py":  # the guard itself: only its allow-list check counts
            if frame.name == "check_outgoing":
                return "egress"
            continue
        for prefix, cls in _AREAS:
            if rel.startswith(prefix):
                return cls
    return "internal"


def _error_reply(msg: Message, cls: str) -> Message:
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=P.error_reason(cls)), reply_to=msg)


def _refusal_reply(msg: Message, exc: SiteRefusal) -> Message:
    metrics = {P.NUM_EXAMPLES: 0.0, "refused": 1.0}
    metrics.update({k: float(v) for k, v in exc.metrics.items() if k in P.ALLOWED_METRICS})
    content = RecordDict({P.METRICS: MetricRecord(metrics),
                          P.SITE_INFO: ConfigRecord({"site": str(exc.site)[:64], "status": P.STATUS_REFUSED,
                                                     "message": str(exc.public)[:500]})})
    return Message(content=content, reply_to=msg)


def _log_locally(context: Context, msg: Message, cls: str, details: str, exc: BaseException | None) -> None:
    """The details of an error or refusal, for the site's own eyes: the logger, and site-errors.log in the
    node's state folder (deployment: ``state-dir``, else ``<data-dir>/.fedecg``) when there is one."""
    kind = getattr(getattr(msg, "metadata", None), "message_type", "?")
    log.error("site %s while handling a %s message (the server only gets %r): %s", cls, kind,
              P.error_reason(cls) if cls in P.ERROR_MESSAGES else "a refusal", details, exc_info=exc)
    try:
        node = dict(context.node_config)
        folder = node.get(P.NODE_STATE_DIR) or (Path(str(node[P.NODE_DATA_DIR])) / ".fedecg"
                                                if P.NODE_DATA_DIR in node else None)
        if folder is None:
            return
        path = Path(str(folder)) / "site-errors.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        tb = "".join(traceback.format_exception(exc)) if exc is not None else details + "\n"
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"--- {stamp} {kind} message: {cls}\n{tb}")
    except Exception:  # noqa: BLE001 - logging must never turn into a second error
        log.exception("could not write the site's error log")


def _add_load_report(reply: Message, msg: Message, context: Context) -> None:
    """``records-invalid``: how many of the site's records its data loader skipped (client.data)."""
    from client.data import invalid_record_count  # local: keeps the flwr-clientapp import thin (no torch, pandas)

    metrics = reply.content.metric_records.get(P.METRICS)
    if metrics is None:
        return
    n = invalid_record_count(dict(context.node_config), msg)
    if n:
        metrics["records-invalid"] = float(n)
