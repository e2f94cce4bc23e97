"""ε(δ) of DP-SGD histories with Opacus' accountants (RDP, PRV), an independent cross-check with Google's
dp-accounting (RDP, PLD), per-site budgets of a run and noise planning.

Mechanism: each DP-SGD step is a Poisson-subsampled Gaussian mechanism with sampling rate q and noise
multiplier σ (noise std σ·C on the sum of per-example gradients clipped to norm C). A history
``[(σ, q, steps), ...]`` is the adaptive composition of all steps. A site's ε(δ) covers every step that site
ran over all rounds (sequential composition within a site). Sites hold disjoint records, so a record-level
guarantee for the *released* model is the worst site's: ε_release = max_site ε_site at δ = max_site δ_site
(parallel composition; FedAvg only post-processes the noisy site updates). A patient with k records in one
site is protected at group level (k·ε for pure DP; weaker than record level); PTB-XL partitions keep a
patient inside one client.

Accountants:
- ``rdp``: Rényi DP of the subsampled Gaussian (Mironov et al. 2019), converted to (ε, δ) with the
  improved conversion of Balle et al. 2020 (Opacus ``RDPAccountant``), orders 1.1…1024.
- ``prv``: numerical composition of privacy-loss random variables (Gopi et al. 2021), Opacus
  ``PRVAccountant``; we report its *upper* bound, with ε error ≤ max(1e-3, 0.002·ε_rdp).
- cross-check (tests and ``--cross-check``): dp-accounting ``RdpAccountant`` (same orders) and
  ``PLDAccountant`` (privacy-loss distributions, discretisation 1e-4).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedecg.errors import FedECGError
from privacy.ledger import LifetimeLedger, PrivacyLedger, SiteLedger, entries_digest

# opacus (~2 s, pulls torch) and dp_accounting (~1 s) are imported where used: this module is otherwise torch-free
# and is imported by the site policy (privacy.policy.decide) and the CLI's budget and planning commands.

log = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv")
History = Sequence[tuple[float, float, int]]


def rdp_orders() -> list[float]:
    """RDP orders: Opacus' defaults (1.1…63) extended to 1024 so large ε are not clipped by the grid."""
    from opacus.accountants.rdp import RDPAccountant  # heavy: see the note at the imports

    return list(RDPAccountant.DEFAULT_ALPHAS) + list(range(64, 257, 4)) + [320, 384, 512, 768, 1024]


def _check_history(history: History) -> list[tuple[float, float, int]]:
    out = []
    for sigma, q, steps in history:
        if steps < 0 or not 0 <= q <= 1 or sigma < 0:
            raise FedECGError(f"invalid DP history entry (sigma={sigma}, q={q}, steps={steps})")
        if steps > 0 and q > 0:
            out.append((float(sigma), float(q), int(steps)))
    return out


def compute_epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """ε at ``delta`` of the composed history with Opacus' ``accountant`` (``rdp`` or ``prv``).

    Returns 0 for an empty history and ``inf`` when any step has σ = 0 (no noise: not private)."""
    if accountant not in ACCOUNTANTS:
        raise FedECGError(f"unknown accountant {accountant!r} (choose from {', '.join(ACCOUNTANTS)})")
    if not 0 < delta < 1:
        raise FedECGError(f"delta must lie in (0, 1), got {delta}")
    hist = _check_history(history)
    if not hist:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in hist):
        return math.inf
    from opacus.accountants import create_accountant  # heavy: see the note at the imports

    eps_rdp = _rdp_epsilon(hist, delta)
    if accountant == "rdp":
        return eps_rdp
    prv = create_accountant("prv")
    prv.history = list(hist)
    eps_error = max(1e-3, 2e-3 * eps_rdp)
    try:
        return float(prv.get_epsilon(delta=delta, eps_error=eps_error))
    except (ValueError, RuntimeError) as exc:  # PRV domain too large for extreme (σ, q, steps)
        log.warning("PRV accountant failed (%s); falling back to RDP", exc)
        return eps_rdp


