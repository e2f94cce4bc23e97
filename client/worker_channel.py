"""The site-side channel to the resident site worker (deploy.worker), and the ClientApp mod that uses it.

``forward_to_worker`` is meant to be the *first* mod of the fedecg ClientApp (client/app.py:
``ClientApp(mods=[forward_to_worker, egress_guard])``). When the SuperNode's node config names a worker socket
(``worker-socket='/run/fedecg-site/worker.sock'``), a train or evaluate message is not handled in this
short-lived ``flwr-clientapp`` process: it goes, with its Context, to the site's resident worker, which runs the
full fedecg ClientApp (policy, ledger, egress guard) and returns the reply and the updated ``context.state``;
this process hands both back to Flower. Without the key it calls the next mod, i.e. the ClientApp runs in this
process exactly as before.

If the worker cannot be reached or refuses the request, the reply is the sanitized site error
``fedecg/internal: ...`` (fedecg.protocol), so no local detail leaves the site; the reason goes to this process's
stderr (the SuperNode's log). The worker is restarted by its supervisor; the site rejoins the next round.

Wire format (one request per connection): a count and length-prefixed frames (8-byte big-endian lengths); the
first frame is a JSON header (``{"protocol": 1, "op": "train"|"evaluate"|"health"|"register", "run_id": N}``),
then the Message and the Context as Flower protobufs (flwr.common.serde). The answer: a JSON header
(``{"ok": true|false, "error": ...}``), then the reply Message and the updated Context.

This module lives in the ClientApp's layer and imports only the standard library, Flower (already imported by
``flwr-clientapp``) and fedecg.protocol: no torch, no pandas, no fedecg.config.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path

from fedecg import protocol as P

# Flower (~0.4 s: grpc, protobuf) is imported where a Message is built or (de)serialized: deploy.worker imports this
# module, and its supervise, health and register processes (and deploy.local's health checks) need no Flower.

WORKER_SOCKET_KEY = "worker-socket"  # node-config key naming the worker's socket
PROTOCOL = 1
OPS = ("train", "evaluate")
MAX_FRAME = 4 << 30  # 4 GiB: larger frames are refused
_LEN = struct.Struct(">Q")
FORWARDED = ("train", "evaluate")


class WorkerError(Exception):
    """A request the worker refused, or a channel failure."""


# ---- framing -------------------------------------------------------------------------------------------------


def send_frames(sock: socket.socket, frames: list[bytes]) -> None:
    sock.sendall(_LEN.pack(len(frames)) + b"".join(_LEN.pack(len(f)) + f for f in frames))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise WorkerError("the connection closed mid-message")
        buf += chunk
    return bytes(buf)


def recv_frames(sock: socket.socket, max_frames: int = 8) -> list[bytes]:
    (count,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if count > max_frames:
        raise WorkerError(f"{count} frames in one message (at most {max_frames})")
    frames = []
    for _ in range(count):
        (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
        if size > MAX_FRAME:
            raise WorkerError(f"a frame of {size} bytes is larger than {MAX_FRAME}")
        frames.append(_recv_exact(sock, size))
    return frames


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux SO_PEERCRED; None elsewhere)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


# ---- requests ------------------------------------------------------------------------------------------------


def call(path: Path | str, header: dict, blobs: list[bytes] = (), timeout: float = 3600.0) -> list[bytes]:
    """Send one request, return the response frames; WorkerError when the worker cannot be reached."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        send_frames(sock, [json.dumps({"protocol": PROTOCOL, **header}).encode(), *blobs])
        return recv_frames(sock)
    except (OSError, struct.error) as exc:
        raise WorkerError(f"site worker at {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sock.close()


def health(path: Path | str, timeout: float = 5.0) -> dict:
    return json.loads(call(path, {"op": "health"}, timeout=timeout)[0])


def register(path: Path | str, run_id: int, timeout: float = 10.0) -> dict:
    return json.loads(call(path, {"op": "register", "run_id": int(run_id)}, timeout=timeout)[0])


def _error_reply(msg, reason_class: str = "internal"):  # noqa: ANN001, ANN202 - flwr Message
    from flwr.app import Error, Message  # local: see the note at the imports
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=P.error_reason(reason_class)),
                   reply_to=msg)


def forward(msg, context, socket_path: str, timeout: float = 3600.0):  # noqa: ANN001, ANN201 - flwr types
    """Send ``msg`` + ``context`` to the worker; return its reply and update ``context.state`` in place.
    Raises WorkerError when the worker cannot be reached or refuses."""
    from flwr.app import Message  # local: see the note at the imports
    from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Context as ProtoContext
    from flwr.proto.message_pb2 import Message as ProtoMessage

    header = {"op": msg.metadata.message_type, "run_id": int(msg.metadata.run_id)}
    frames = call(socket_path, header, [message_to_proto(msg).SerializeToString(),
                                        context_to_proto(context).SerializeToString()], timeout=timeout)
    answer = json.loads(frames[0])
    if not answer.get("ok"):
        raise WorkerError(str(answer.get("error", "the worker refused the request")))
    if len(frames) != 3:
        raise WorkerError("the worker's answer has no reply")
    remote = message_from_proto(ProtoMessage.FromString(frames[1]))
    context.state = context_from_proto(ProtoContext.FromString(frames[2])).state
    # the reply is rebuilt here around the worker's content, so its metadata (ids, task ids, ttl) is exactly what
    # Flower would have made in this process
    return Message(remote.error if remote.has_error() else remote.content, reply_to=msg)


def forward_to_worker(msg, context, call_next):  # noqa: ANN001, ANN201 - a Flower mod
    """Flower mod: hand train/evaluate to the site's resident worker when the node config names one."""
    socket_path = str(context.node_config.get(WORKER_SOCKET_KEY, "") or "")
    if not socket_path or msg.metadata.message_type not in FORWARDED:
        return call_next(msg, context)
    t0 = time.perf_counter()
    try:
        reply = forward(msg, context, socket_path)
    except WorkerError as exc:
        print(f"fedecg: site worker unavailable for {msg.metadata.message_type} (run {msg.metadata.run_id}): {exc}",
              file=sys.stderr, flush=True)
        return _error_reply(msg)
    print(f"fedecg: {msg.metadata.message_type} served by the site worker in {time.perf_counter() - t0:.2f} s",
          file=sys.stderr, flush=True)
    return reply
