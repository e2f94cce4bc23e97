"""Logging set-up for the CLI (library code only uses `logging.getLogger(__name__)`)."""

from __future__ import annotations

import logging
import os
import sys

from rich.logging import RichHandler


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(rich_tracebacks=False, show_path=False)], force=True)
    logging.getLogger("flwr").propagate = False  # Flower logs through its own console handler
    _flower_colours(sys.stderr.isatty() and "NO_COLOR" not in os.environ)
    for noisy in ("matplotlib", "numba", "PIL", "urllib3", "alembic", "filelock", "asyncio", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _flower_colours(on: bool) -> None:
    """Flower's console handler writes ANSI colour codes unconditionally: only on a terminal here (a log file or
    a CI log gets plain ``INFO :`` lines). Processes Flower starts itself (Ray workers) keep Flower's default."""
    try:
        from flwr.supercore.logger import update_console_handler
    except ImportError:  # another Flower layout: leave it as it is
        return
    update_console_handler(colored=on)
