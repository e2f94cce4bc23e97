"""``python -m deploy.supernode [flower-supernode options]``: Flower's SuperNode with a shorter idle back-off.

Flower 1.41's SuperNode loop (``flwr.supernode.start_client_internal.start_client_internal``) pulls the
SuperLink for a message and, when there is none, sleeps a hard-coded ``time.sleep(3)`` before pulling again. So
every message a ServerApp sends waits on average 1.5 s (up to 3 s) before the site even sees it: a train and an
evaluate message per round cost up to 6 s of pure waiting per round. Flower offers no option for it (its
SuperExec's poll has one, ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``).

This entry point runs the unmodified ``flower-supernode`` main function with one change: that idle ``sleep(3)``
becomes ``$FEDECG_SUPERNODE_IDLE_POLL_S`` seconds (default 3, i.e. Flower's behaviour; the start scripts and
``fedecg deploy local`` set 1). Everything else, TLS, node authentication, the SuperExec and its ClientApp
processes, is Flower's own code. The cost of a shorter back-off is one more authenticated HTTPS pull per
interval and site while idle (a few hundred bytes; at 1 s, 20 hospitals are 20 small requests per second at
the SuperLink).

The patch applies only when the installed Flower's loop still contains the exact ``time.sleep(3)`` it replaces
(checked in the source); with another Flower version it logs a warning and leaves Flower as it is.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import time as _time

IDLE_ENV = "FEDECG_SUPERNODE_IDLE_POLL_S"
FLOWER_IDLE_S = 3.0  # flwr 1.41: `time.sleep(3)` after an empty pull
MIN_IDLE_S, MAX_IDLE_S = 0.1, 60.0

log = logging.getLogger(__name__)

# Flower's SuperNode internals are imported where used (patch_idle_poll, main): only this launcher needs them,
# and deploy.local imports this module for IDLE_ENV and FLOWER_IDLE_S without loading Flower.


class _IdleClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: ``sleep(3)`` (the idle back-off)
    sleeps ``idle_s`` instead; every other sleep and attribute is the real ``time`` module's."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s

    def __getattr__(self, name: str):
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        _time.sleep(self.idle_s if seconds == FLOWER_IDLE_S else seconds)


def idle_poll_from_env(environ: dict | None = None) -> float:
    """The idle back-off asked for in ``$FEDECG_SUPERNODE_IDLE_POLL_S`` (default Flower's 3 s)."""
    raw = (os.environ if environ is None else environ).get(IDLE_ENV, "").strip()
    if not raw:
        return FLOWER_IDLE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and MIN_IDLE_S <= value <= MAX_IDLE_S):
        raise SystemExit(f"{IDLE_ENV} must be a number of seconds between {MIN_IDLE_S} and {MAX_IDLE_S}, "
                         f"got {raw!r}")
    return value


def patch_idle_poll(idle_s: float) -> bool:
    """Make Flower's SuperNode sleep ``idle_s`` instead of 3 s after an empty pull. False (and Flower left as
    it is) when the installed Flower's loop does not look like the one this was written for."""
    from flwr.supernode import start_client_internal as sci  # local: see the note at the imports

    try:
        source = inspect.getsource(sci.start_client_internal)
    except (OSError, TypeError):
        source = ""
    if source.count("time.sleep(3)") != 1 or not hasattr(sci, "time"):
        log.warning("deploy.supernode: this Flower's SuperNode loop has no single `time.sleep(3)`; keeping "
                    "Flower's idle back-off")
        return False
    sci.time = _IdleClock(idle_s)
    return True


def main(argv: list[str] | None = None) -> None:
    idle_s = idle_poll_from_env()
    if idle_s != FLOWER_IDLE_S:
        patch_idle_poll(idle_s)
    from flwr.supernode.cli.flower_supernode import flower_supernode  # local: see the note at the imports

    sys.argv = ["flower-supernode", *(sys.argv[1:] if argv is None else argv)]
    flower_supernode()


if __name__ == "__main__":
    main()
