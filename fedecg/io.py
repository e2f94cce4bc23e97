"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _default_perms() -> int:
    """What ``open()`` would give a new file: 0o666 minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, perms: int | None = None, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path`` atomically.

    The file gets ``perms`` (e.g. 0o600 for a private key; set before the rename, so it is never visible with
    wider permissions) or, by default, the permissions a plain ``open()`` would give it. On an exception the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_perms() if perms is None else perms)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, perms: int | None = None) -> None:
    with atomic_open(path, "wb", perms=perms) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def atomic_save(path: str | os.PathLike, writer: Callable[[IO], None]) -> None:
    """Call ``writer(fh)`` on a binary temporary file and rename it over ``path`` (e.g. ``torch.save``)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON object as a line and fsync (a crash loses at most the line being written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, default=_json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_json_object(path: str | os.PathLike, label: str = "") -> dict | None:
    """The JSON object in ``path``, or None when the file does not exist; FedECGError (``label path: ...``)
    when it is unreadable, not JSON, or not an object."""
    from fedecg.errors import FedECGError

    path = Path(path)
    where = f"{label} {path}" if label else str(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FedECGError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise FedECGError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, ignoring a torn last line left by a crash."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return rows


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
