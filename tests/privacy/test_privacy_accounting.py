"""privacy.accounting: Opacus RDP/PRV ε agree with Google's dp-accounting; budgets, rounds, planning."""

import dataclasses
import math

import pytest

from fedecg.errors import FedECGError
from privacy.accounting import (
    compute_epsilon,
    dp_accounting_epsilon,
    epsilon_over_rounds,
    plan_noise_multiplier,
    run_budget,
)
from privacy.ledger import LedgerEntry, PrivacyLedger, SiteLedger

HISTORIES = [
    [(1.0, 0.05, 100)],
    [(1.1, 0.1, 50), (0.8, 0.1, 50)],
    [(3.0, 0.01, 1000)],
    [(1.0, 0.25, 10)],
    [(5.0, 0.1, 20)],
]


@pytest.mark.parametrize("history", HISTORIES)
def test_opacus_rdp_agrees_with_dp_accounting_rdp_within_1pct(history):
    ours = compute_epsilon(history, 1e-5, "rdp")
    ref = dp_accounting_epsilon(history, 1e-5, "rdp")
    assert ours == pytest.approx(ref, rel=0.01)


@pytest.mark.parametrize("history", HISTORIES)
def test_opacus_prv_agrees_with_dp_accounting_pld_within_1pct(history):
    ours = compute_epsilon(history, 1e-5, "prv")
    ref = dp_accounting_epsilon(history, 1e-5, "pld")
    assert ours == pytest.approx(ref, rel=0.01)


def test_prv_is_tighter_than_rdp():
    h = [(1.0, 0.05, 100)]
    assert compute_epsilon(h, 1e-5, "prv") < compute_epsilon(h, 1e-5, "rdp")


def test_known_value_single_gaussian_composition():
    # q = 1: plain Gaussian mechanism composed 10 times = one Gaussian with σ/√10; dp-accounting's exact
    # analytic value for σ_eff = 1/√10·4 is the reference.
    h = [(4.0, 1.0, 10)]
    assert compute_epsilon(h, 1e-5, "prv") == pytest.approx(dp_accounting_epsilon(h, 1e-5, "pld"), rel=0.01)


def test_empty_and_non_private_histories():
    assert compute_epsilon([], 1e-5) == 0.0
    assert math.isinf(compute_epsilon([(0.0, 0.1, 5)], 1e-5))


def test_bad_inputs_raise():
    with pytest.raises(FedECGError):
        compute_epsilon([(1.0, 0.1, 5)], 0.0)
    with pytest.raises(FedECGError):
        compute_epsilon([(1.0, 0.1, 5)], 1e-5, "gdp-typo")


def _ledger():
    return PrivacyLedger(
        sites={
            "0": SiteLedger("0", 1e-4, tuple(LedgerEntry(r, 1.0, 0.1, 10) for r in (1, 2, 3)), n_records=120),
            "1": SiteLedger("1", 1e-4, tuple(LedgerEntry(r, 2.0, 0.1, 10) for r in (1, 2, 3)), n_records=80),
        },
        client_level=SiteLedger("client_level", 1e-3, (LedgerEntry(1, 1.5, 0.5, 3),), n_records=4),
    )


def test_run_budget_release_is_worst_site_and_client_level_is_separate():
    budget = run_budget(_ledger(), accountants=("rdp",), primary="rdp")
    s0, s1 = budget.sites["0"], budget.sites["1"]
    assert s0.steps == 30 and s0.noise_multiplier == 1.0 and s0.sample_rate == 0.1
    assert s0.epsilon > s1.epsilon  # less noise → more ε
    assert budget.release_epsilon == s0.epsilon
    assert budget.client_level is not None and budget.client_level.level == "client"
    assert budget.client_level.epsilon == pytest.approx(compute_epsilon([(1.5, 0.5, 3)], 1e-3, "rdp"))
    d = budget.to_dict()
    assert set(d["sites"]["0"]) >= {"epsilon", "delta", "steps", "noise_multiplier", "sample_rate"}


def test_epsilon_over_rounds_is_increasing_and_ends_at_total():
    site = _ledger().sites["0"]
    curve = epsilon_over_rounds(site, "rdp")
    assert [r for r, _ in curve] == [1, 2, 3]
    eps = [e for _, e in curve]
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(compute_epsilon(site.mechanism_history(), 1e-4, "rdp"))


def test_planned_noise_reaches_target_epsilon():
    sigma = plan_noise_multiplier(2.0, 1e-5, sample_rate=0.05, steps=200)
    eps = compute_epsilon([(sigma, 0.05, 200)], 1e-5, "rdp")
    assert 1.97 <= eps <= 2.0
    assert plan_noise_multiplier(8.0, 1e-5, 0.05, 200) < sigma


def test_plan_rejects_impossible_inputs():
    with pytest.raises(FedECGError):
        plan_noise_multiplier(0.0, 1e-5, 0.05, 100)


def test_a_run_without_any_dp_site_releases_no_guarantee_not_epsilon_zero():
    empty = dataclasses.replace(_ledger(), sites={}, client_level=None)
    budget = run_budget(empty, accountants=("rdp",), primary="rdp")
    assert budget.release_epsilon == math.inf and budget.release_level == "none"
    d = budget.to_dict()
    assert d["unit"] == "none" and d["release"]["epsilon"] == "inf"
