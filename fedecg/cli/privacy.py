"""`fedecg privacy ...`: the privacy budget of a run (per site, per round) and noise planning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from fedecg.errors import FedECGError
from fedecg.rundir import RunLayout


def _fmt(x: float | None, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    return "∞" if math.isinf(x) else format(x, spec)


def budget(
    run_dir: Path = typer.Argument(..., help="Run directory holding privacy_ledger.json."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON ({'sites': {site: {epsilon, delta, ...}}})."
    ),
    plot: bool = typer.Option(False, "--plot", help="Write a PNG of ε over rounds per site."),
    plot_file: Path = typer.Option(
        None, "--plot-file", help="PNG path (default RUN_DIR/privacy_budget.png)."
    ),
    accountant: str = typer.Option(
        None, "--accountant", help="rdp or prv (default: what each site declared)."
    ),
    cross_check: bool = typer.Option(
        False, "--cross-check", help="Also compute ε with Google dp-accounting."
    ),
) -> None:
    """Per-site ε(δ) from the run's privacy ledger (Opacus RDP and PRV accountants), reconciled with what each
    site reported (its own ε, steps and ledger digest): exits non-zero naming the site when they disagree."""
    from privacy.accounting import dp_accounting_epsilon, epsilon_over_rounds, run_budget
    from privacy.ledger import load_ledger

    ledger = load_ledger(run_dir)
    result = run_budget(ledger, primary=accountant)
    out = result.to_dict()
    nonpriv = _non_private_clients(Path(run_dir), set(ledger.sites))
    out["non_private_sites"] = nonpriv
    if nonpriv:
        out["release"]["epsilon"] = "inf"
    if cross_check:
        for name, b in result.sites.items():
            out["sites"][name]["epsilons"]["dp_accounting_pld"] = dp_accounting_epsilon(
                b.history, b.delta, "pld"
            )
    if plot or plot_file:
        from fedecg.io import atomic_write_bytes
        from privacy.plots import epsilon_rounds_png

        accs = {
            k: accountant or (v.accountant if v.accountant in ("rdp", "prv") else "rdp")
            for k, v in ledger.sites.items()
        }
        curves = {k: epsilon_over_rounds(v, accs[k]) for k, v in ledger.sites.items() if v.is_private}
        acc = "/".join(sorted(set(accs.values())))
        path = plot_file or Path(run_dir) / "privacy_budget.png"
        atomic_write_bytes(
            path, epsilon_rounds_png(curves, {k: v.delta for k, v in ledger.sites.items()}, acc)
        )
        out["plot"] = str(path)
    mismatches = result.mismatches
    out["reconciled"] = not mismatches
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        _fail_on_mismatch(run_dir, mismatches)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Privacy budget of {run_dir}")
    for col in (
        "site",
        "records",
        "steps",
        "σ",
        "q",
        "C",
        "δ",
        "ε",
        "accountant",
        "ε rdp",
        "ε prv",
        "ε reported",
        "check",
    ):
        table.add_column(col, justify="right")
    rows = list(result.sites.values()) + ([result.client_level] if result.client_level else [])
    for b in rows:
        name = f"{b.site} (client-level DP)" if b.level == "client" else f"{b.site} (per {b.level})"
        table.add_row(
            name,
            str(b.n_records or "-"),
            str(b.steps),
            _fmt(b.noise_multiplier),
            _fmt(b.sample_rate, ".4f"),
            _fmt(b.max_grad_norm, ".2f"),
            f"{b.delta:.1e}",
            _fmt(b.epsilon),
            b.accountant,
            _fmt(b.epsilons.get("rdp")),
            _fmt(b.epsilons.get("prv")),
            _fmt(b.reported_epsilon),
            _check(b.reconciliation),
        )
    for site in nonpriv:
        table.add_row(site, "-", "-", "-", "-", "-", "-", "∞ (no DP)", "-", "-", "-", "-", "-")
    console = Console(width=max(Console().width, 140))
    console.print(table)
    release = math.inf if nonpriv else result.release_epsilon
    console.print(
        f"released model (record level, worst site): ε = {_fmt(release)} at δ = {result.release_delta:.1e}"
    )
    loose = [b.site for b in result.sites.values() if b.n_records and b.delta >= 1 / b.n_records]
    if loose:
        console.print(f"warning: δ ≥ 1/n at {', '.join(loose)} (such δ allows releasing a whole record)")
    gaps = [b for b in result.sites.values() if b.reconciliation and b.reconciliation.gap_steps]
    for b in gaps:
        console.print(f"note: {b.site} paid {b.reconciliation.gap_steps} DP-SGD steps that never reached the "
                      "server (a lost reply or a round re-run after a resume); they are accounted at the run's "
                      "smallest σ and largest q the site reported, so its ε is an upper bound")
    if "plot" in out:
        console.print(f"plot: {out['plot']}")
    _fail_on_mismatch(run_dir, mismatches)


def _check(rec) -> str:
    if rec is None:
        return "-"
    return {"ok": "ok", "upper-bound": "ok (upper bound)", "mismatch": "MISMATCH", "unreported": "-"}[rec.status]


def _fail_on_mismatch(run_dir: Path, mismatches: dict) -> None:
    """The ledger must agree with what the sites reported; a disagreement names the site(s) and fails."""
    if not mismatches:
        return
    lines = [f"{site}: {'; '.join(rec.problems[:3])}" + (f" (+{len(rec.problems) - 3} more)"
                                                         if len(rec.problems) > 3 else "")
             for site, rec in mismatches.items()]
    raise FedECGError(f"{RunLayout(run_dir).ledger_path} disagrees with what site(s) "
                      f"{', '.join(mismatches)} reported (edited after the run, or a site under-reported): "
                      + " | ".join(lines))


def _non_private_clients(run_dir: Path, ledger_sites: set[str]) -> list[str]:
    """Clients of RUN_DIR/manifest.json without a ledger entry: they trained without DP-SGD."""
    path = RunLayout(run_dir).manifest_path
    if not run_dir.is_dir() or not path.is_file():
        return []
    try:
        clients = [str(c["client_id"]) for c in json.loads(path.read_text(encoding="utf-8"))["clients"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FedECGError(f"{path}: cannot read the clients of the manifest ({exc})") from exc
    return [c for c in clients if c not in ledger_sites]


def plan(
    target_epsilon: float = typer.Option(..., "--target-epsilon", help="ε each site may spend in total."),
    delta: float = typer.Option(1e-5, "--delta", help="δ (record level)."),
    rounds: int = typer.Option(..., "--rounds", help="Federated rounds."),
    local_steps: int = typer.Option(..., "--local-steps", help="DP-SGD steps per site per round."),
    sample_rate: float = typer.Option(None, "--sample-rate", help="Poisson sampling rate q (all sites)."),
    records: list[int] = typer.Option(
        None, "--records", help="Privacy units (patients or records) per site (repeat); q = 1/ceil(n/batch)."
    ),
    batch: int = typer.Option(None, "--batch", help="Expected batch size (with --records)."),
    accountant: str = typer.Option("rdp", "--accountant", help="rdp or prv."),
    min_noise_multiplier: float = typer.Option(
        None, "--min-noise-multiplier",
        help="The sites' floor on σ (their policy's min-noise-multiplier; default: the default policy's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Noise multiplier σ and sampling rate q each site will use so that rounds × local steps stay within the
    target ε at δ: the same planning function the sites run (privacy.accounting.plan_site)."""
    import math

    from privacy.accounting import plan_sigma, plan_site
    from privacy.policy import SitePolicy

    floor = SitePolicy().min_noise_multiplier if min_noise_multiplier is None else min_noise_multiplier
    if not (math.isfinite(floor) and floor >= 0):
        raise FedECGError(f"--min-noise-multiplier must be a finite number >= 0, got {floor}")

    if (sample_rate is None) == (not records):
        raise FedECGError("give either --sample-rate or --records (with --batch)")
    if records and not batch:
        raise FedECGError("--records needs --batch (expected batch size)")
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise FedECGError(f"--target-epsilon must be a finite number > 0, got {target_epsilon}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise FedECGError(f"--delta must be in (0, 1), got {delta}")
    if rounds < 1 or local_steps < 1:
        raise FedECGError("--rounds and --local-steps must be >= 1")
    if sample_rate is not None and not (math.isfinite(sample_rate) and 0 < sample_rate <= 1):
        raise FedECGError(f"--sample-rate must be in (0, 1], got {sample_rate}")
    if records and (batch < 1 or min(records) < 1):
        raise FedECGError("--records and --batch must be >= 1")
    steps = rounds * local_steps
    if sample_rate is not None:
        plans = {"all": (sample_rate, max(plan_sigma(target_epsilon, delta, sample_rate, steps, accountant), floor))}
    else:  # what each site computes: q = Opacus' 1 / number of batches, then sigma (privacy.accounting.plan_site)
        plans = {}
        for i, n in enumerate(records):
            site_plan = plan_site(target_epsilon, delta, n, batch, steps, accountant, floor)
            plans[str(i)] = (site_plan.sample_rate, site_plan.noise_multiplier)
    out = {}
    for name, (q, sigma) in plans.items():
        out[name] = {
            "sample_rate": q,
            "steps": steps,
            "target_epsilon": target_epsilon,
            "delta": delta,
            "noise_multiplier": sigma,
            "min_noise_multiplier": floor,
            "accountant": accountant,
        }
    if as_json:
        typer.echo(json.dumps({"sites": out}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Noise for ε ≤ {target_epsilon} at δ = {delta:.0e} over {rounds}×{local_steps} steps"
    )
    for col in ("site", "records", "q", "steps", "σ needed"):
        table.add_column(col, justify="right")
    for i, (name, row) in enumerate(out.items()):
        table.add_row(
            name,
            str(records[i]) if records else "-",
            f"{row['sample_rate']:.4f}",
            str(steps),
            f"{row['noise_multiplier']:.3f}",
        )
    Console().print(table)


def policy(
    node_config: str = typer.Option(
        "", "--node-config", help="The SuperNode's --node-config string (e.g. \"dp-required=true delta=1e-5\")."
    ),
    policy_file: Path = typer.Option(None, "--file", help="A site privacy policy file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The privacy policy a site enforces (privacy.policy): what its node config (and policy file) give,
    with the defaults for what they leave out. A bad key or value exits non-zero."""
    from privacy.policy import POLICY_FILE_KEY, SitePolicy

    values: dict = {}
    if node_config.strip():
        from flwr.common.config import parse_config_args

        try:
            values = parse_config_args([node_config])
        except Exception as exc:  # click.ClickException for TOML errors
            raise FedECGError(f"--node-config: {getattr(exc, 'message', exc)}") from exc
    if policy_file is not None:
        values.setdefault(POLICY_FILE_KEY, str(policy_file))
    result = SitePolicy.from_node_config(values)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"site privacy policy: {result.describe()}")
    for key, value in result.to_node_config().items():
        typer.echo(f"  {key} = {value}")


def register(app: typer.Typer) -> None:
    """Add `fedecg privacy budget|plan|policy`."""
    group = typer.Typer(
        help="Privacy budget accounting (Opacus RDP/PRV, cross-checked with dp-accounting).",
        no_args_is_help=True,
    )
    group.command("budget")(budget)
    group.command("plan")(plan)
    group.command("policy")(policy)
    app.add_typer(group, name="privacy")
