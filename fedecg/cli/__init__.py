"""The `fedecg` command: a thin shell over functions in the rooms (each command's work is a plain function).

Each room owns one module here with a ``register(app)`` function that adds its commands; heavy imports
(torch, flwr) happen inside the commands so `fedecg --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from fedecg.errors import FedECGError

# module name under fedecg.cli → owner room
_COMMAND_MODULES = ("data", "bench", "run", "synthesize", "evaluate", "privacy", "audit", "deploy")

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
    import warnings

    # Known-harmless library chatter (the CLI only; library code leaves warning filters alone).
    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module="wfdb")
    warnings.filterwarnings("ignore", message="The inplace keyword")
    try:
        app()
    except FedECGError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
