"""Did a deployed run complete? ``flwr run`` exits 0 as soon as the run is submitted, even if it fails later.

Two sources tell: the SuperLink's run status (``flwr ls --run-id N --format json``: ``finished:completed``,
``finished:failed``, ...) and the run directory the fedecg ServerApp writes (``RUN_DIR/status.json``, see
server/rundir.py: ``{"status": "running" | "completed" | "failed", "round": r, "error": "..."}``).
A run counts as completed only when every source that can be read says so.

Used by the coordinator's ``run-app.sh`` (deploy/templates) and by ``fedecg deploy local``::

    flwr run APP consortium --format json [options] | python -m deploy.runstatus run-id
    python -m deploy.runstatus check --connection consortium --run-id N [-- <the flwr run options>]
    python -m deploy.runstatus check --run-dir RUN_DIR

``check`` prints one line per source and a verdict, and exits 0 only for a completed run (1 otherwise, 2 for
bad arguments). The run directory is taken from ``--run-dir`` or from a ``run-dir`` key in the ``flwr run``
options after ``--`` (``--run-config 'k=v run-dir="..."'`` or ``--run-config file.toml``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fedecg.rundir import RunLayout

FINISHED_OK = "finished:completed"
RUN_DIR_KEY = "run-dir"


@dataclass
class Verdict:
    """What the sources said: ``ok`` only when every readable source reports a completed run."""

    ok: bool
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)


def read_status_file(run_dir: Path) -> dict:
    """``RUN_DIR/status.json`` as a dict; ``{"status": "missing"}`` without one, ``{"status": "unreadable",
    "error": ...}`` when it is not a JSON object."""
    path = RunLayout(run_dir).status_path
    if not path.is_file():
        return {"status": "missing"}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"status": "unreadable", "error": f"{path}: {exc}"}
    if not isinstance(data, dict):
        return {"status": "unreadable", "error": f"{path}: not a JSON object"}
    return data


def describe_status_file(run_dir: Path, status: dict | None = None) -> tuple[bool, str]:
    """(completed?, one line) for a run directory's status.json."""
    st = read_status_file(run_dir) if status is None else status
    state = str(st.get("status", "?"))
    where = f"run directory {run_dir}"
    if state == "completed":
        extra = ""
        if st.get("rounds_without_update"):
            extra = f"; rounds without an accepted update: {st['rounds_without_update']}"
        return True, f"{where}: completed, {st.get('round', '?')} rounds{extra}"
    if state == "missing":
        return False, (f"{where}: no status.json: the ServerApp never started this run there (a wrong "
                       "run-dir, or it failed before writing; see the run's log: flwr log <run-id>)")
    if state == "failed":
        return False, (f"{where}: FAILED after round {st.get('round', '?')}: {st.get('error', 'no error recorded')}")
    if state == "running":
        return False, (f"{where}: still 'running' at round {st.get('round', '?')}: the ServerApp stopped without "
                       "finishing it (killed or stopped); resume by running it again with the same run-dir")
    return False, f"{where}: {state}" + (f": {st['error']}" if st.get("error") else "")


def run_dir_from_flwr_options(options: list[str]) -> Path | None:
    """The ``run-dir`` a ``flwr run`` command line sets with ``--run-config``/``-c`` (inline TOML pairs or a
    TOML file), parsed by Flower's own parser (flwr.common.config.parse_config_args), or None."""
    values: list[str] = []
    i = 0
    while i < len(options):
        opt = options[i]
        if opt in ("--run-config", "-c") and i + 1 < len(options):
            values.append(options[i + 1])
            i += 1
        elif opt.startswith("--run-config="):
            values.append(opt.split("=", 1)[1])
        i += 1
    if not values:
        return None
    # local: Flower (~0.5 s, grpc) only to read flwr run options; `run-id` and `check --run-dir` start without it
    from flwr.common.config import parse_config_args

    try:
        config = parse_config_args(values)
    except Exception:  # noqa: BLE001 - Flower raises click/TOML/OS errors; `flwr run` has reported them already
        return None
    value = config.get(RUN_DIR_KEY)
    return Path(value) if isinstance(value, str) and value else None


def flwr_run_status(connection: str, run_id: int, flwr: str = "flwr") -> tuple[str, str]:
    """(status, detail) of ``run_id`` from ``flwr ls``; status ``unknown`` when the SuperLink cannot be asked."""
    try:
        res = subprocess.run([flwr, "ls", connection, "--run-id", str(run_id), "--format", "json"],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unknown", str(exc)
    data = _last_json(res.stdout)
    runs = (data or {}).get("runs") or []
    if not runs:
        return "unknown", (res.stdout + res.stderr).strip()[-300:]
    return str(runs[0].get("status", "unknown")), ""


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.strip().startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                break
            return obj if isinstance(obj, dict) else None
    try:
        obj = json.loads(text[text.index("{"):])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def verdict(flower_status: str | None = None, run_dir: Path | None = None, run_id: int | None = None) -> Verdict:
    """Combine the SuperLink's status (None: not asked) and the run directory's status.json (None: unknown)."""
    v = Verdict(ok=True)
    if flower_status is not None:
        ok = flower_status == FINISHED_OK
        v.lines.append(f"run {run_id if run_id is not None else '?'}: {flower_status} (SuperLink)")
        v.ok &= ok
    if run_dir is not None:
        ok, line = describe_status_file(run_dir)
        v.lines.append(line)
        v.ok &= ok
    if flower_status is None and run_dir is None:
        v.ok = False
        v.lines.append("nothing to check: give --run-id (and --connection) or a run directory")
    v.lines.append("run completed" if v.ok else "RUN DID NOT COMPLETE")
    return v


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rest: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m deploy.runstatus", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run-id", help="read `flwr run --format json` output on stdin, print the run ID")
    chk = sub.add_parser("check", help="exit 0 only if the run completed")
    chk.add_argument("--connection", default=os.environ.get("FEDECG_CONNECTION", "consortium"))
    chk.add_argument("--run-id", type=int)
    chk.add_argument("--run-dir", type=Path)
    chk.add_argument("--flwr", default="flwr")
    args = parser.parse_args(argv)
    if args.cmd == "run-id":
        text = sys.stdin.read()
        data = _last_json(text) or {}
        if not data.get("success") or not data.get("run-id"):
            print(f"error: `flwr run` did not start a run: {text.strip()[-500:]}", file=sys.stderr)
            return 1
        print(int(data["run-id"]))
        return 0
    flower = None
    if args.run_id is not None:
        flower, detail = flwr_run_status(args.connection, args.run_id, args.flwr)
        if detail:
            print(f"(flwr ls: {detail})", file=sys.stderr)
    run_dir = args.run_dir or run_dir_from_flwr_options(rest)
    if run_dir is not None and not run_dir.is_absolute() and not run_dir.exists():
        print(f"note: run-dir {run_dir} is relative to the ServerApp's working folder; not read here",
              file=sys.stderr)
        run_dir = None
    v = verdict(flower, run_dir, args.run_id)
    print(v.text(), file=sys.stdout if v.ok else sys.stderr)
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