def _rdp_epsilon(hist: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus ``RDPAccountant.get_epsilon`` (orders ``rdp_orders()``), with each (q, σ)'s per-step RDP computed
    once per process: the same arithmetic in the same order, so the same float, but a site's or a ledger's
    history of many rounds at one (σ, q) no longer recomputes the Rényi series for every entry."""
    from opacus.accountants.analysis import rdp as analysis  # heavy: see the note at the imports

    orders = rdp_orders()
    total = sum([np.asarray(_rdp_per_step(q, sigma)) * steps for sigma, q, steps in hist])
    eps, _ = analysis.get_privacy_spent(orders=orders, rdp=total, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(q: float, sigma: float) -> tuple[float, ...]:
    from opacus.accountants.analysis import rdp as analysis  # heavy: see the note at the imports

    return tuple(analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=rdp_orders()))


def dp_accounting_epsilon(history: History, delta: float, method: str = "pld") -> float:
    """Independent ε(δ) from Google's dp-accounting: ``pld`` (privacy-loss distributions) or ``rdp``."""
    import dp_accounting as dpa  # heavy: see the note at the imports
    from dp_accounting import pld, rdp

    hist = _check_history(history)
    if not hist:
        return 0.0
    if any(sigma == 0 for sigma, _, _ in hist):
        return math.inf
    event = dpa.ComposedDpEvent(
        [
            dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps)
            for sigma, q, steps in hist
        ]
    )
    if method == "pld":
        acc = pld.PLDAccountant(value_discretization_interval=1e-4)
    elif method == "rdp":
        acc = rdp.RdpAccountant(orders=rdp_orders())
    else:
        raise FedECGError(f"unknown dp-accounting method {method!r} (pld or rdp)")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # dp-accounting logs one warning per unconverged fractional order
    try:
        acc.compose(event)
        return float(acc.get_epsilon(delta))
    finally:
        logging.disable(previous)


@dataclass(frozen=True)
class SiteBudget:
    """Accounted privacy of one site (``level="record"``) or of the client-level mechanism."""

    site: str
    level: str
    n_records: int | None
    steps: int
    rounds: int
    noise_multiplier: float | None  # last round's σ (``history`` has all)
    sample_rate: float | None  # last round's q
    max_grad_norm: float | None
    delta: float
    accountant: str
    epsilon: float
    epsilons: dict[str, float] = field(default_factory=dict)  # accountant → ε
    reported_epsilon: float | None = None  # what the site itself reported last (ledger)
    history: tuple[tuple[float, float, int], ...] = ()
    recomputed_epsilon: float | None = None  # the primary accountant's ε of the ledger's history alone
    reconciliation: Reconciliation | None = None  # the ledger checked against what the site reported

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "unit": self.level,  # the privacy unit: patient | record (client: a whole site, client-level DP)
            "level": self.level,
            "epsilon": _finite(self.epsilon),
            "delta": self.delta,
            "steps": self.steps,
            "rounds": self.rounds,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "max_grad_norm": self.max_grad_norm,
            "n_records": self.n_records,
            "accountant": self.accountant,
            "epsilons": {k: _finite(v) for k, v in self.epsilons.items()},
            "reported_epsilon": self.reported_epsilon,
            "recomputed_epsilon": None if self.recomputed_epsilon is None else _finite(self.recomputed_epsilon),
            "reconciliation": None if self.reconciliation is None else self.reconciliation.to_dict(),
            "history": [{"noise_multiplier": s, "sample_rate": q, "steps": n} for s, q, n in self.history],
        }


