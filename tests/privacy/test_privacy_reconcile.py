"""ε is never under-reported: the server's RUN_DIR/privacy_ledger.json is reconciled with what every site reported
(its own ε, steps and ledger digest) and `fedecg privacy budget` fails, naming the site, when they disagree;
a round re-run after a resume is paid again at the site and shows up in the reconciled budget."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from client.app import app as client_app
from privacy.accounting import compute_epsilon, ledger_epsilon, reconcile, run_budget
from privacy.ledger import (
    SITE_LEDGER_FILE,
    LedgerEntry,
    LifetimeLedger,
    PrivacyLedger,
    SiteLedger,
    entries_digest,
    ledger_from_dict,
    load_ledger,
)
from ptbxl.partition import Manifest
from server.loop import ServerSettings, run_federation
from server.prepare import PreparedRun, prepare_run
from simulations.inprocess import InProcessGrid
from simulations.runner import simulated_node_configs

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "name": "rec",
    "rounds": 2,
    "seed": 9,
    "partition": {"by": "site", "min_records": 1, "tail": "pool"},
    "model": {"preset": "tiny"},
    "train": {"local_steps": 2, "batch_size": 4, "lr": 0.001, "eval_batches": 1},
    "dp": {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0},
    "strategy": {"name": "fedavg", "min_train_nodes": 1, "min_available_nodes": 1},
    "output": {"synthesize": 0},
    "site_policy": {"max_epsilon_run": 100.0, "max_epsilon_lifetime": 1000.0},  # tiny sites: q up to 1
}


def _prepare(root: Path, dataset, name="run") -> tuple[PreparedRun, int]:
    scen = dict(BASE, dataset=str(dataset))
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scen))
    rd = prepare_run(path, [], root / name, partition=True)
    return rd, len(Manifest.load(rd.manifest_path).clients)


def _run(rd, n, **grid_kw):
    configs = simulated_node_configs(rd)
    run_federation(InProcessGrid(client_app, n, node_config=lambda i: configs[i], **grid_kw),
                   ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True))


def _site_run(rd, site) -> SiteLedger:
    """The site's own section for this run of its lifetime ledger (node-state/<site>/privacy-ledger.json)."""
    data = json.loads((rd.path / "node-state" / site / SITE_LEDGER_FILE).read_text())
    return LifetimeLedger.from_dict(data).run(rd.run_name())


def _budget(run_dir: Path, *extra: str):
    from fedecg.cli import app

    return CliRunner().invoke(app, ["privacy", "budget", str(run_dir), *extra])


