"""privacy.ledger: reading, validating and round-tripping the run's RUN_DIR/privacy_ledger.json and the site's
<state-dir>/privacy-ledger.json (one SiteLedger type in both), old files included."""

import json

import pytest

from fedecg.errors import FedECGError
from privacy.ledger import (
    LedgerEntry,
    LedgerStore,
    LifetimeLedger,
    PrivacyLedger,
    SiteLedger,
    entries_digest,
    load_ledger,
    save_ledger,
)


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


# ---- one type, one serialiser: the run's file as the server writes it, the site's file ---------------------

DIGEST = "ab" * 32


def _server_written():
    """RUN_DIR/privacy_ledger.json exactly as server.loop wrote it before the ledger became one type."""
    return {
        "delta_policy": "per site: dp.delta, or 1/n_site_train when 0",
        "accountant": "rdp",
        "sites": {
            "site-0": {"n_records": 164, "unit": "patient", "delta": 1e-05, "max_grad_norm": 1.0, "accountant": "rdp",
                       "history": [
                           {"round": 1, "noise_multiplier": 1.11, "sample_rate": 0.25, "steps": 3, "epsilon": 0.5,
                            "digest": DIGEST, "reported_steps": 3},
                           {"round": 2, "noise_multiplier": 1.11, "sample_rate": 0.25, "steps": 3, "epsilon": None,
                            "gap": True},
                           {"round": 2, "noise_multiplier": 1.11, "sample_rate": 0.25, "steps": 3, "epsilon": 0.9,
                            "digest": DIGEST, "reported_steps": 9}]},
        },
        "client_level": None,
    }


def test_run_ledger_round_trips_byte_for_byte_in_the_server_format(tmp_path):
    path = tmp_path / "privacy_ledger.json"
    text = json.dumps(_server_written(), indent=2) + "\n"  # fedecg.io.atomic_write_json's layout
    path.write_text(text)
    ledger = load_ledger(tmp_path)
    assert ledger.accountant == "rdp" and ledger.sites["site-0"].unit == "patient"
    assert [e.gap for e in ledger.sites["site-0"].history] == [False, True, False]
    save_ledger(tmp_path / "again.json", ledger)
    assert (tmp_path / "again.json").read_text() == text
    assert load_ledger(tmp_path / "again.json") == ledger


def test_old_client_level_ledger_loads_and_round_trips(tmp_path):
    d = _server_written()  # client-level entries as the server wrote them: no unit, no epsilon
    d["client_level"] = {"delta": 0.5, "accountant": "rdp", "max_grad_norm": 5.0, "n_records": 2,
                         "history": [{"round": 1, "noise_multiplier": 1.0, "sample_rate": 1.0, "steps": 1}]}
    (tmp_path / "privacy_ledger.json").write_text(json.dumps(d))
    ledger = load_ledger(tmp_path)
    assert ledger.client_level.mechanism_history() == [(1.0, 1.0, 1)] and ledger.client_level.n_records == 2
    save_ledger(tmp_path / "again.json", ledger)
    assert load_ledger(tmp_path / "again.json") == ledger


def _site_file():
    """<state-dir>/privacy-ledger.json as the site wrote it (fedecg-site-ledger/2)."""
    entry = {"round": 1, "noise_multiplier": 1.11083984375, "sample_rate": 0.16666666666666666, "steps": 3,
             "max_grad_norm": 1.0, "delta": 1e-05, "recorded": 1796236090.937042, "state": "trained", "repeat": 0}
    return {
        "format": "fedecg-site-ledger/2",
        "site": "site-0",
        "runs": {
            "ptbxl-sites-f1e3ed1b": {"unit": "patient", "n_units": 164, "delta": 1e-05, "accountant": "rdp",
                                     "created": 1796236090.9370327, "entries": [entry, {**entry, "round": 2}],
                                     "non_private_rounds": []},
            "iid-0123": {"unit": "record", "n_units": 50, "delta": 1e-05, "accountant": "prv", "created": 17.0,
                         "entries": [], "non_private_rounds": [1, 2]},
        },
        "refusals": [{"run": "x", "round": 3, "reason": "lifetime privacy budget spent", "time": 18.0}],
    }


