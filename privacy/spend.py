"""A site's privacy bookkeeping for one training round, before and after it trains (the ClientApp's privacy step).

:func:`pay_before_training`: under the site ledger's lock, the site's own policy (privacy.policy.decide)
refuses the round, or records its planned DP-SGD spend durably (fsync) *before* any training starts
(pessimistic: a crash during training leaves the spend recorded), or marks it non-private.
:func:`confirm_after_training` then records what the round actually spent and refuses to let an update leave
when the recorded spend has vanished. :func:`refusal_metrics` / :func:`spend_metrics` are the allow-listed
numbers the reply carries (fedecg.protocol). The ClientApp only calls these; the maths and the ledger are here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fedecg import protocol as P
from fedecg.errors import FedECGError
from privacy.accounting import ledger_epsilon
from privacy.ledger import LedgerEntry, LedgerStore, LifetimeLedger
from privacy.policy import Decision, SitePolicy, decide

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paid:
    """What :func:`pay_before_training` decided and wrote: the decision, the ledger as it now stands, and the
    (round, recorded) key of the recorded spend (None unless the round is private)."""

    decision: Decision
    ledger: LifetimeLedger
    recorded: tuple[int, Any] | None


def pay_before_training(store: LedgerStore, state_copy: dict | None, policy: SitePolicy, cfg, n_units: int,
                        run_name: str, server_round: int, site: str) -> Paid:
    """Decide the round under the site's own ``policy`` and write the outcome to the site's lifetime ledger
    (``store``, locked; ``state_copy`` is the copy Flower's context carried, for recovery) before training."""
    recorded = None
    with store.open(state_copy) as ledger:  # locked; written durably (fsync) on leaving the block
        decision = decide(policy, cfg, n_units, ledger, run_name)
        if decision.refused:
            ledger.refuse(run_name, server_round, decision.refusal)
        elif decision.private:
            ledger.open_run(run_name, policy.unit, n_units, decision.delta, cfg.dp.accountant)
            # pessimistic: the planned steps are paid before training starts, whatever happens next
            entry = ledger.record(run_name, server_round, decision.noise_multiplier, decision.sample_rate,
                                  decision.steps, cfg.dp.max_grad_norm)
            recorded = (entry.round, entry.recorded)
            if entry.repeat:
                log.warning("site %s: round %d of run %s is trained (and paid) again, time %d (a server resume "
                            "or a lost reply)", site, server_round, run_name, entry.repeat + 1)
        else:
            ledger.open_run(run_name, policy.unit, n_units, policy.delta, cfg.dp.accountant)
            ledger.mark_non_private(run_name, server_round)
    return Paid(decision, ledger, recorded)


def confirm_after_training(store: LedgerStore, state_copy: dict | None, run_name: str, paid: Paid, actual,
                           site: str, server_round: int) -> tuple[LifetimeLedger, LedgerEntry]:
    """Record what a private round actually spent (``actual``: the training's DP entry) against the spend
    recorded before it. Raises FedECGError, so that no update leaves, when that spend is no longer in the ledger."""
    if paid.recorded is None:
        raise FedECGError(f"site {site}: round {server_round} of run {run_name} recorded no spend to confirm")
    with store.open(state_copy) as ledger:
        entry = ledger.mark_trained(run_name, *paid.recorded, actual=actual)
        if entry is None:
            raise FedECGError(f"site {site}: the spend of round {server_round} vanished from {store.path} "
                              "during training; not sending an update whose privacy cost is not recorded")
    return ledger, entry


def refusal_metrics(ledger: LifetimeLedger, run_name: str, policy: SitePolicy, dp_requested: bool) -> dict[str, float]:
    """The numbers a refusal reply carries: no examples, the run's ε so far at this site, its δ."""
    run = ledger.run(run_name)
    return {P.NUM_EXAMPLES: 0.0, "refused": 1.0, "dp-enabled": 1.0 if dp_requested else 0.0,
            "epsilon": ledger_epsilon(run) if run is not None else 0.0,
            "delta": run.delta if run is not None else policy.delta}


def spend_metrics(ledger: LifetimeLedger, run_name: str, entry: LedgerEntry) -> dict[str, float]:
    """The numbers a private round's reply carries: the run's ε and δ at this site, its steps, this round's
    (q, σ, C), and the run's extremes (the server checks them against its own ledger)."""
    run = ledger.run(run_name)
    return {"epsilon": ledger_epsilon(run), "delta": run.delta, "dp-steps": float(run.steps),
            "dp-sample-rate": entry.sample_rate, "dp-noise-multiplier": entry.noise_multiplier,
            "dp-max-grad-norm": entry.max_grad_norm, "dp-rounds": float(len(run.history)),
            "dp-units": float(run.n_records), "dp-patient-level": 1.0 if run.unit == "patient" else 0.0,
            "dp-run-min-noise-multiplier": min(float(e.noise_multiplier) for e in run.history),
            "dp-run-max-sample-rate": max(float(e.sample_rate) for e in run.history)}
