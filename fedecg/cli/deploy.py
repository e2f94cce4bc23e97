"""`fedecg deploy ...`: provision a consortium, write per-site data folders, try the deployment on one machine."""

from __future__ import annotations

from pathlib import Path

import typer

from fedecg.errors import FedECGError

deploy_app = typer.Typer(
    help="Real cross-institution deployment: certificates and site bundles, per-site data folders, and a "
         "one-machine launcher (SuperLink + SuperNodes on 127.0.0.1 with TLS and node authentication).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(deploy_app, name="deploy")


def _split_csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


@deploy_app.command("provision")
def provision(
    out: Path = typer.Argument(..., help="New folder for the consortium (coordinator/ + sites/<site>/)."),
    sites: str = typer.Option(..., "--sites", help="Comma-separated site names, e.g. charite,ukbb,mhh."),
    superlink_host: str = typer.Option(..., "--superlink-host",
                                       help="Host name or IP the hospitals use to reach the SuperLink."),
    port: int = typer.Option(8000, "--port", help="SuperLink HTTPS port (Fleet/Control/Runtime APIs)."),
    san: list[str] = typer.Option([], "--san", help="Extra certificate name or IP (repeatable)."),
    name: str = typer.Option("fedecg-consortium", "--name", help="Consortium name (CA and key comments)."),
) -> None:
    """Create a CA, the SuperLink TLS certificate, one ECDSA key pair and start-up bundle per site."""
    from deploy.provision import ConsortiumSpec, provision_consortium

    spec = ConsortiumSpec(sites=_split_csv(sites), superlink_host=superlink_host, port=port, sans=tuple(san),
                          name=name)
    cons = provision_consortium(out, spec)
    typer.echo(f"consortium written to {cons.root}")
    typer.echo(f"  coordinator (keep; holds the CA key): {cons.coordinator}")
    for site, paths in cons.sites.items():
        typer.echo(f"  hand to {site}: {paths.root}")
    typer.echo(f"next: read {cons.coordinator / 'README.md'}")


@deploy_app.command("split-sites")
def split_sites_cmd(
    dataset: Path = typer.Argument(..., help="PTB-XL-layout folder (ptbxl_database.csv, records100/ ...)."),
    out: Path = typer.Argument(..., help="New folder: one PTB-XL-layout sub-folder per site."),
    by: str = typer.Option("site", "--by", help="Partition: site, iid or dirichlet."),
    num_clients: int = typer.Option(4, "--num-clients", help="Clients for iid/dirichlet."),
    min_records: int = typer.Option(1, "--min-records", help="Sites with fewer records are pooled."),
    hr: bool = typer.Option(False, "--hr/--no-hr", help="Also copy the 500 Hz records (records500/)."),
    copy: bool = typer.Option(False, "--copy", help="Copy record files instead of hard-linking them."),
) -> None:
    """Write each site's records as its own PTB-XL-layout folder (what a hospital's SuperNode reads)."""
    from deploy.sites import split_sites

    options = {} if by == "site" else {"num_clients": num_clients}
    folders = split_sites(dataset, out, by=by, include_hr=hr, link=not copy, min_records=min_records, **options)
    for f in folders:
        typer.echo(f"{f.client_id}: {f.n_records} records → {f.path}")


def _site_folders(sites_dir: Path | None, site: list[str], only: str) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    if sites_dir is not None:
        if not sites_dir.is_dir():
            raise FedECGError(f"--sites-dir {sites_dir} is not a folder")
        for sub in sorted(sites_dir.iterdir()):
            if (sub / "ptbxl_database.csv").is_file():
                folders[sub.name] = sub
    for item in site:
        if "=" not in item:
            raise FedECGError(f"--site expects NAME=PATH, got {item!r}")
        key, value = item.split("=", 1)
        folders[key.strip()] = Path(value.strip())
    if only:
        wanted = _split_csv(only)
        missing = [w for w in wanted if w not in folders]
        if missing:
            raise FedECGError(f"--only names unknown sites {missing}; known: {sorted(folders)}")
        folders = {w: folders[w] for w in wanted}
    if not folders:
        raise FedECGError("no site folders: give --sites-dir (from `fedecg deploy split-sites`) or --site NAME=PATH")
    return folders


@deploy_app.command("local")
def local(
    work_dir: Path = typer.Argument(..., help="Working folder: consortium, logs, FLWR_HOMEs, run directory."),
    sites_dir: Path = typer.Option(None, "--sites-dir", help="Folder of per-site PTB-XL folders (split-sites)."),
    site: list[str] = typer.Option([], "--site", help="NAME=PATH of one site's PTB-XL folder (repeatable)."),
    only: str = typer.Option("", "--only", help="Comma-separated subset of the sites to start."),
    consortium: Path = typer.Option(None, "--consortium",
                                    help="A provisioned consortium folder (default: provision one in WORK_DIR)."),
    app_dir: Path = typer.Option(Path("."), "--app", help="Flower project to run (default: current folder)."),
    scenario: str = typer.Option("", "--scenario", help="Run-config `scenario` (YAML path, relative to --app)."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Where the ServerApp writes (default WORK_DIR/run)."),
    set_: list[str] = typer.Option([], "--set", help="Scenario override key=value (repeatable)."),
    smoke: bool = typer.Option(False, "--smoke", help="Run the no-training smoke app instead (checks wiring)."),
    rounds: int = typer.Option(2, "--smoke-rounds", help="Rounds of the smoke app."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds to wait for the run to finish."),
    workers: bool = typer.Option(True, "--workers/--no-workers",
                                 help="A resident worker per site (deploy.worker, the default): torch, data and model "
                                      "stay warm; --no-workers: a fresh ClientApp process does all the work. "
                                      "Not started for --smoke."),
) -> None:
    """Start a SuperLink and one SuperNode per site on 127.0.0.1 (TLS + node auth), run the app, stop all.

    Exits non-zero unless the run finished with status finished:completed (`flwr run` itself does not tell)."""
    import signal

    from deploy.local import run_local
    from deploy.provision import ConsortiumSpec, load_consortium, provision_consortium

    work_dir = work_dir.resolve()
    folders = _site_folders(sites_dir, site, only)
    if consortium is not None:
        cons = load_consortium(consortium)
    elif (work_dir / "consortium" / "consortium.json").is_file():
        cons = load_consortium(work_dir / "consortium")
    else:
        cons = provision_consortium(work_dir / "consortium",
                                    ConsortiumSpec(sites=tuple(folders), superlink_host="127.0.0.1"))
    if smoke:
        from deploy.smoke import write_smoke_app

        app = write_smoke_app(work_dir / "smoke-app")
        run_config: dict[str, object] = {"rounds": rounds, "min-nodes": len(folders),
                                         "out": str(work_dir / "smoke.jsonl")}
    else:
        app = app_dir.resolve()
        run_config = fedecg_run_config(app, scenario, run_dir or work_dir / "run", set_)

    def _term(signum, frame):  # noqa: ANN001 — SIGTERM behaves like Ctrl-C: stop every process, then exit
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _term)
    try:
        result = run_local(cons, work_dir, folders, app, run_config, timeout=timeout,
                           workers=workers and not smoke)  # the smoke app has no worker hook
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(f"run {result.run_id}: {result.status} in {result.elapsed_s:.0f} s (log {result.log_path})")
    if not smoke:
        typer.echo(f"run directory: {run_config.get('run-dir')}")


def fedecg_run_config(app: Path, scenario: str, run_dir: Path, overrides: list[str]) -> dict[str, object]:
    """Run-config for the fedecg apps: only keys the app's pyproject declares (flwr refuses unknown keys).
    ``overrides`` travel as one ``;``-separated string (fedecg.config.join_overrides / split_overrides)."""
    from fedecg.config import join_overrides

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    try:
        declared = tomllib.loads((app / "pyproject.toml").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FedECGError(f"{app} has no pyproject.toml: --app must be the Flower project folder") from None
    keys = declared.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    wanted: dict[str, object] = {"run-dir": str(Path(run_dir).resolve()), "mode": "deployment"}
    if scenario:
        wanted["scenario"] = scenario
    if overrides:
        wanted["overrides"] = join_overrides(overrides)
    missing = [k for k in wanted if k not in keys and k != "mode"]
    if missing:
        raise FedECGError(f"{app / 'pyproject.toml'} [tool.flwr.app.config] lacks {missing}: `flwr run` would "
                          "refuse them")
    return {k: v for k, v in wanted.items() if k in keys}
