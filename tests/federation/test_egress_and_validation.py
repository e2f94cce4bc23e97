"""Unit checks of the two message guards: the client's egress allow-list and the server's reply validation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from client.egress import check_outgoing
from fedecg import protocol as P
from fedecg.errors import FedECGError
from server.validation import check_reply, short_reason

GLOBAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


@pytest.fixture(autouse=True)
def _task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def _request() -> Message:
    content = RecordDict({P.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in GLOBAL.items()}),
                          P.CONFIG: ConfigRecord({"x": 1})})
    return Message(content=content, dst_node_id=5, message_type="train")


def _reply(arrays=None, metrics=None, info=None, extra=None) -> Message:
    content = RecordDict()
    if arrays is not None:
        content[P.ARRAYS] = ArrayRecord(array_dict={k: Array(np.asarray(v)) for k, v in arrays.items()})
    content[P.METRICS] = MetricRecord(metrics if metrics is not None else {P.NUM_EXAMPLES: 10.0})
    content[P.SITE_INFO] = ConfigRecord(info or {"site": "site-0", "status": "ok", "message": ""})
    for k, v in (extra or {}).items():
        content[k] = v
    return Message(content=content, reply_to=_request())


def _weights(delta: float = 0.1):
    return {k: v + delta for k, v in GLOBAL.items()}


def test_egress_passes_parameters_and_aggregate_metrics():
    check_outgoing(_reply(_weights(), {P.NUM_EXAMPLES: 10.0, "train-loss": 0.5, "epsilon": 1.2}), _request())


@pytest.mark.parametrize("reply, message", [
    (lambda: _reply(_weights(), {P.NUM_EXAMPLES: 10.0, "per-record-loss": 0.1}), "not an allow-listed"),
    (lambda: _reply(_weights(), {P.NUM_EXAMPLES: 10.0, "train-loss": [0.1, 0.2]}), "not a scalar"),
    (lambda: _reply({"w": GLOBAL["w"]}), "not exactly the model parameters"),
    (lambda: _reply({**_weights(), "records": np.zeros((4, 8, 1000), np.float32)}), "not exactly"),
    (lambda: _reply(_weights(), extra={"raw": ConfigRecord({"ecg": "..."})}), "unexpected records"),
    (lambda: _reply(_weights(), info={"site": "s", "patient": "123"}), "site-info entry"),
])
def test_egress_blocks_anything_else(reply, message):
    with pytest.raises(FedECGError, match=message):
        check_outgoing(reply(), _request())


def test_validation_accepts_a_good_reply_and_reports_its_norm():
    v = check_reply(_reply(_weights(0.1)), GLOBAL, max_update_norm=10.0)
    assert v.accepted and v.site == "site-0"
    assert v.update_norm == pytest.approx(0.1 * np.sqrt(8), rel=1e-5)


@pytest.mark.parametrize("make, reason", [
    (lambda: _reply({"w": np.zeros((2, 3), np.float32), "b": GLOBAL["b"]}), "wrong shape"),
    (lambda: _reply({"w": GLOBAL["w"].astype(np.float64), "b": GLOBAL["b"]}), "wrong dtype"),
    (lambda: _reply({"w": np.full((3, 2), np.inf, np.float32), "b": GLOBAL["b"]}), "non-finite"),
    (lambda: _reply({"w": GLOBAL["w"]}), "wrong keys"),
    (lambda: _reply(_weights(100.0)), "exceeds max_update_norm"),
    (lambda: _reply(_weights(), {P.NUM_EXAMPLES: 0.0}), "bad num-examples"),
    (lambda: _reply(None), "no arrays"),
    (lambda: _reply(None, {P.NUM_EXAMPLES: 0.0}, {"site": "s", "status": P.STATUS_REFUSED,
                                                   "message": "privacy budget spent"}), "refused"),
])
def test_validation_rejects_broken_or_malicious_replies(make, reason):
    v = check_reply(make(), GLOBAL, max_update_norm=10.0)
    assert not v.accepted
    assert reason in v.reason


def test_error_replies_are_rejected_with_a_short_reason():
    msg = Message(Error(code=1, reason="Traceback\n  File x\n\x1b[36mValueError: boom\x1b[0m"), reply_to=_request())
    v = check_reply(msg, GLOBAL, 10.0)
    assert not v.accepted and v.reason == "site error: ValueError: boom"
    assert short_reason("") == ""
