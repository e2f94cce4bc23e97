"""Server-side validation of site replies before aggregation.

:func:`check_reply` never raises: whatever a reply holds (Flower error, wrong record types, Arrays of another
serialization type or with bytes that are not a valid ``.npy``, wrong dtype or shape, NaN/Inf, unknown or
non-finite metrics, byte strings where strings belong) it returns a :class:`Verdict`; a rejected reply carries
a reason and the round goes on with the others. A reply is rejected if it carries

- a Flower error (its reason is kept only when it is one of the sites' allow-listed error messages
  (``fedecg.protocol.ERROR_MESSAGES``) or comes from Flower's own machinery, see :func:`error_reason`),
- a refusal (privacy budget spent, too few valid records),
- no arrays, or arrays whose names / serialization / dtypes / shapes differ from the global model's, or that do
  not decode, or NaN or Inf anywhere,
- a metric that is not allow-listed (``fedecg.protocol.ALLOWED_METRICS``) or not a finite number,
- a non-positive or non-finite example count,
- an update whose L2 norm ``||w_site - w_global||`` exceeds ``strategy.max_update_norm``.

Reasons are built from the server's own strings (the global model's array names, allow-listed metric names,
validated site names) and numbers, never from text a site chose. The example count a site claims is capped at
its registered record count (:class:`ExampleCounts`): its manifest train count in a simulation, else the first
count it reported, and never more than ``strategy.max_examples``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedecg import protocol as P
from fedecg.specs import parse_trainable
from fedecg.wire import WireError, from_record
from fedecg.wire import printable as _printable
from server.robust import relative_norm_outliers
from sssd.peft import expand_reply, reply_reference, shapes_of


@dataclass
class Verdict:
    site: str
    accepted: bool
    reason: str = ""
    update_norm: float = float("nan")
    num_examples: float = 0.0  # the weight used in aggregation: the claimed count, capped
    note: str = ""  # e.g. "num-examples 1e+15 capped to 40 (...)"
    arrays: dict | None = None  # an accepted reply's full model (a partial one, train.trainable, expanded)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DATA_REFUSAL = P.DATA_REFUSAL

# Error codes that Flower's own machinery sets (the SuperLink / SuperNode, not our ClientApp's code): their
# reasons are Flower's texts and are kept (last line, shortened). Codes 0 (unknown) and 2 (exception raised in the app)
# carry whatever an exception said and are kept only when allow-listed.
FLOWER_ERROR_CODES = {1: "client app failed to load", 3: "message unavailable", 4: "reply message unavailable",
                      5: "node unavailable", 6: "mod failed precondition", 7: "invalid FAB",
                      8: "client app crashed"}


def short_reason(reason: str, limit: int = 300) -> str:
    """The last meaningful line of a (possibly Ray-wrapped) traceback, without colour codes."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(reason)).splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(lines) if "Message:" in ln or "Error" in ln), lines[-1] if lines else "")
    return msg[:limit]


def error_reason(error) -> str:
    """What the server records about a site's error reply: an allow-listed site error (``fedecg/<class>:
    <fixed message>``), a Flower infrastructure error (code + Flower's own text, shortened), or only that a
    reason was withheld (an exception text could hold patient data or local paths)."""
    try:
        code = int(error.code)
        reason = error.reason if isinstance(error.reason, str) else ""
    except Exception:  # noqa: BLE001 - a malformed Error object
        return "site error (malformed error record)"
    allowed = P.parse_error_reason(reason)
    if allowed is not None:
        return f"site error: {allowed[0]}: {allowed[1]}"
    if code in FLOWER_ERROR_CODES:
        return f"site error: {short_reason(reason, 200) or FLOWER_ERROR_CODES[code]}"
    return (f"site error (code {code}): reason withheld, not an allow-listed site error message "
            f"({len(reason)} characters); details are in the site's local log")


def valid_site_name(value) -> str | None:
    """``value`` if it is a plausible public site name (letters, digits, ``._-``, ≤ 64 characters), else None."""
    return value if isinstance(value, str) and SITE_NAME.match(value) else None


def _claimed_name(msg) -> str | None:
    try:
        if msg.has_error():
            return None
        info = msg.content.config_records.get(P.SITE_INFO)
        return None if info is None else valid_site_name(info.get("site"))
    except Exception:  # noqa: BLE001 - whatever the reply holds, attribution must not fail
        return None


def _node_of(msg, sent_to: dict | None) -> int:
    try:
        node = int(msg.metadata.src_node_id)
        reply_to = msg.metadata.reply_to_message_id
        if sent_to and reply_to and reply_to in sent_to:
            node = int(sent_to[reply_to])
        return node
    except Exception:  # noqa: BLE001
        return -1


