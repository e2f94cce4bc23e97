"""privacy.ledger: reading, validating and round-tripping RUN_DIR/privacy_ledger.json."""

import json

import pytest

from fedecg.errors import FedECGError
from privacy.ledger import LedgerEntry, PrivacyLedger, SiteLedger, load_ledger, save_ledger


def _ledger_dict():
    return {
        "delta_policy": "1/(10 n)",
        "client_level": None,
        "sites": {
            "0": {
                "n_records": 100,
                "delta": 1e-3,
                "max_grad_norm": 1.0,
                "accountant": "rdp",
                "history": [
                    {"round": 1, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 5, "epsilon": 1.2},
                    {"round": 2, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 5, "epsilon": 1.7},
                ],
            },
            "1": {"n_records": 50, "delta": 2e-3, "max_grad_norm": 1.0, "accountant": "prv", "history": []},
        },
    }


def test_load_ledger_reads_sites_steps_and_history(tmp_path):
    (tmp_path / "privacy_ledger.json").write_text(json.dumps(_ledger_dict()))
    ledger = load_ledger(tmp_path)
    assert set(ledger.sites) == {"0", "1"}
    site = ledger.sites["0"]
    assert site.steps == 10 and site.rounds == (1, 2) and site.n_records == 100
    assert site.mechanism_history() == [(1.0, 0.1, 5), (1.0, 0.1, 5)]
    assert site.mechanism_history(up_to_round=1) == [(1.0, 0.1, 5)]
    assert ledger.sites["1"].accountant == "prv" and ledger.sites["1"].steps == 0


def test_save_then_load_round_trips(tmp_path):
    ledger = PrivacyLedger(
        sites={
            "3": SiteLedger(
                site="3", delta=1e-4, n_records=7, max_grad_norm=2.0, history=(LedgerEntry(1, 0.8, 0.25, 3),)
            )
        }
    )
    save_ledger(tmp_path, ledger)
    assert load_ledger(tmp_path / "privacy_ledger.json") == ledger


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["sites"]["0"].pop("delta"), "missing key 'delta'"),
        (lambda d: d["sites"]["0"]["history"][0].update(sample_rate=1.5), "sample_rate 1.5 > 1"),
        (lambda d: d["sites"]["0"]["history"][0].update(noise_multiplier="x"), "not a number"),
        (lambda d: d["sites"]["0"].update(delta=1.5), "delta 1.5"),
        (lambda d: d["sites"]["0"].update(delta=0.0), "delta 0.0"),
        (lambda d: d.pop("sites"), "'sites'"),
    ],
)
def test_invalid_ledger_raises_naming_the_key(tmp_path, mutate, message):
    d = _ledger_dict()
    mutate(d)
    (tmp_path / "privacy_ledger.json").write_text(json.dumps(d))
    with pytest.raises(FedECGError, match=message):
        load_ledger(tmp_path)


def test_missing_ledger_file_is_a_user_error(tmp_path):
    with pytest.raises(FedECGError, match="privacy ledger not found"):
        load_ledger(tmp_path)


def test_zero_noise_marks_site_not_private():
    site = SiteLedger(site="0", delta=1e-5, history=(LedgerEntry(1, 0.0, 0.1, 4),))
    assert not site.is_private


def test_server_style_ledger_with_empty_client_level_loads(tmp_path):
    d = _ledger_dict()
    d["accountant"] = "rdp"
    d["client_level"] = {
        "delta": 0.0,
        "accountant": "rdp",
        "max_grad_norm": 1.0,
        "n_records": 0,
        "history": [],
    }
    (tmp_path / "privacy_ledger.json").write_text(json.dumps(d))
    ledger = load_ledger(tmp_path)
    assert ledger.client_level is not None and ledger.client_level.steps == 0