def test_site_ledger_file_loads_and_saves_byte_for_byte(tmp_path):
    store = LedgerStore(tmp_path, "site-0")
    text = json.dumps(_site_file(), indent=2) + "\n"
    store.path.write_text(text)
    with store.open() as ledger:  # locked read, atomic write on leaving
        run = ledger.run("ptbxl-sites-f1e3ed1b")
        assert isinstance(run, SiteLedger) and run.site == "site-0" and run.n_records == 164
        assert run.mechanism_history() == [(1.11083984375, 0.16666666666666666, 3)] * 2
        assert ledger.run("iid-0123").non_private_rounds == (1, 2)
        assert ledger.lifetime_unit == "patient"  # the record-level run never spent a DP step
    assert store.path.read_text() == text
    assert LifetimeLedger.from_dict(ledger.to_dict()) == ledger == store.load()


def test_site_ledger_survives_a_restart_and_keeps_recording(tmp_path):
    store = LedgerStore(tmp_path, "a")
    with store.open() as ledger:
        ledger.open_run("r1", "patient", 40, 1e-5, "rdp")
        first = ledger.record("r1", 1, 1.2, 0.25, 4, 1.0)
    with store.open() as ledger:  # a new process: everything comes from the file
        assert ledger.run("r1").history == (first,) and first.state == "recorded" and first.repeat == 0
        trained = ledger.mark_trained("r1", first.round, first.recorded,
                                      actual={"noise_multiplier": 1.2, "sample_rate": 0.5, "steps": 4})
        again = ledger.record("r1", 1, 1.2, 0.25, 4, 1.0)  # the round paid again
        ledger.refuse("r2", 1, "no")
    back = store.load()
    assert back.run("r1").history == (trained, again)
    assert trained.state == "trained" and trained.sample_rate == 0.5  # the worse q that training used
    assert again.repeat == 1 and back.refusals[-1]["reason"] == "no"
    assert back.run("r1").digest() == entries_digest([(1, 1.2, 0.5, 4), (1, 1.2, 0.25, 4)])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_site_imports_its_format_1_per_run_files(tmp_path):
    (tmp_path / "ledger-old-run.json").write_text(json.dumps({
        "site": "a", "n_records": 30, "delta": 1e-5, "accountant": "rdp", "unit": "record",
        "entries": [{"round": 1, "noise_multiplier": 1.0, "sample_rate": 0.2, "steps": 5}]}))
    ledger = LedgerStore(tmp_path, "a").load()
    run = ledger.run("old-run")
    assert run.n_records == 30 and run.history[0].state == "trained" and run.mechanism_history() == [(1.0, 0.2, 5)]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="fedecg-site-ledger/9"), "format 'fedecg-site-ledger/9'"),
    (lambda d: d["runs"]["iid-0123"].pop("n_units"), "missing key 'n_units'"),
    (lambda d: d["runs"]["ptbxl-sites-f1e3ed1b"]["entries"][0].update(sample_rate=3), "sample_rate 3.0 > 1"),
    (lambda d: d["runs"]["iid-0123"].update(unit="visit"), "unit must be"),
])
def test_malformed_site_ledger_refuses_to_train(tmp_path, mutate, message):
    d = _site_file()
    mutate(d)
    store = LedgerStore(tmp_path, "site-0")
    store.path.write_text(json.dumps(d))
    with pytest.raises(FedECGError, match=message) as err:
        store.load()
    assert str(store.path) in str(err.value) and "refusing to train without a trustworthy ledger" in str(err.value)


def test_another_sites_ledger_file_is_refused(tmp_path):
    (tmp_path / "privacy-ledger.json").write_text(json.dumps(_site_file()))
    with pytest.raises(FedECGError, match="belongs to site 'site-0', not 'site-1'"):
        LedgerStore(tmp_path, "site-1").load()


def test_missing_site_file_continues_from_the_node_state_copy(tmp_path):
    copy = _site_file()
    ledger = LedgerStore(tmp_path, "site-0").load(fallback=copy)
    assert ledger == LifetimeLedger.from_dict(copy) and ledger.run("ptbxl-sites-f1e3ed1b").steps == 6