def _finite(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


@dataclass(frozen=True)
class Reconciliation:
    """A site's history in the server's ledger checked against what the site itself reported with each reply:
    its cumulative ε for the run, its steps and its ledger digest (privacy.ledger.entries_digest).

    ``status``: ``ok`` (every report matches the history), ``upper-bound`` (the history holds ``gap`` entries,
    steps the site paid that never reached the server, accounted at the run's smallest σ and largest q: the
    recomputed ε may exceed the site's but must not fall below it), ``mismatch`` (``problems`` say where),
    ``unreported`` (the site reported nothing to check)."""

    site: str
    status: str
    problems: tuple[str, ...] = ()
    checked: int = 0  # reports checked
    gap_steps: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"

    def to_dict(self) -> dict:
        return {"status": self.status, "problems": list(self.problems), "checked": self.checked,
                "gap_steps": self.gap_steps}


def reconcile_tolerance(epsilon: float, accountant: str, rel: float = 1e-6) -> float:
    """How far a recomputed ε may be from the site's: ``rel`` relative plus the accountant's own tolerance
    (RDP is exact arithmetic; PRV's ε error bound ``max(1e-3, 0.002 ε)``, see compute_epsilon)."""
    tol = rel * max(abs(epsilon), 1.0)
    return tol + (max(1e-3, 2e-3 * abs(epsilon)) if accountant == "prv" else 0.0)


def reconcile(entry: SiteLedger, accountant: str | None = None) -> Reconciliation:
    """Check ``entry`` (one site of RUN_DIR/privacy_ledger.json) against the site's own reports, round by
    round: recompute ε from the history up to each report with the site's accountant at its δ, compare the
    cumulative steps, and (when no gap precedes it) the digest of the entries."""
    accountant = accountant or (entry.accountant if entry.accountant in ACCOUNTANTS else "rdp")
    problems: list[str] = []
    checked = 0
    history = list(entry.history)
    for i, e in enumerate(history):
        if e.gap or (e.epsilon is None and e.digest is None and e.reported_steps is None):
            continue
        checked += 1
        prefix = history[: i + 1]
        has_gap = any(x.gap for x in prefix)
        if e.reported_steps is not None and e.reported_steps != sum(x.steps for x in prefix):
            problems.append(f"round {e.round}: the site reported {e.reported_steps} DP-SGD steps for the run, the "
                            f"ledger holds {sum(x.steps for x in prefix)}")
        if e.epsilon is not None:
            hist = [(x.noise_multiplier, x.sample_rate, x.steps) for x in prefix if x.steps > 0]
            if not hist:
                eps = 0.0
            elif entry.delta >= 1:
                eps = math.inf  # δ = 1 promises nothing
            else:
                eps = compute_epsilon(hist, entry.delta, accountant)
            tol = reconcile_tolerance(e.epsilon, accountant)
            low, high = eps < e.epsilon - tol, eps > e.epsilon + tol
            if low or (high and not has_gap):
                problems.append(f"round {e.round}: the ledger gives epsilon {eps:.6g}, the site reported "
                                f"{e.epsilon:.6g} ({accountant}, delta {entry.delta:.1e})")
        if e.digest is not None and not has_gap:
            mine = entries_digest([(x.round, x.noise_multiplier, x.sample_rate, x.steps) for x in prefix])
            if mine != e.digest:
                problems.append(f"round {e.round}: the ledger's entries do not hash to the digest the site "
                                f"reported ({e.digest[:12]}..., ledger {mine[:12]}...)")
    gap_steps = sum(x.steps for x in history if x.gap)
    status = "mismatch" if problems else "upper-bound" if gap_steps else "ok" if checked else "unreported"
    return Reconciliation(entry.site, status, tuple(problems), checked, gap_steps)


def site_budget(
    entry: SiteLedger,
    accountants: Sequence[str] = ACCOUNTANTS,
    primary: str | None = None,
    level: str | None = None,
) -> SiteBudget:
    """Account one ledger entry with every accountant in ``accountants``; ``epsilon`` is ``primary``'s
    (default: the accountant the site declared in its ledger, else RDP), and never lower than the ε the site
    itself last reported when that is the site's accountant (``recomputed_epsilon`` is the ledger's alone).
    Record-level sites are reconciled against their reports (``reconciliation``)."""
    declared = entry.accountant if entry.accountant in ACCOUNTANTS else "rdp"
    primary = primary or declared
    names = list(dict.fromkeys([primary, *accountants]))
    hist = entry.mechanism_history()
    if entry.delta >= 1 or not hist:  # δ = 1 promises nothing; no steps spend nothing
        eps = {name: (0.0 if not hist else math.inf) for name in names}
    else:
        eps = {name: compute_epsilon(hist, entry.delta, name) for name in names}
    last = entry.history[-1] if entry.history else None
    reported = next((e.epsilon for e in reversed(entry.history) if e.epsilon is not None), None)
    epsilon = eps[primary]
    if reported is not None and primary == declared and level != "client":
        epsilon = max(epsilon, reported)
    return SiteBudget(
        site=entry.site,
        level=level or entry.unit,
        n_records=entry.n_records,
        steps=entry.steps,
        rounds=len(entry.rounds),
        noise_multiplier=None if last is None else last.noise_multiplier,
        sample_rate=None if last is None else last.sample_rate,
        max_grad_norm=entry.max_grad_norm,
        delta=entry.delta,
        accountant=primary,
        epsilon=epsilon,
        epsilons=eps,
        reported_epsilon=reported,
        history=tuple(hist),
        recomputed_epsilon=eps[primary],
        reconciliation=None if level == "client" else reconcile(entry, declared),
    )


@dataclass(frozen=True)
class RunBudget:
    """Per-site record-level budgets, the released model's record-level ε, and client-level DP if used."""

    sites: dict[str, SiteBudget]
    release_epsilon: float
    release_delta: float
    client_level: SiteBudget | None

    @property
    def mismatches(self) -> dict[str, Reconciliation]:
        """Sites whose ledger history disagrees with what they reported."""
        return {k: b.reconciliation for k, b in self.sites.items()
                if b.reconciliation is not None and not b.reconciliation.ok}

    @property
    def release_level(self) -> str:
        """The privacy unit the released model's ε holds for: ``patient`` only if every site accounted per
        patient, else ``record`` (the weaker unit); ``none`` when no site trained with DP-SGD (no guarantee)."""
        levels = {b.level for b in self.sites.values()}
        if not levels:
            return "none"
        return "patient" if levels == {"patient"} else "record"

    def to_dict(self) -> dict:
        return {
            "unit": self.release_level,  # the unit every per-site epsilon below holds for (the weakest one)
            "sites": {k: v.to_dict() for k, v in self.sites.items()},
            "release": {
                "level": self.release_level,
                "epsilon": _finite(self.release_epsilon),
                "delta": self.release_delta,
                "rule": "max over sites (disjoint records, parallel composition)",
            },
            "client_level": None if self.client_level is None else self.client_level.to_dict(),
        }


def run_budget(
    ledger: PrivacyLedger, accountants: Sequence[str] = ACCOUNTANTS, primary: str | None = None
) -> RunBudget:
    """Account every site of ``ledger`` (record level) and, separately, its client-level mechanism."""
    sites = {k: site_budget(v, accountants, primary) for k, v in sorted(ledger.sites.items(), key=_site_key)}
    # no DP site at all (DP off, or a deployment whose ledger is empty): no guarantee, never "ε = 0"
    rel_eps = max((b.epsilon for b in sites.values()), default=math.inf)
    rel_delta = max((b.delta for b in sites.values()), default=0.0)
    cl = None if ledger.client_level is None else site_budget(ledger.client_level, accountants, primary, level="client")
    return RunBudget(sites=sites, release_epsilon=rel_eps, release_delta=rel_delta, client_level=cl)


def _site_key(item: tuple[str, object]) -> tuple[int, str]:
    key = item[0]
    return (int(key), key) if key.isdigit() else (10**9, key)


def epsilon_over_rounds(entry: SiteLedger, accountant: str = "rdp") -> list[tuple[int, float]]:
    """Cumulative ε(δ) of one site after each round it took part in: ``[(round, ε), ...]``."""
    return [(r, compute_epsilon(entry.mechanism_history(up_to_round=r), entry.delta, accountant)) for r in entry.rounds]


def ledger_epsilon(ledger: SiteLedger | None, delta: float | None = None, accountant: str | None = None,
                   extra: History = ()) -> float:
    """ε at ``delta`` (default: the ledger's δ) of one site's history in one run plus ``extra`` planned steps
    ``[(σ, q, steps), ...]``, with ``accountant`` (default: the ledger's). ``ledger`` None: a run without
    entries yet (then ``delta`` and ``accountant`` are required)."""
    if ledger is None:
        if delta is None or accountant is None:
            raise FedECGError("ledger_epsilon: a run without a ledger needs delta and accountant")
        return compute_epsilon(list(extra), delta, accountant)
    return compute_epsilon(ledger.mechanism_history() + list(extra), delta or ledger.delta,
                           accountant or ledger.accountant)


def lifetime_epsilon(ledger: LifetimeLedger, delta: float, extra: History = ()) -> float:
    """ε at ``delta`` of every DP-SGD step a site took in any run (its LifetimeLedger) plus ``extra``, composed
    with the RDP accountant (whatever each run's own accountant)."""
    return compute_epsilon(ledger.lifetime_history() + list(extra), delta, "rdp")


def plan_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    tolerance: float = 0.01,
) -> float:
    """Smallest σ (to ``tolerance`` in ε) such that ``steps`` steps at rate q give ε(δ) ≤ target
    (``opacus.accountants.utils.get_noise_multiplier``, a bisection over σ)."""
    from opacus.accountants.utils import get_noise_multiplier  # heavy: see the note at the imports

    if target_epsilon <= 0 or not 0 < delta < 1 or not 0 < sample_rate <= 1 or steps <= 0:
        raise FedECGError(
            f"cannot plan: need target ε > 0, δ in (0,1), q in (0,1], steps > 0 "
            f"(got ε={target_epsilon}, δ={delta}, q={sample_rate}, steps={steps})"
        )
    try:
        extra = {"alphas": rdp_orders()} if accountant == "rdp" else {}
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=tolerance,
                **extra,
            )
        )
    except ValueError as exc:
        raise FedECGError(f"cannot reach ε={target_epsilon} at δ={delta}: {exc}") from exc


