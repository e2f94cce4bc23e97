"""Logging set-up for the CLI (library code only uses `logging.getLogger(__name__)`)."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(rich_tracebacks=False, show_path=False)], force=True)
    logging.getLogger("flwr").propagate = False  # Flower logs through its own console handler
    for noisy in ("matplotlib", "numba", "PIL", "urllib3", "alembic", "filelock", "asyncio", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
