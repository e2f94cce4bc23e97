"""The one change client/app.py needs for the resident site worker (deploy.worker), as exact text edits.

``HOOK_EDITS`` puts ``client.worker_channel.forward_to_worker`` first among the ClientApp's mods (train/evaluate go
to the site's worker when the node config names one) and defers ``fedecg.config`` (which imports pandas) to
where it is used, so the thin ``flwr-clientapp`` process imports no pandas and no torch. Until client/app.py
carries the hook, :func:`hooked_project` makes a copy of the project with it applied, for the deployment bench
(bench/bench_deploy.py --worker) and the worker's deployment tests; ``python -m deploy.worker_hook`` prints the
edits as a unified diff.
"""

from __future__ import annotations

import difflib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_LEDGER = "from privacy.ledger import LedgerStore, LifetimeLedger\n"
_DOC = '    """The run configuration the server sent, validated (a malformed message gets a clear error)."""\n'
HOOK_EDITS = (  # (old, new) on client/app.py: forward train/evaluate to the worker; no fedecg.config at import
    ("from pathlib import Path\n", "from pathlib import Path\nfrom typing import TYPE_CHECKING\n"),
    (_LEDGER, _LEDGER + "from client.worker_channel import forward_to_worker\n"),
    ("from fedecg.config import ScenarioConfig\nfrom fedecg.errors import FedECGError\n",
     "from fedecg.errors import FedECGError\n\nif TYPE_CHECKING:  # imported where used: fedecg.config pulls pandas\n"
     "    from fedecg.config import ScenarioConfig\n"),
    ("app = ClientApp(mods=[egress_guard])", "app = ClientApp(mods=[forward_to_worker, egress_guard])"),
    (_DOC, _DOC + "    from fedecg.config import ScenarioConfig\n\n"),
)


def hooked_client_app(text: str) -> str:
    """client/app.py with the worker hook (HOOK_EDITS); unchanged if it already has it."""
    if "forward_to_worker" in text:
        return text
    for old, new in HOOK_EDITS:
        if text.count(old) != 1:
            raise SystemExit(f"client/app.py changed: cannot apply the worker hook (looked for {old.strip()!r})")
        text = text.replace(old, new)
    return text


def hooked_project(root: Path, dest: Path, *, worker: bool = True, server_poll: bool = False) -> Path:
    """A copy of the project at ``root`` (what `flwr run` packs into the FAB) with the worker hook in
    client/app.py and, with ``server_poll``, the ServerApp's 0.5 s reply poll in server/loop.py."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "tests", "data", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"))
    if worker:
        app = dest / "client" / "app.py"
        app.write_text(hooked_client_app(app.read_text()))
    if server_poll:
        loop = dest / "server" / "loop.py"
        loop.write_text(hooked_server_loop(loop.read_text()))
    return dest


SERVER_POLL_FN = '''

REPLY_POLL_S = 0.5  # Flower 1.41's deployment Grid (HttpGrid.send_and_receive) sleeps 3 s between reply pulls


def send_and_receive(grid, messages, timeout: float | None):  # noqa: ANN001, ANN201 - flwr Grid, Messages
    """Grid.send_and_receive, with replies pulled every REPLY_POLL_S s on the deployment Grid (Flower's own
    loop waits 3 s between pulls, on average 1.5 s per phase lost); other Grids keep their own loop."""
    from flwr.superlink.grid.http_grid import HttpGrid

    if not isinstance(grid, HttpGrid):
        return grid.send_and_receive(messages, timeout=timeout)
    pending = set(grid.push_messages(messages))
    end = time.time() + (timeout if timeout is not None else 0.0)
    replies = []
    while pending and (timeout is None or time.time() < end):
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if pending:
            time.sleep(REPLY_POLL_S)
    return replies
'''
SERVER_POLL_EDITS = (  # (old, new) on server/loop.py: the ServerApp pulls replies every 0.5 s, not 3 s
    ("log = logging.getLogger(__name__)\n", "log = logging.getLogger(__name__)\n" + SERVER_POLL_FN),
    ("grid.send_and_receive(train_msgs, timeout=cfg.strategy.round_timeout_s)",
     "send_and_receive(grid, train_msgs, timeout=cfg.strategy.round_timeout_s)"),
    ("grid.send_and_receive(eval_msgs, timeout=cfg.strategy.round_timeout_s)",
     "send_and_receive(grid, eval_msgs, timeout=cfg.strategy.round_timeout_s)"),
)


def hooked_server_loop(text: str) -> str:
    """server/loop.py with the 0.5 s reply poll (SERVER_POLL_EDITS); unchanged if it already has it."""
    if "REPLY_POLL_S" in text:
        return text
    for old, new in SERVER_POLL_EDITS:
        if text.count(old) != 1:
            raise SystemExit(f"server/loop.py changed: cannot apply the reply-poll edit (looked for {old.strip()!r})")
        text = text.replace(old, new)
    return text


def hook_diff(root: Path = ROOT) -> str:
    """The hook as a unified diff of ``client/app.py`` ('' when it is already there)."""
    out = []
    for rel, edit in (("client/app.py", hooked_client_app), ("server/loop.py", hooked_server_loop)):
        old = (root / rel).read_text()
        out += difflib.unified_diff(old.splitlines(True), edit(old).splitlines(True), f"a/{rel}", f"b/{rel}")
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(hook_diff())