def poisson_rate(n: int, batch_size: int) -> float:
    """The Poisson sampling rate of a site with ``n`` privacy units (patients or records) and expected batch
    ``batch_size``: Opacus' 1 / number of batches (= batch / n when batch divides n), which is what its
    DPDataLoader samples with."""
    if n < 1 or batch_size < 1:
        raise FedECGError(f"cannot plan: need n >= 1 units and batch >= 1 (got n={n}, batch={batch_size})")
    return 1.0 / math.ceil(n / min(batch_size, n))


@dataclass(frozen=True)
class SitePlan:
    """What a site with these settings runs: its sampling rate, σ and steps (the ledger records these)."""

    sample_rate: float
    noise_multiplier: float
    steps: int


def plan_site(target_epsilon: float, delta: float, n_units: int, batch_size: int, steps: int,
              accountant: str = "rdp", min_noise_multiplier: float = 0.0) -> SitePlan:
    """The one planning function (``fedecg privacy plan`` and every site's policy call it): q =
    :func:`poisson_rate`, then the σ for ``steps`` steps at q to spend at most ``target_epsilon`` at ``delta`` as
    :func:`compute_epsilon` measures it (Opacus' plan, raised in 1 % steps until it holds), at least the site's
    ``min_noise_multiplier``."""
    q = poisson_rate(n_units, batch_size)
    return SitePlan(q, max(plan_sigma(target_epsilon, delta, q, steps, accountant), min_noise_multiplier), steps)


def plan_sigma(target: float, delta: float, q: float, steps: int, accountant: str) -> float:
    """σ for ``steps`` steps at rate ``q`` to spend at most ``target`` at ``delta`` (see :func:`plan_site`)."""
    sigma = plan_noise_multiplier(target, delta, q, steps, accountant)
    for _ in range(200):
        if compute_epsilon([(sigma, q, steps)], delta, accountant) <= target:
            return sigma
        sigma *= 1.01
    raise FedECGError(f"cannot plan a noise multiplier for epsilon {target} at delta {delta}")

