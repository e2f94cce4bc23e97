"""One bad site can neither break nor take over the federation (issue 16, parts 1 and 2).

- Reply validation never raises: >= 1,000 random malformed replies (hypothesis) all come back as rejected
  Verdicts; a site whose every reply is undecodable is rejected round after round, the run completes and resumes.
- Example counts are capped at the site's registered record count; ``strategy.robust`` (median, trimmed mean,
  norm bound) and the per-round relative norm bound keep one malicious site (scaled update, huge count, sign
  flip) from moving the aggregate beyond the honest sites' spread.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedecg import protocol as P
from fedecg.errors import FedECGError
from fedecg.wire import LAYOUT, PACKED, from_record, to_record
from server.robust import (
    RobustRule,
    aggregation_replies,
    clip_update,
    combine,
    parse_robust,
    relative_norm_outliers,
    update_norm,
)
from server.validation import ExampleCounts, Verdict, attribute_replies, check_reply, screen_round

GLOBAL = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}


@pytest.fixture(autouse=True)
def _task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


def _request(node: int = 5) -> Message:
    content = RecordDict({P.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in GLOBAL.items()}),
                          P.CONFIG: ConfigRecord({"x": 1})})
    return Message(content=content, dst_node_id=node, message_type="train")


def _good(delta: float = 0.1, n: float = 10.0, site: str = "site-0", node: int = 5) -> Message:
    content = RecordDict({
        P.ARRAYS: ArrayRecord(array_dict={k: Array(v + delta) for k, v in GLOBAL.items()}),
        P.METRICS: MetricRecord({P.NUM_EXAMPLES: n, "train-loss": 0.5}),
        P.SITE_INFO: ConfigRecord({"site": site, "status": "ok", "message": ""}),
    })
    return Message(content=content, reply_to=_request(node))


def test_a_good_reply_is_accepted():
    v = check_reply(_good(), GLOBAL, 10.0)
    assert v.accepted and v.num_examples == 10.0


def test_a_good_packed_reply_is_accepted_and_decoded_exactly():
    msg = _good()
    msg.content[P.ARRAYS] = to_record({k: v + 0.1 for k, v in GLOBAL.items()})
    v = check_reply(msg, GLOBAL, 10.0)
    assert v.accepted and all(np.array_equal(v.arrays[k], GLOBAL[k] + 0.1) for k in GLOBAL)


# ---- part 1: malformed replies are rejected, never raise -----------------------------------------------------


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


class _Hostile:
    """An object every attribute access of which raises."""

    def __getattr__(self, name):
        raise RuntimeError(f"hostile {name}")


JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=20), st.binary(max_size=40), st.lists(st.integers(), max_size=3),
                 st.just(_Hostile()), st.just(np.zeros(3)), st.just(object()))


def _array_mutation(draw, name: str, ref: np.ndarray | None = None) -> tuple[Array, str]:
    """A broken Array for global array ``name`` (or for ``ref``, e.g. packed data) and the kind of breakage."""
    ref = GLOBAL[name] if ref is None else ref
    good = Array(ref + 0.1)
    kind = draw(st.sampled_from(["stype", "bytes", "truncated", "dtype", "shape", "nan", "decoded-shape",
                                 "decoded-dtype", "pickle", "attr-junk", "huge"]))
    if kind == "stype":
        good.stype = draw(st.sampled_from(["torch.raw", "", "numpy", "NUMPY.NDARRAY"]))
    elif kind == "bytes":
        good.data = draw(st.binary(max_size=200))
    elif kind == "truncated":
        good.data = good.data[: draw(st.integers(0, len(good.data) - 1))]
    elif kind == "dtype":
        good = Array(ref.astype(draw(st.sampled_from([np.float64, np.int32, np.float16, np.int8]))) + 1)
    elif kind == "shape":
        shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3).filter(lambda s: tuple(s) != ref.shape))
        good = Array(np.zeros(shape, np.float32))
    elif kind == "nan":
        bad = (ref + 0.1).copy()
        bad.flat[draw(st.integers(0, bad.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        good = Array(bad)
    elif kind == "decoded-shape":  # metadata claims the right shape, the bytes hold another
        good.data = _npy(np.zeros(ref.size + 1, np.float32))
    elif kind == "decoded-dtype":
        good.data = _npy(np.zeros(ref.shape, np.float64))
    elif kind == "pickle":
        header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        good.data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x80\x04N."
    elif kind == "attr-junk":
        setattr(good, draw(st.sampled_from(["dtype", "shape", "stype", "data"])), draw(JUNK))
    elif kind == "huge":
        good.data = good.data + b"\x00" * (1 << 17)
    return good, kind


@st.composite
def malformed_replies(draw):
    """(message or hostile object, must_reject)."""
    kind = draw(st.sampled_from(["array", "metric", "num-examples", "records", "site-info", "error", "keys",
                                 "hostile", "content-junk", "packed"]))
    msg = _good()
    content = msg.content
    if kind == "array":
        name = draw(st.sampled_from(sorted(GLOBAL)))
        arrays = dict(content.array_records[P.ARRAYS].items())
        arrays[name], _ = _array_mutation(draw, name)
        rec = ArrayRecord()
        for k, a in arrays.items():
            rec[k] = a
        content[P.ARRAYS] = rec
    elif kind == "metric":
        name = draw(st.one_of(st.sampled_from(["per-record-loss", "patient 123", "train-loss", P.NUM_EXAMPLES]),
                              st.text(max_size=30)))
        value = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                               st.lists(st.floats(allow_nan=False), min_size=1, max_size=3)))
        rec = content.metric_records[P.METRICS]
        if name in P.ALLOWED_METRICS and isinstance(value, (int, float)) and np.isfinite(value):
            value = [value]  # a list is never allowed
        rec._data[name] = value  # bypass MetricRecord's type check: a hostile site need not use Flower's API
    elif kind == "num-examples":
        value = draw(st.sampled_from([0, -1, 0.0, float("nan"), float("inf"), -float("inf"), True, [5.0]]))
        content.metric_records[P.METRICS]._data[P.NUM_EXAMPLES] = value
    elif kind == "records":  # a record of the wrong type under a known name, or an extra record
        where = draw(st.sampled_from([P.ARRAYS, P.METRICS, P.SITE_INFO, "raw", "patients"]))
        rec = draw(st.sampled_from([ConfigRecord({"ecg": b"\x00\x01"}), MetricRecord({"x": 1.0}),
                                    ArrayRecord(array_dict={"x": Array(np.zeros(2))})]))
        if where == P.SITE_INFO and isinstance(rec, ConfigRecord):
            rec = MetricRecord({"x": 1.0})
        if where == P.METRICS and isinstance(rec, MetricRecord):
            rec = ConfigRecord({"ecg": b"\x00"})
        if where == P.ARRAYS and isinstance(rec, ArrayRecord):
            rec = ConfigRecord({"ecg": b"\x00"})
        content._data[where] = rec
    elif kind == "site-info":
        value = draw(st.one_of(st.binary(max_size=10), st.lists(st.text(max_size=3), max_size=2), st.integers()))
        info = content.config_records[P.SITE_INFO]
        info[draw(st.sampled_from(["status", "message"]))] = value
        info["status"] = P.STATUS_REFUSED  # refused with junk in its message: still a rejection
    elif kind == "error":
        msg = Message(Error(code=draw(st.integers(0, 10)), reason=draw(st.text(max_size=200))), reply_to=_request())
    elif kind == "keys":
        arrays = {k: a for k, a in content.array_records[P.ARRAYS].items()}
        if draw(st.booleans()):
            arrays.pop(draw(st.sampled_from(sorted(arrays))))
        else:
            arrays[draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in GLOBAL))] = Array(np.zeros(2))
        content[P.ARRAYS] = ArrayRecord(array_dict=arrays)
    elif kind == "packed":  # the packed wire form (fedecg.wire) with its layout or its data tampered with
        rec = to_record({k: v + 0.1 for k, v in GLOBAL.items()})
        what = draw(st.sampled_from(["layout-bytes", "layout-json", "data", "extra"]))
        if what == "layout-bytes":
            rec[LAYOUT] = Array(np.frombuffer(draw(st.binary(min_size=1, max_size=64)), dtype=np.uint8).copy())
        elif what == "layout-json":
            entries = [[k, list(v.shape), v.dtype.name] for k, v in GLOBAL.items()]
            i = draw(st.integers(0, len(entries) - 1))
            entries[i][draw(st.integers(0, 2))] = draw(st.one_of(
                st.text(max_size=8), st.lists(st.integers(-3, 9), max_size=3), st.integers(), st.none()))
            if entries == [[k, list(v.shape), v.dtype.name] for k, v in GLOBAL.items()]:
                entries.append(entries[0])  # unchanged by the draw: a duplicate name instead
            rec[LAYOUT] = Array(np.frombuffer(json.dumps(entries).encode(), dtype=np.uint8).copy())
        elif what == "data":
            flat = np.concatenate([v.reshape(-1) for v in GLOBAL.values()])
            rec[PACKED + "float32"], _ = _array_mutation(draw, "w", ref=flat)
        else:
            rec[draw(st.text(min_size=1, max_size=20))] = Array(np.zeros(2, np.float32))
        content[P.ARRAYS] = rec
    elif kind == "hostile":
        return _Hostile(), True
    elif kind == "content-junk":
        msg._content = draw(JUNK)
    return msg, True


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_replies())
def test_no_malformed_reply_escapes_check_reply(case):
    msg, must_reject = case
    counts = ExampleCounts(1e6, {"site-0": 10})
    v = check_reply(msg, GLOBAL, max_update_norm=10.0, counts=counts)
    assert isinstance(v, Verdict)
    assert not v.accepted, v
    assert v.reason and len(v.reason) < 400


@pytest.mark.parametrize("mutate, reason", [
    (lambda a: setattr(a, "stype", "torch.raw"), "serialization type"),
    (lambda a: setattr(a, "data", b"not an npy file at all"), "do not decode"),
    (lambda a: setattr(a, "data", _npy(np.zeros(7, np.float32))), "declared shape"),
])
def test_the_reproduced_crashes_are_now_rejections(mutate, reason):
    msg = _good()
    mutate(msg.content.array_records[P.ARRAYS]["w"])
    v = check_reply(msg, GLOBAL, 10.0)
    assert not v.accepted and reason in v.reason


def test_reasons_never_echo_text_the_site_chose():
    msg = _good()
    msg.content.metric_records[P.METRICS]["Jane Doe 1961-02-03 MRN 0042"] = 1.0
    v = check_reply(msg, GLOBAL, 10.0)
    assert not v.accepted and "Jane" not in v.reason
    msg = Message(Error(code=2, reason="ValueError: scp_codes {'Jane Doe, born 1961-02-03, MRN 0042': 1}"),
                  reply_to=_request())
    v = check_reply(msg, GLOBAL, 10.0)
    assert not v.accepted and "Jane" not in v.reason and "withheld" in v.reason
    allowed = Message(Error(code=2, reason=P.error_reason("data")), reply_to=_request())
    assert check_reply(allowed, GLOBAL, 10.0).reason == f"site error: data: {P.ERROR_MESSAGES['data']}"


def test_a_node_cannot_take_another_sites_name():
    names: dict[int, str] = {}
    a, b = _good(site="site-0", node=1), _good(site="site-0", node=2)
    sites, problems = attribute_replies([a, b], names)
    assert sites[0] == "site-0" and sites[1] != "site-0"
    assert 1 in problems and "another node" in problems[1]
    bad = _good(site="../../etc/passwd", node=3)
    sites, problems = attribute_replies([bad], names)
    assert sites == ["node-3"]


# ---- the federation survives a site whose replies never decode ---------------------------------------------

BASE = {
    "name": "t", "rounds": 2, "seed": 7, "partition": {"by": "site", "min_records": 1, "tail": "pool"},
    "model": {"preset": "tiny"}, "train": {"local_steps": 1, "batch_size": 4, "lr": 0.001, "eval_batches": 1},
    "dp": {"enabled": False}, "strategy": {"name": "fedavg", "min_train_nodes": 1, "min_available_nodes": 1},
    "output": {"synthesize": 0},
    "site_policy": {"dp_required": False},  # the sites' own policy: these runs train without DP-SGD
}


def _prepare(tmp_path, dataset, name="run", rounds=1, **strategy):
    from ptbxl.partition import Manifest
    from server.prepare import prepare_run

    scen = json.loads(json.dumps(BASE))
    scen["strategy"].update(strategy)
    scen["rounds"] = rounds
    scen["dataset"] = str(dataset)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scen))
    rd = prepare_run(path, [], tmp_path / name, partition=True)
    return rd, len(Manifest.load(rd.manifest_path).clients)


def _run(rd, n, **grid_kw):
    from client.app import app as client_app
    from server.loop import ServerSettings, run_federation
    from simulations.inprocess import InProcessGrid
    from simulations.runner import simulated_node_configs

    configs = simulated_node_configs(rd)  # each simulated node's own config (its site policy), as the runner does
    grid_kw.setdefault("node_config", lambda i: configs[i])
    return run_federation(InProcessGrid(client_app, n, **grid_kw),
                          ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True))


def _torch_raw(nid, reply):
    """Node 1 answers with arrays of another serialization type (and its evaluate replies carry a list)."""
    if nid != 1 or reply.has_error():
        return reply
    if P.ARRAYS in reply.content.array_records:
        for a in reply.content.array_records[P.ARRAYS].values():
            a.stype = "torch.raw"
    else:
        reply.content[P.METRICS] = MetricRecord({P.NUM_EXAMPLES: [1.0, 2.0], "val-loss": [0.1]})
    return reply


class _Crash(Exception):
    pass


def test_a_site_sending_torch_raw_arrays_is_rejected_and_the_run_completes_and_resumes(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl, rounds=2)
    calls = {"n": 0}

    def crash_in_round_2(nid, reply):
        calls["n"] += 1
        if calls["n"] > 2 * n:  # the server dies in round 2
            raise _Crash("server killed")
        return _torch_raw(nid, reply)

    with pytest.raises(_Crash):
        _run(rd, n, tamper=crash_in_round_2)
    rows = rd.metrics()
    bad = [m for m in rows[0]["sites"].values() if m["status"] == "rejected"]
    assert len(bad) == 1 and "serialization type" in bad[0]["reason"]
    assert rows[0]["server"]["accepted"] == n - 1
    _run(rd, n, tamper=_torch_raw)  # resume: the same site breaks again, the run completes
    assert [r["round"] for r in rd.metrics()] == [1, 2]
    status = rd.status()
    assert status["status"] == "completed"
    assert list(status["failed_sites"]) == [bad_site(rows[0])] and status["failed_sites"][bad_site(rows[0])][
        "rounds"] == [1, 2]


def bad_site(row: dict) -> str:
    return next(s for s, m in row["sites"].items() if m["status"] == "rejected")


# ---- part 2: counts capped, robust aggregation ---------------------------------------------------------------


def test_claimed_counts_are_capped_at_the_registered_count():
    sim = ExampleCounts(1e6, {"site-0": 40})
    v = check_reply(_good(n=1e15), GLOBAL, 10.0, counts=sim)
    assert v.accepted and v.num_examples == 40 and "capped to 40" in v.note
    assert not check_reply(_good(site="site-9"), GLOBAL, 10.0, counts=sim).accepted  # not in the manifest
    dep = ExampleCounts(1000)  # deployment: the first count, within the configured maximum
    v = check_reply(_good(n=1e15), GLOBAL, 10.0, counts=dep)
    assert v.num_examples == 1000
    dep2 = ExampleCounts(1e6)
    dep2.admit("site-0", 30)
    assert check_reply(_good(n=1e15), GLOBAL, 10.0, counts=dep2).num_examples == 30
    assert check_reply(_good(n=20), GLOBAL, 10.0, counts=dep2).num_examples == 20


def test_parse_robust():
    assert parse_robust("none") == RobustRule("none")
    assert parse_robust("median").combines
    assert parse_robust("trimmed-mean:0.2") == RobustRule("trimmed-mean", 0.2)
    assert parse_robust("norm-bound:5") == RobustRule("norm-bound", 5.0)
    for bad in ("mean", "trimmed-mean", "trimmed-mean:0.5", "norm-bound:0", "median:3", "norm-bound:x"):
        with pytest.raises(FedECGError, match="strategy.robust"):
            parse_robust(bad)


def _honest_and_malicious(seed: int = 0, n_honest: int = 4):
    rng = np.random.default_rng(seed)
    ref = {"w": rng.normal(size=(40, 8)).astype(np.float32), "b": rng.normal(size=8).astype(np.float32)}
    honest = [{k: (v + 0.01 * rng.normal(size=v.shape)).astype(np.float32) for k, v in ref.items()}
              for _ in range(n_honest)]
    mean_update = {k: np.mean([h[k] - ref[k] for h in honest], axis=0) for k in ref}
    attacks = {
        "scaled": {k: ref[k] + 1000 * mean_update[k] for k in ref},
        "sign-flip": {k: ref[k] - 1000 * mean_update[k] for k in ref},
        "huge-value": {k: np.full_like(v, 1e6) for k, v in ref.items()},
    }
    return ref, honest, attacks


def _honest_spread(honest, ref) -> float:
    """‖max_honest − min_honest‖₂ over all coordinates: the stated bound on robust − honest-mean."""
    return float(np.sqrt(sum(np.sum((np.max([h[k] for h in honest], 0).astype(np.float64)
                                     - np.min([h[k] for h in honest], 0)) ** 2) for k in ref)))


def _msg(w, n, node):
    content = RecordDict({P.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in w.items()}),
                          P.METRICS: MetricRecord({P.NUM_EXAMPLES: float(n)}),
                          P.SITE_INFO: ConfigRecord({"site": f"site-{node}", "status": "ok", "message": ""})})
    return Message(content=content, reply_to=_request(node))


@pytest.mark.parametrize("rule", ["median", "trimmed-mean:0.2"])
@pytest.mark.parametrize("attack", ["scaled", "sign-flip", "huge-value"])
def test_robust_rules_keep_one_malicious_site_within_the_honest_spread(rule, attack):
    from flwr.serverapp.strategy import FedAvg

    ref, honest, attacks = _honest_and_malicious()
    sites = [*honest, attacks[attack]]
    counts = [10, 20, 30, 40, 1e15]  # the attacker also claims a huge count (weights are ignored by the rule)
    accepted = [(f"site-{i}", _msg(w, n, i + 1), Verdict(f"site-{i}", True, num_examples=min(n, 50)))
                for i, (w, n) in enumerate(zip(sites, counts))]
    replies = aggregation_replies(parse_robust(rule), accepted, ref)
    agg, _ = FedAvg().aggregate_train(1, replies)
    out = {k: a.numpy() for k, a in agg.items()}
    honest_mean = {k: np.mean([h[k] for h in honest], axis=0) for k in ref}
    distance = update_norm(out, honest_mean)
    bound = _honest_spread(honest, ref)
    assert distance <= bound + 1e-5, (distance, bound)
    # for contrast: plain FedAvg with the (capped) counts is moved far beyond it
    plain, _ = FedAvg().aggregate_train(1, aggregation_replies(RobustRule("none"), accepted, ref))
    assert update_norm({k: a.numpy() for k, a in plain.items()}, honest_mean) > 10 * bound


def test_norm_bound_clips_each_update():
    ref, honest, attacks = _honest_and_malicious()
    clipped = clip_update(attacks["scaled"], ref, 0.5)
    assert update_norm(clipped, ref) == pytest.approx(0.5, rel=1e-4)
    assert clip_update(honest[0], ref, 100.0) is honest[0]
    with pytest.raises(FedECGError):
        combine(RobustRule("none"), [honest[0]], ref)  # none / norm-bound do not combine
    assert update_norm(combine(RobustRule("trimmed-mean", 0.0), honest, ref),
                       {k: np.mean([h[k] for h in honest], axis=0) for k in ref}) < 1e-5  # β = 0: the mean


def test_relative_norm_bound_rejects_an_outlier_among_three_or_more():
    assert relative_norm_outliers({"a": 0.1, "b": 0.12, "c": 87.5}, 10.0) == {
        "c": "update norm 87.5 exceeds 10 x the round's median update norm 0.12"}
    assert relative_norm_outliers({"a": 0.1, "c": 87.5}, 10.0) == {}  # two replies: no median to trust
    assert relative_norm_outliers({"a": 0.1, "b": 0.1, "c": 87.5}, 0.0) == {}  # off
    verdicts = [Verdict("a", True, update_norm=0.1), Verdict("b", True, update_norm=0.11),
                Verdict("c", True, update_norm=87.5), Verdict("d", True, update_norm=0.09)]
    screen_round(verdicts, {3: "claims site name 'a', which another node already uses"}, 10.0)
    assert [v.accepted for v in verdicts] == [True, True, False, False]


def _attacker(scale: float, count: float):
    """Node 1 sends global + scale × its honest update and claims ``count`` examples."""
    state = {}

    def tamper(nid, reply):
        if nid != 1 or reply.has_error() or P.ARRAYS not in reply.content.array_records:
            return reply
        g = state["global"]
        arrays = {k: (g[k] + scale * (a - g[k])).astype(g[k].dtype)
                  for k, a in from_record(reply.content.array_records[P.ARRAYS]).items()}
        reply.content[P.ARRAYS] = ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
        reply.content.metric_records[P.METRICS][P.NUM_EXAMPLES] = float(count)
        return reply

    return state, tamper


def _honest_round1(tmp_path, demo_ptbxl):
    """The honest replies of round 1 (weights per site) and the global weights they started from."""
    from server.loop import initial_state

    rd, n = _prepare(tmp_path, demo_ptbxl, "honest", rounds=1)
    outgoing: list[Message] = []
    _run(rd, n, outgoing=outgoing)
    honest = [from_record(m.content.array_records[P.ARRAYS])
              for m in outgoing if not m.has_error() and P.ARRAYS in m.content.array_records]
    return initial_state(rd.read_config()), honest


@pytest.mark.parametrize("rule", ["median", "trimmed-mean:0.25"])
def test_one_malicious_site_in_a_federation_cannot_take_over_the_model(tmp_path, demo_ptbxl, rule):
    g, honest = _honest_round1(tmp_path, demo_ptbxl)
    assert len(honest) >= 4
    state, tamper = _attacker(-20.0, 1e15)  # sign flip, 20× scaled, a huge count
    state["global"] = g
    rd, n = _prepare(tmp_path, demo_ptbxl, "attacked", rounds=1, robust=rule, relative_norm_factor=0)
    final = _run(rd, n, tamper=tamper)
    row = rd.metrics()[0]
    attacked = row["sites"][min(row["sites"])]  # node 1 = the first partition
    assert attacked["status"] == "accepted" and "capped to" in attacked["note"]
    spread = _honest_spread(honest, g)  # over every site's honest reply (node 1's included)
    honest_mean = {k: np.mean([h[k] for h in honest], axis=0) for k in g}
    assert update_norm(final, honest_mean) <= spread + 1e-5


def test_without_robust_rule_the_relative_bound_and_the_cap_stop_the_reproduced_attack(tmp_path, demo_ptbxl):
    g, honest = _honest_round1(tmp_path, demo_ptbxl)
    state, tamper = _attacker(500.0, 1e15)  # the reproduced attack: a scaled update with a huge count
    state["global"] = g
    rd, n = _prepare(tmp_path, demo_ptbxl, "reproduced", rounds=1)
    final = _run(rd, n, tamper=tamper)
    row = rd.metrics()[0]
    first = row["sites"][min(row["sites"])]
    assert first["status"] == "rejected" and "median update norm" in first["reason"]
    honest_others = {k: np.mean([h[k] for h in honest[1:]], axis=0) for k in g}
    assert update_norm(final, g) < 2 * update_norm(honest_others, g)
    # relative bound off: the update is accepted but its huge count is capped at the manifest's count
    rd, n = _prepare(tmp_path, demo_ptbxl, "capped", rounds=1, relative_norm_factor=0)
    _run(rd, n, tamper=tamper)
    first = rd.metrics()[0]["sites"][min(rd.metrics()[0]["sites"])]
    from ptbxl.partition import Manifest

    registered = len(Manifest.load(rd.manifest_path).clients[0].train)
    assert first["status"] == "accepted" and f"capped to {registered}" in first["note"]
