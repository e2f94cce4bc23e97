"""`fedecg data ...`: check, partition, demo and download PTB-XL folders (work done in ``ptbxl``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from fedecg.errors import FedECGError

data_app = typer.Typer(
    help="PTB-XL data: validate, partition into sites, generate demo data, download.", no_args_is_help=True
)


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


@data_app.command("check")
def check(
    directory: Path = typer.Argument(..., help="PTB-XL folder (PhysioNet layout)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    deep: bool = typer.Option(False, "--deep", help="Also read every signal and check it is finite."),
) -> None:
    """Validate every record (headers, sampling rate, leads, length, signal files); exit 1 if any is bad."""
    from rich.progress import Progress
    from rich.table import Table

    from ptbxl.check import check_dataset

    if as_json:
        report = check_dataset(directory, deep=deep)
        _print_json(report.to_dict())
    else:
        console = _console()
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("checking records", total=None)
            report = check_dataset(
                directory,
                deep=deep,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        console.print(f"[bold]{report.root}[/]: {report.records_ok}/{report.n_rows} records OK")
        table = Table("site", "records OK")
        for site, n in report.sites.items():
            table.add_row(site, str(n))
        console.print(table)
        console.print("per fold: " + ", ".join(f"{k}: {v}" for k, v in report.folds.items()))
        for w in report.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        for item in report.bad:
            console.print(f"[red]BAD[/] {item['record']}: {item['reason']}")
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("partition")
def partition(
    directory: Path = typer.Argument(..., help="PTB-XL folder, or one holding only ptbxl_database.csv."),
    by: str = typer.Option("site", "--by", help="site | iid | dirichlet"),
    num_clients: int = typer.Option(4, "--num-clients", help="Clients for iid/dirichlet."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration (smaller = more skew)."),
    min_records: int = typer.Option(1, "--min-records", help="Sites below this form the long tail."),
    tail: str = typer.Option("pool", "--tail", help="Long-tail policy: pool | drop."),
    cross_site: str = typer.Option(
        "keep", "--cross-site", help="Patients seen at several sites: keep | majority."
    ),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write the manifest JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Split into clients (per site, IID or Dirichlet label skew) and train/val/test (strat_fold 1-8/9/10)."""
    from ptbxl.labels import LabelVocab
    from ptbxl.layout import dataset_root, read_database, read_scp_statements
    from ptbxl.partition import partition_dataset

    meta = read_database(directory)
    root = dataset_root(directory)
    try:
        vocab = LabelVocab.from_statements(read_scp_statements(root))
    except FedECGError:
        vocab = LabelVocab.default()  # metadata-only folder
    manifest = partition_dataset(
        meta,
        vocab=vocab,
        dataset=str(root.resolve()),
        by=by,
        num_clients=num_clients,
        alpha=alpha,
        min_records=min_records,
        tail=tail,
        cross_site=cross_site,
        seed=seed,
    )
    if out is not None:
        manifest.save(out)
    rows = [
        {
            "client_id": c.client_id,
            "site": c.site,
            "n_records": c.n_records,
            **c.counts,
            "patients": int(meta.loc[c.ecg_ids(), "patient_id"].nunique()),
        }
        for c in manifest.clients
    ]
    unassigned = {k: len(v) for k, v in manifest.unassigned.items()}
    if as_json:
        _print_json(
            {
                "by": by,
                "n_clients": len(rows),
                "clients": rows,
                "unassigned": unassigned,
                "manifest": str(out) if out else None,
            }
        )
        return
    from rich.table import Table

    table = Table(
        "client",
        "site",
        "records",
        "train",
        "val",
        "test",
        "patients",
        "age",
        "female",
        "top class",
        title=f"{len(rows)} clients by {by}",
    )
    for c, row in zip(manifest.clients, rows, strict=False):
        demo, sup = c.demographic_summary, c.label_summary.get("superclass", {})
        top = max(sup, key=sup.get) if sup and max(sup.values()) else "-"
        site = (
            ",".join(map(str, c.site))
            if isinstance(c.site, list)
            else str(c.site if c.site is not None else "-")
        )
        table.add_row(
            c.client_id,
            site if len(site) < 24 else site[:21] + "...",
            str(c.n_records),
            str(row["train"]),
            str(row["val"]),
            str(row["test"]),
            str(row["patients"]),
            f"{demo.get('age_mean') or float('nan'):.0f}",
            f"{(demo.get('female_frac') or 0) * 100:.0f}%",
            top,
        )
    console = _console()
    console.print(table)
    for k, n in unassigned.items():
        if n:
            console.print(f"unassigned ({k}): {n} record(s)")
    if out is not None:
        console.print(f"manifest written to {out}")


@data_app.command("demo")
def demo(
    dest: Path = typer.Argument(..., help="Folder to create (PTB-XL layout)."),
    n_records: int = typer.Option(480, "--n-records"),
    n_sites: int = typer.Option(5, "--n-sites"),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty folder."),
) -> None:
    """Generate the built-in synthetic demo dataset in PTB-XL's exact layout."""
    from ptbxl.demo import make_demo_dataset

    path = make_demo_dataset(dest, n_records=n_records, n_sites=n_sites, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {n_records} synthetic records ({n_sites} sites) to {path}")


@data_app.command("download")
def download(
    dest: Path = typer.Argument(..., help="Folder to download into (re-run to resume)."),
    url: str = typer.Option(
        "https://physionet.org/files/ptb-xl/1.0.3/", "--url", help="Base URL holding SHA256SUMS.txt."
    ),
    include: list[str] = typer.Option(
        [], "--include", help="Only paths starting with this prefix (repeatable)."
    ),
    workers: int = typer.Option(4, "--workers", help="Parallel downloads."),
    retries: int = typer.Option(3, "--retries", help="Resumed retries per file after a dropped connection."),
) -> None:
    """Download PTB-XL (resumable with HTTP Range, verified against SHA256SUMS.txt)."""
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ptbxl.download import download_dataset

    lock, received = threading.Lock(), [0]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TextColumn("{task.fields[mb]:.1f} MB"),
        TimeElapsedColumn(),
        console=_console(),
    ) as bar:
        task = bar.add_task("download", total=None, mb=0.0)

        def on_bytes(n: int) -> None:
            with lock:
                received[0] += n
                bar.update(task, mb=received[0] / 1e6)

        result = download_dataset(
            dest,
            url,
            include=tuple(include),
            workers=workers,
            retries=retries,
            on_file=lambda _p, n: bar.update(task, advance=1, total=n),
            on_bytes=on_bytes,
        )
    typer.echo(
        f"{result.downloaded} downloaded, {result.skipped} already present and verified, "
        f"{result.bytes / 1e6:.1f} MB in {result.dest}"
    )


def register(app: typer.Typer) -> None:
    """Add the `data` command group to the root app."""
    app.add_typer(data_app, name="data")