def site_of(msg, names: dict[int, str] | None = None, sent_to: dict[str, int] | None = None) -> str:
    """The public site name of a reply. Error replies carry no site-info, and those made by the SuperLink
    (e.g. "node unavailable") come from the SuperLink's id: attribute them to the node the request went to
    (``sent_to``: request message id → destination node) and name it as it named itself before (``names``).
    A name that is not a plausible site name, or that another node already uses, is not taken."""
    node = _node_of(msg, sent_to)
    claimed = _claimed_name(msg)
    if claimed is not None:
        taken = names is not None and any(n != node and s == claimed for n, s in names.items())
        if not taken:
            if names is not None:
                names[node] = claimed
            return claimed
    return (names or {}).get(node, f"node-{node}")


def attribute_replies(replies, names: dict[int, str], sent_to: dict[str, int] | None = None
                      ) -> tuple[list[str], dict[int, str]]:
    """Site name per reply (unique within the round) and the problems found (reply index → reason): a reply
    claiming a name another node already uses, or a second reply under one name, is named ``node-<id>`` and
    must be rejected."""
    sites, problems, used = [], {}, set()
    for i, msg in enumerate(replies):
        node = _node_of(msg, sent_to)
        claimed = _claimed_name(msg)
        site = site_of(msg, names, sent_to)
        if claimed is not None and site != claimed:
            problems[i] = f"claims site name {claimed!r}, which another node already uses"
        if site in used:
            problems.setdefault(i, f"a second reply under site name {site!r} in this round")
            site = f"node-{node}#{i}"
        used.add(site)
        sites.append(site)
    return sites, problems


class ExampleCounts:
    """The example count each site may claim: simulation, its manifest train count (a site name outside the
    manifest is rejected); deployment, the first count it reported; never more than ``max_examples``.
    ``first_seen`` (deployment) is saved in every checkpoint so a resumed run keeps the sites' first counts."""

    def __init__(self, max_examples: float, registered: dict[str, int] | None = None,
                 first_seen: dict[str, float] | None = None) -> None:
        self.max_examples = float(max_examples)
        self.registered = dict(registered) if registered else None
        self.first_seen = {str(k): float(v) for k, v in (first_seen or {}).items()}

    def limit(self, site: str) -> float | None:
        """The cap for ``site``; None = a site the simulation's manifest does not know."""
        if self.registered is not None:
            n = self.registered.get(site)
            return None if n is None else float(min(n, self.max_examples))
        return min(self.first_seen.get(site, self.max_examples), self.max_examples)

    def admit(self, site: str, n: float) -> None:
        """Remember a deployment site's first accepted count (capped)."""
        if self.registered is None and site not in self.first_seen:
            self.first_seen[site] = float(min(n, self.max_examples))


def check_reply(msg, global_arrays: dict[str, np.ndarray], max_update_norm: float, site: str | None = None,
                *, counts: ExampleCounts | None = None, trainable: str = "all") -> Verdict:
    """Validate one train reply; never raises (module docstring). Under a partial ``trainable`` (sssd.peft) the
    reply must carry exactly the trained parameters or LoRA factors; the accepted verdict holds the full model
    it stands for (``arrays``), and the update norm is that model's distance to the global one."""
    if site is None:
        try:
            site = site_of(msg)
        except Exception:  # noqa: BLE001
            site = "unknown"
    try:
        return _check(msg, global_arrays, max_update_norm, site, counts, parse_trainable(trainable))
    except Exception as exc:  # noqa: BLE001 - anything not foreseen below still only rejects the reply
        return Verdict(site, False, f"malformed reply ({type(exc).__name__})")


