"""The `fedecg` command: a thin shell over functions in the rooms (each command's work is a plain function).

Each room owns one module here with a ``register(app)`` function that adds its commands; heavy imports
(torch, flwr) happen inside the commands so `fedecg --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import typer

from fedecg.errors import FedECGError

# Known-harmless library chatter, silenced for the CLI only (library code leaves warning filters alone).
# Set before the command modules are imported: some libraries warn at import time.
for _message in ("Secure RNG turned off", "Full backward hook is firing", "The given NumPy array is not writable",
                 "The inplace keyword", "Optimal order is the"):
    warnings.filterwarnings("ignore", message=_message)
warnings.filterwarnings("ignore", category=FutureWarning)

# module name under fedecg.cli → owner room
_COMMAND_MODULES = ("data", "bench", "run", "pretrain", "synthesize", "evaluate", "privacy", "audit", "deploy")

app = typer.Typer(
    name="fedecg",
    help="Federated, privacy-preserving training of a conditional ECG generator (SSSD-MIDT) across hospitals.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    from fedecg.logs import setup_logging

    setup_logging(verbose)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"fedecg.cli.{_name}").register(app)


def main() -> None:
    """Entry point: run the app; a FedECGError becomes one readable line and exit code 2."""
    from fedecg.rooms import check_rooms

    try:
        check_rooms()  # a foreign `client`/`server`/... package on sys.path: one line, before any command
        app()
    except FedECGError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
