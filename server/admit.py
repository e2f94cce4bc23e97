"""One server-side step per round for the sites' replies: validate every train reply, screen the round, admit
the accepted ones (example-count caps), and turn what every site reported into the round's metrics rows and the
run's privacy ledger (rejected replies too: a site that trained has paid its privacy cost).

server.loop calls :func:`admit_replies` then aggregates ``accepted``, and :func:`update_ledger` with the
round's ``site_metrics``; the checks themselves are server.validation's.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from fedecg import protocol as P
from privacy.ledger import DIGEST_RE, LedgerEntry, PrivacyLedger, SiteLedger
from server.validation import ExampleCounts, Verdict, check_reply, reported_metrics, screen_round

log = logging.getLogger(__name__)

# what a site reports about the model it received (strategy.evaluate: with-train); not part of its train row
VAL_KEYS = ("val-loss", "val-eps-loss", "val-mel-loss", "val-examples")



@dataclass(frozen=True)
class Admitted:
    """A round's replies after :func:`admit_replies`: one verdict per reply (in reply order), the accepted
    (site, message, verdict) triples sorted by site, and each site's metrics row."""

    verdicts: list[Verdict]
    accepted: list[tuple]
    site_metrics: dict[str, dict]


def admit_replies(replies, sites: list[str], problems, weights: dict[str, np.ndarray], cfg, counts: ExampleCounts,
                  rnd: int) -> Admitted:
    """Check every reply against the global ``weights`` (keys, shapes, dtypes, finiteness, update norm, the
    trainable subset, example counts), screen the round for outliers and attribution ``problems``, admit the
    accepted sites' example counts, log each rejection, and build the metrics rows."""
    verdicts = [check_reply(m, weights, cfg.strategy.max_update_norm, s, counts=counts,
                            trainable=cfg.train.trainable) for m, s in zip(replies, sites)]
    screen_round(verdicts, problems, cfg.strategy.relative_norm_factor)
    accepted = sorted(((s, m, v) for s, m, v in zip(sites, replies, verdicts) if v.accepted),
                      key=lambda smv: smv[0])
    for v in verdicts:
        if v.accepted:
            counts.admit(v.site, v.num_examples)
    for v in verdicts:
        if not v.accepted:
            log.warning("round %d: rejected reply from %s: %s", rnd, v.site, v.reason)
    return Admitted(verdicts, accepted, _site_train_metrics(replies, verdicts))


def _site_train_metrics(replies, verdicts: list[Verdict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for msg, v in zip(replies, verdicts):
        entry: dict = {"status": "accepted" if v.accepted else "rejected"}
        if not v.accepted:
            entry["reason"] = v.reason
        if v.note:
            entry["note"] = v.note
        if np.isfinite(v.update_norm):
            entry["update_norm"] = v.update_norm
        entry.update({k: v for k, v in reported_metrics(msg).items()  # allow-listed finite scalars only;
                      if k not in VAL_KEYS})  # a with-train reply's val-* describe the previous round's model
        digest = _reported_digest(msg)
        if digest is not None:
            entry[P.LEDGER_DIGEST] = digest
        out[v.site] = entry
    return dict(sorted(out.items()))



def _reported_digest(msg) -> str | None:
    """The site's ledger digest (site-info ``ledger-digest``) when it is exactly a sha256 hex string, else None."""
    try:
        if msg.has_error():
            return None
        digest = msg.content.config_records.get(P.SITE_INFO, {}).get(P.LEDGER_DIGEST)
        return digest if isinstance(digest, str) and DIGEST_RE.fullmatch(digest) else None
    except Exception:  # noqa: BLE001
        return None




def update_ledger(ledger: PrivacyLedger, rnd: int, site_metrics: dict[str, dict], n_sites: int = 0,
                   client_dp_noise: float = 0.0) -> PrivacyLedger:
    """The ledger with what each DP site reported this round (rejected replies too: the site trained, the privacy
    cost is real): this round's (σ, q, steps) plus the site's own cumulative ε, steps and ledger digest for the
    run. Steps the site paid that never reached this ledger (a lost reply, a round re-run after a resume: its
    dp-steps exceed what the history holds) become a ``gap`` entry at the run's smallest σ and largest q, so ε is
    never lower than the site's own (privacy.accounting.reconcile checks it all)."""
    sites = dict(ledger.sites)
    for site, m in site_metrics.items():
        if m.get("dp-enabled") != 1.0 or "dp-noise-multiplier" not in m:
            continue
        if site not in sites:
            sites[site] = SiteLedger(site=site, delta=m.get("delta"), history=(),
                                     n_records=int(m.get("dp-units", m.get(P.NUM_EXAMPLES, 0))),
                                     max_grad_norm=m.get("dp-max-grad-norm"), accountant=ledger.accountant or "rdp",
                                     unit="patient" if m.get("dp-patient-level") == 1.0 else "record")
        steps, reported = int(m.get("steps", 0)), m.get("dp-steps")
        missing = 0 if reported is None else int(reported) - steps - sites[site].steps
        new = []
        if missing > 0:
            log.warning("round %d: site %s paid %d DP-SGD steps in this run that never reached the server (a lost "
                        "reply or a round re-run after a resume); accounted at the run's smallest sigma and "
                        "largest q", rnd, site, missing)
            new.append(LedgerEntry(round=rnd, noise_multiplier=m.get("dp-run-min-noise-multiplier",
                                                                     m["dp-noise-multiplier"]),
                                   sample_rate=m.get("dp-run-max-sample-rate", m["dp-sample-rate"]), steps=missing,
                                   gap=True))
        new.append(LedgerEntry(round=rnd, noise_multiplier=m["dp-noise-multiplier"], sample_rate=m["dp-sample-rate"],
                               steps=steps, epsilon=m.get("epsilon"), digest=m.get(P.LEDGER_DIGEST),
                               reported_steps=None if reported is None else int(reported)))
        sites[site] = sites[site].extended(new)
    cl = ledger.client_level
    if cl is not None and n_sites > 0:  # one Gaussian mechanism per round over the federation's sites
        cl = dataclasses.replace(cl, n_records=n_sites, delta=1.0 / n_sites).extended(
            [LedgerEntry(round=rnd, noise_multiplier=client_dp_noise,
                         sample_rate=min(1.0, len(site_metrics) / n_sites), steps=1)])
    return dataclasses.replace(ledger, sites=sites, client_level=cl)
