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

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedecg.errors import FedECGError
from privacy.ledger import PrivacyLedger, SiteLedger

log = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv")
History = Sequence[tuple[float, float, int]]


def rdp_orders() -> list[float]:
    """RDP orders: Opacus' defaults (1.1…63) extended to 1024 so large ε are not clipped by the grid."""
    from opacus.accountants.rdp import RDPAccountant

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
    from opacus.accountants import create_accountant

    rdp = create_accountant("rdp")
    rdp.history = list(hist)
    eps_rdp = float(rdp.get_epsilon(delta=delta, alphas=rdp_orders()))
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


def dp_accounting_epsilon(history: History, delta: float, method: str = "pld") -> float:
    """Independent ε(δ) from Google's dp-accounting: ``pld`` (privacy-loss distributions) or ``rdp``."""
    import dp_accounting as dpa
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

    def to_dict(self) -> dict:
        return {
            "site": self.site,
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
            "history": [{"noise_multiplier": s, "sample_rate": q, "steps": n} for s, q, n in self.history],
        }


def _finite(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


def site_budget(
    entry: SiteLedger,
    accountants: Sequence[str] = ACCOUNTANTS,
    primary: str | None = None,
    level: str | None = None,
) -> SiteBudget:
    """Account one ledger entry with every accountant in ``accountants``; ``epsilon`` is ``primary``'s
    (default: the accountant the site declared in its ledger, else RDP)."""
    primary = primary or (entry.accountant if entry.accountant in ACCOUNTANTS else "rdp")
    names = list(dict.fromkeys([primary, *accountants]))
    hist = entry.mechanism_history()
    if entry.delta >= 1 or not hist:  # δ = 1 promises nothing; no steps spend nothing
        eps = {name: (0.0 if not hist else math.inf) for name in names}
    else:
        eps = {name: compute_epsilon(hist, entry.delta, name) for name in names}
    last = entry.history[-1] if entry.history else None
    reported = next((e.epsilon for e in reversed(entry.history) if e.epsilon is not None), None)
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
        epsilon=eps[primary],
        epsilons=eps,
        reported_epsilon=reported,
        history=tuple(hist),
    )


@dataclass(frozen=True)
class RunBudget:
    """Per-site record-level budgets, the released model's record-level ε, and client-level DP if used."""

    sites: dict[str, SiteBudget]
    release_epsilon: float
    release_delta: float
    client_level: SiteBudget | None

    @property
    def release_level(self) -> str:
        """The privacy unit the released model's ε holds for: ``patient`` only if every site accounted per
        patient, else ``record`` (the weaker unit)."""
        levels = {b.level for b in self.sites.values()}
        return "patient" if levels == {"patient"} else "record"

    def to_dict(self) -> dict:
        return {
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
    rel_eps = max((b.epsilon for b in sites.values()), default=0.0)
    rel_delta = max((b.delta for b in sites.values()), default=0.0)
    cl = None if ledger.client_level is None else site_budget(ledger.client_level, accountants, primary, level="client")
    return RunBudget(sites=sites, release_epsilon=rel_eps, release_delta=rel_delta, client_level=cl)


def _site_key(item: tuple[str, object]) -> tuple[int, str]:
    key = item[0]
    return (int(key), key) if key.isdigit() else (10**9, key)


def epsilon_over_rounds(entry: SiteLedger, accountant: str = "rdp") -> list[tuple[int, float]]:
    """Cumulative ε(δ) of one site after each round it took part in: ``[(round, ε), ...]``."""
    return [(r, compute_epsilon(entry.mechanism_history(up_to_round=r), entry.delta, accountant)) for r in entry.rounds]


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
    from opacus.accountants.utils import get_noise_multiplier

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
