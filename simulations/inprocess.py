"""The in-process engine: a Flower Grid that delivers messages to ClientApps in this process, one after the
other (no Ray, no network). Each node keeps its own Context across rounds, like a SuperNode. Used by
``fedecg simulate --engine inprocess`` (debugging, profiling, tiny machines), the tests and the benchmarks;
an exception in a ClientApp becomes an error reply, as in Flower's engines."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    def __init__(self, client_app, num_nodes: int, node_config: Callable[[int], dict] | None = None,
                 tamper: Callable[[int, Message], Message] | None = None,
                 outgoing: list | None = None) -> None:
        self.client_app = client_app
        self.node_ids = list(range(1, num_nodes + 1))
        make_cfg = node_config or (lambda i: {"partition-id": i, "num-partitions": num_nodes})
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config=make_cfg(k), state=RecordDict(),
                                      run_config={}) for k, nid in enumerate(self.node_ids)}
        self.tamper = tamper
        self.outgoing = outgoing  # every reply that left a node, for inspection
        self._run = None
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # as in a ServerApp process

    def set_run(self, run_id: int) -> None:
        self._run = run_id

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def get_nodes(self):
        return []

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            try:
                reply = self.client_app(msg, self.contexts[nid])
            except Exception as exc:  # what Flower does: an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            if self.outgoing is not None:
                self.outgoing.append(reply)
            if self.tamper is not None:
                reply = self.tamper(nid, reply)
            replies.append(reply)
        return replies
