"""The thin side of the resident site worker (deploy.worker): a Flower ClientApp mod.

``forward_to_worker`` is meant to be the *first* mod of the fedecg ClientApp (client/app.py:
``ClientApp(mods=[forward_to_worker, egress_guard])``). When the SuperNode's node config names a worker socket
(``worker-socket='/run/fedecg/site.sock'``), a train or evaluate message is not handled in this short-lived
``flwr-clientapp`` process: it goes, with its Context, to the site's resident worker, which runs the full
fedecg ClientApp (policy, ledger, egress guard) and returns the reply and the updated ``context.state``; this
process hands both back to Flower. Without the key it calls the next mod, i.e. the ClientApp runs in this
process exactly as before.

If the worker cannot be reached or refuses the request, the reply is the sanitized site error
``fedecg/internal: ...`` (fedecg.protocol), so no local detail leaves the site; the reason goes to this
process's stderr (the SuperNode's log). The worker is restarted by its supervisor; the site rejoins the next
round.

This module imports only the standard library, Flower (already imported by ``flwr-clientapp``) and
fedecg.protocol: no torch, no pandas, no fedecg.config.
"""

from __future__ import annotations

import json
import sys
import time

from deploy.worker import WORKER_SOCKET_KEY, WorkerError, call

FORWARDED = ("train", "evaluate")


def _error_reply(msg, reason_class: str = "internal"):  # noqa: ANN001, ANN202 - flwr Message
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    from fedecg import protocol as P

    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=P.error_reason(reason_class)),
                   reply_to=msg)


def forward(msg, context, socket_path: str, timeout: float = 3600.0):  # noqa: ANN001, ANN201 - flwr types
    """Send ``msg`` + ``context`` to the worker; return its reply and update ``context.state`` in place.
    Raises WorkerError when the worker cannot be reached or refuses."""
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
    from flwr.app import Message

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