def _check(msg, global_arrays, max_update_norm, site, counts, spec) -> Verdict:
    if msg.has_error():
        return Verdict(site, False, error_reason(msg.error))
    content = msg.content
    if not isinstance(content, RecordDict):
        return Verdict(site, False, "reply content is not a RecordDict")
    extra = [k for k in content.keys() if k not in (P.ARRAYS, P.METRICS, P.SITE_INFO)]
    if extra:
        return Verdict(site, False, f"reply carries {len(extra)} unexpected record(s)")
    info = content.get(P.SITE_INFO)
    if info is not None and not isinstance(info, ConfigRecord):
        return Verdict(site, False, f"{P.SITE_INFO!r} is not a ConfigRecord")
    status = info.get("status") if info is not None else None
    if status == P.STATUS_REFUSED:
        message = info.get("message", "")
        message = message if isinstance(message, str) else ""
        return Verdict(site, False, f"refused: {_printable(message, 300)}")
    metrics = content.get(P.METRICS)
    if not isinstance(metrics, MetricRecord):
        return Verdict(site, False, f"no {P.METRICS!r} MetricRecord")
    for name, value in metrics.items():
        if name not in P.ALLOWED_METRICS:
            return Verdict(site, False, f"metric not allow-listed ({len(str(name))}-character name)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return Verdict(site, False, f"metric {name!r} is not a finite number")
    if P.NUM_EXAMPLES not in metrics:
        return Verdict(site, False, f"no {P.NUM_EXAMPLES!r} metric")
    n = float(metrics[P.NUM_EXAMPLES])
    if n <= 0:
        return Verdict(site, False, f"bad {P.NUM_EXAMPLES} {n!r}")
    weight, note = n, ""
    if counts is not None:
        cap = counts.limit(site)
        if cap is None:
            return Verdict(site, False, f"site {site!r} is not a client of this run's manifest")
        if n > cap:
            weight = cap
            note = f"{P.NUM_EXAMPLES} {n:.4g} capped to {cap:.4g} (the site's registered record count)"
    arrays = content.get(P.ARRAYS)
    if arrays is None:
        return Verdict(site, False, "no arrays in reply")
    if not isinstance(arrays, ArrayRecord):
        return Verdict(site, False, f"{P.ARRAYS!r} is not an ArrayRecord")
    try:
        decoded = from_record(arrays, reply_reference(shapes_of(global_arrays), spec))
    except WireError as exc:
        return Verdict(site, False, str(exc))
    for name, value in decoded.items():
        if not np.all(np.isfinite(value)):
            return Verdict(site, False, f"non-finite values (NaN/Inf) in {name}")
    full = expand_reply(decoded, global_arrays, spec)
    sq = 0.0
    for name, ref in global_arrays.items():
        value = full[name]
        if not np.all(np.isfinite(value)):  # a LoRA product can overflow float32
            return Verdict(site, False, f"non-finite values (NaN/Inf) in {name} after merging the reply")
        sq += float(np.sum((value.astype(np.float64) - ref.astype(np.float64)) ** 2))
    norm = math.sqrt(sq)
    if not math.isfinite(norm):
        return Verdict(site, False, "update norm is not finite", norm)
    if norm > max_update_norm:
        return Verdict(site, False, f"update norm {norm:.3g} exceeds max_update_norm {max_update_norm:.3g}", norm)
    return Verdict(site, True, "", norm, weight, note, arrays=full)


def screen_round(verdicts: list[Verdict], problems: dict[int, str], relative_norm_factor: float) -> None:
    """Round-level checks after the per-reply ones (in place): replies with an attribution problem
    (:func:`attribute_replies`) are rejected, then, with ≥ 3 accepted replies, any update whose norm exceeds
    ``relative_norm_factor`` × the round's median update norm (server.robust.relative_norm_outliers)."""
    for i, reason in problems.items():
        verdicts[i].accepted, verdicts[i].reason = False, reason
    norms = {v.site: v.update_norm for v in verdicts if v.accepted}
    outliers = relative_norm_outliers(norms, relative_norm_factor)
    for v in verdicts:
        if v.accepted and v.site in outliers:
            v.accepted, v.reason = False, outliers[v.site]


def site_problems(rows: list[dict]) -> dict:
    """From a run's metrics.jsonl rows: ``failed_sites`` (site → {rounds, reason}) for every site whose train
    reply was rejected in some round (a refusal by the site's privacy policy, e.g. its budget is spent, is the
    policy working, not a failure; a refusal for too few valid records is a failure),
    and ``invalid_records`` (site → the largest count of records it skipped as invalid)."""
    failed: dict[str, dict] = {}
    invalid: dict[str, int] = {}
    for row in rows:
        for site, m in (row.get("sites") or {}).items():
            if m.get("records-invalid"):
                invalid[site] = max(invalid.get(site, 0), int(m["records-invalid"]))
            reason = str(m.get("reason", ""))
            policy = reason.startswith("refused:") and not reason.startswith(f"refused: {DATA_REFUSAL}")
            if m.get("status") != "rejected" or policy:
                continue
            entry = failed.setdefault(site, {"rounds": [], "reason": reason})
            entry["rounds"].append(row.get("round"))
            entry["reason"] = reason
    return {"failed_sites": dict(sorted(failed.items())), "invalid_records": dict(sorted(invalid.items()))}


def reported_metrics(msg) -> dict[str, float]:
    """The allow-listed, finite scalar metrics of a reply (train or evaluate), as floats; {} for an error reply
    or anything malformed. Never raises: this is what reaches metrics.jsonl and the privacy ledger."""
    try:
        if msg.has_error():
            return {}
        metrics = msg.content.get(P.METRICS)
        if not isinstance(metrics, MetricRecord):
            return {}
        out = {}
        for name, value in metrics.items():
            if (name in P.ALLOWED_METRICS and not isinstance(value, bool) and isinstance(value, (int, float))
                    and math.isfinite(value)):
                out[name] = float(value)
        return out
    except Exception:  # noqa: BLE001
        return {}