def _budget_cli(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`fedecg privacy budget` as a user runs it (exit code and stderr as the contract says)."""
    return subprocess.run([sys.executable, "-m", "fedecg", "privacy", "budget", str(run_dir), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, demo_ptbxl) -> Path:
    rd, n = _prepare(tmp_path_factory.mktemp("rec"), demo_ptbxl)
    _run(rd, n)
    return rd.path


# ---- reconcile, on hand-made ledgers ----------------------------------------------------------------------


def _site(history, delta=1e-5) -> SiteLedger:
    return SiteLedger(site="a", delta=delta, history=tuple(history))


def _reported(entries):
    """History entries as a site reports them: cumulative ε, steps and digest after each entry."""
    out = []
    for i, (r, s, q, n) in enumerate(entries):
        prefix = entries[: i + 1]
        eps = compute_epsilon([(x[1], x[2], x[3]) for x in prefix], 1e-5)
        out.append(LedgerEntry(r, s, q, n, epsilon=eps, digest=entries_digest(prefix),
                               reported_steps=sum(x[3] for x in prefix)))
    return out


def test_reconcile_accepts_the_sites_own_reports_and_names_what_differs():
    entries = [(1, 1.1, 0.25, 3), (2, 1.1, 0.25, 3), (3, 1.1, 0.25, 3)]
    good = _reported(entries)
    assert reconcile(_site(good)).status == "ok" and reconcile(_site(good)).checked == 3

    edited = list(good)
    edited[1] = LedgerEntry(2, 50.0, 0.25, 3, good[1].epsilon, good[1].digest, good[1].reported_steps)
    rec = reconcile(_site(edited))
    assert rec.status == "mismatch" and any(p.startswith("round 2: the ledger gives epsilon") for p in rec.problems)

    renumbered = list(good)  # ε unchanged, the digest still catches it
    renumbered[0] = LedgerEntry(7, 1.1, 0.25, 3, good[0].epsilon, good[0].digest, good[0].reported_steps)
    rec = reconcile(_site(renumbered))
    assert rec.status == "mismatch" and "do not hash to the digest" in " ".join(rec.problems)

    under = [LedgerEntry(e.round, e.noise_multiplier, e.sample_rate, e.steps, e.epsilon * 0.9, None, None)
             for e in good]  # a site that reports less than it spent
    assert reconcile(_site(under)).status == "mismatch"

    # the server missed the site's round 2 (a lost reply): round 3's report says 9 steps, the gap entry holds 3
    site3 = _reported(entries)[2]
    gap = LedgerEntry(3, 1.1, 0.25, 3, gap=True)
    rec = reconcile(_site([good[0], gap, site3]))
    assert rec.status == "upper-bound" and rec.gap_steps == 3
    budget = run_budget(ledger_from_dict({"sites": {"a": _site([good[0], gap, site3]).to_dict()}}), ("rdp",))
    assert budget.sites["a"].epsilon == pytest.approx(site3.epsilon, rel=1e-9)
    # without the gap entry the ledger would under-report: it is flagged, and ε is still the site's
    rec = reconcile(_site([good[0], site3]))
    assert rec.status == "mismatch" and "reported 9 DP-SGD steps" in " ".join(rec.problems)
    budget = run_budget(ledger_from_dict({"sites": {"a": _site([good[0], site3]).to_dict()}}), ("rdp",))
    assert budget.sites["a"].epsilon == site3.epsilon > budget.sites["a"].recomputed_epsilon


# ---- a federation ----------------------------------------------------------------------------------------


def test_finished_run_reconciles_with_every_site(finished_run):
    budget = run_budget(load_ledger(finished_run), ("rdp",))
    assert budget.sites and not budget.mismatches
    rd = PreparedRun(finished_run)
    for site, b in budget.sites.items():
        run = _site_run(rd, site)
        assert b.reconciliation.status == "ok" and b.reconciliation.checked == 2
        assert b.epsilon == pytest.approx(ledger_epsilon(run), rel=1e-12)  # the server's ε is the site's own
        history = json.loads(rd.ledger_path.read_text())["sites"][site]["history"]
        assert history[-1]["digest"] == run.digest()


def test_the_server_reads_a_sites_own_ledger_as_the_same_type(finished_run):
    server = load_ledger(finished_run)
    rd = PreparedRun(finished_run)
    assert server.sites
    for site, theirs in server.sites.items():
        mine = _site_run(rd, site)  # what the site wrote in its own lifetime ledger for this run
        assert type(mine) is type(theirs) is SiteLedger
        spend = lambda ledger: [(e.round, e.noise_multiplier, e.sample_rate, e.steps) for e in ledger.history]  # noqa: E731
        assert spend(mine) == spend(theirs) and len(mine.history) == 2
        assert (mine.site, mine.delta, mine.unit, mine.n_records, mine.accountant) == \
            (theirs.site, theirs.delta, theirs.unit, theirs.n_records, theirs.accountant)
        assert theirs.history[-1].digest == mine.digest()
        # the site's section goes through the run file's serialiser unchanged and accounts like the server's
        alone = PrivacyLedger(sites={site: mine})
        assert ledger_from_dict(json.loads(json.dumps(alone.to_dict()))) == alone
        assert run_budget(alone, ("rdp",)).sites[site].epsilon == pytest.approx(
            run_budget(server, ("rdp",)).sites[site].epsilon, rel=1e-12)


def test_edited_noise_multiplier_makes_budget_fail_naming_the_site(finished_run, tmp_path):
    run_dir = tmp_path / "edited"
    shutil.copytree(finished_run, run_dir)
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())
    victim = sorted(ledger["sites"])[1]
    for h in ledger["sites"][victim]["history"]:
        h["noise_multiplier"] = 50.0  # "the sites were far more private than they said"
    (run_dir / "privacy_ledger.json").write_text(json.dumps(ledger))

    res = _budget_cli(run_dir)
    assert res.returncode != 0
    assert victim in res.stderr and "disagrees with what site(s)" in res.stderr
    assert [s for s in ledger["sites"] if s in res.stderr.split("reported")[0]] == [victim]  # only that site
    budget = run_budget(load_ledger(run_dir), ("rdp",))
    assert list(budget.mismatches) == [victim] and budget.sites[victim].reconciliation.status == "mismatch"
    # the table never shows the edited, lower ε: it is the site's own
    b = budget.sites[victim]
    assert b.epsilon == b.reported_epsilon > b.recomputed_epsilon


def test_resume_re_paying_a_round_shows_in_the_site_ledger_and_the_budget(tmp_path, demo_ptbxl):
    rd, n = _prepare(tmp_path, demo_ptbxl)
    calls = {"n": 0}

    def crash_in_round_2(nid, reply):
        calls["n"] += 1
        if calls["n"] > 2 * n:  # round 1 = n train + n evaluate replies; one site has trained round 2
            raise RuntimeError("server killed")
        return reply

    with pytest.raises(RuntimeError, match="server killed"):
        _run(rd, n, tamper=crash_in_round_2)
    assert rd.completed_rounds() == [1]
    _run(PreparedRun(rd.path), n)  # resume: a fresh server and fresh client processes

    sites = [c.client_id for c in Manifest.load(rd.manifest_path).clients]
    repaid = [s for s in sites if any(e.repeat for e in _site_run(rd, s).history)]
    assert len(repaid) == 1  # the one site that had trained round 2 when the server died
    victim = repaid[0]
    run = _site_run(rd, victim)
    assert [(e.round, e.repeat) for e in run.history] == [(1, 0), (2, 0), (2, 1)]  # round 2 paid twice
    history = json.loads(rd.ledger_path.read_text())["sites"][victim]["history"]
    assert [(h["round"], h.get("gap", False)) for h in history] == [(1, False), (2, True), (2, False)]
    budget = run_budget(load_ledger(rd.path), ("rdp",))
    b = budget.sites[victim]
    assert b.reconciliation.status == "upper-bound" and not budget.mismatches
    assert b.epsilon >= ledger_epsilon(run) * (1 - 1e-9) and b.epsilon == pytest.approx(ledger_epsilon(run), rel=1e-9)
    # what the table showed before: the server's two trainings alone, lower than what the site paid
    assert compute_epsilon([(h["noise_multiplier"], h["sample_rate"], h["steps"]) for h in history
                            if not h.get("gap")], b.delta) < ledger_epsilon(run)
    for site, other in budget.sites.items():
        if site != victim:
            assert other.reconciliation.status == "ok"
            assert [e.round for e in _site_run(rd, site).history] == [1, 2]
    res = _budget(rd.path)
    assert res.exit_code == 0, res.output
    assert "never reached the server" in res.output
