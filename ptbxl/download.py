"""Download PTB-XL from PhysioNet: every file listed in the published ``SHA256SUMS.txt``, resumable, verified.

For each listed file: skip it when ``dest/<path>`` already has the right SHA-256; otherwise fetch into
``<path>.part``, continuing an existing partial file with an HTTP ``Range: bytes=N-`` request (a server
answering 200 instead of 206 restarts the file), verify the SHA-256 and rename into place. Files whose
checksum does not match are deleted and named in the FedECGError raised at the end. Interrupting and
re-running continues where it stopped. A connection dropped mid-file (fewer bytes than ``Content-Length``) is
resumed with a Range request up to ``retries`` times, with exponential back-off.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fedecg.errors import FedECGError
from fedecg.io import atomic_write_text

log = logging.getLogger(__name__)

PHYSIONET_URL = "https://physionet.org/files/ptb-xl/1.0.3/"
CHECKSUMS = "SHA256SUMS.txt"
CHUNK = 1 << 16
RETRY_DELAY_S = 1.0  # base of the exponential back-off between resumed attempts


@dataclass(frozen=True)
class DownloadResult:
    downloaded: int
    skipped: int
    bytes: int
    dest: str


def parse_checksums(text: str) -> list[tuple[str, str]]:
    """``[(relative_path, sha256_hex)]`` from ``sha256sum`` output (``<hex>  ./path``); rejects unsafe
    paths."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise FedECGError(f"{CHECKSUMS} line {n}: not '<sha256>  <path>': {line[:80]!r}")
        digest, name = parts[0].lower(), parts[1].lstrip("*").strip()
        path = PurePosixPath(name[2:] if name.startswith("./") else name)
        if path.is_absolute() or ".." in path.parts:
            raise FedECGError(f"{CHECKSUMS} line {n}: unsafe path {name!r}")
        out.append((str(path), digest))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open(url: str, start: int = 0, timeout: float = 60.0):
    req = urllib.request.Request(url, headers={"User-Agent": "fedecg-download/1"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https URL from the user)


def _fetch_once(url: str, part: Path, on_bytes: Callable[[int], None] | None, timeout: float) -> None:
    """One GET into ``part`` (continuing it with a Range request). Network errors propagate as OSError /
    http.client.HTTPException so the caller can retry; HTTP errors other than 416 become FedECGError."""
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # range not satisfiable: the partial file is already complete (or bad)
            return
        raise FedECGError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    with resp:
        mode = "ab" if start and resp.status == 206 else "wb"
        if mode == "wb" and start:
            log.info("%s: server ignored the Range request; restarting the file", url)
        expected = resp.headers.get("Content-Length")
        received = 0
        with open(part, mode) as fh:
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                fh.write(chunk)
                received += len(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
        if expected is not None and received < int(expected):  # read(n) returns b"" on a dropped connection
            raise http.client.IncompleteRead(b"", int(expected) - received)


def _fetch(
    url: str, part: Path, on_bytes: Callable[[int], None] | None, timeout: float, retries: int
) -> None:
    """``_fetch_once`` plus up to ``retries`` resumed retries after connection drops (1, 2, 4 ... s apart)."""
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, on_bytes, timeout)
            return
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            if attempt == retries:
                raise FedECGError(f"{url}: download failed after {retries + 1} attempt(s) ({exc})") from exc
            log.info("%s: %s; resuming (attempt %d of %d)", url, exc, attempt + 2, retries + 1)
            time.sleep(min(2.0**attempt, 30.0) * RETRY_DELAY_S)


def download_dataset(
    dest: str | Path,
    url: str = PHYSIONET_URL,
    *,
    include: Sequence[str] = (),
    workers: int = 4,
    timeout: float = 60.0,
    retries: int = 3,
    on_file: Callable[[str, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch every file of ``url``'s ``SHA256SUMS.txt`` (optionally only paths starting with one of
    ``include``) into ``dest``. ``on_file(path, n_files)`` / ``on_bytes(n)`` report progress (called from
    worker threads)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = url if url.endswith("/") else url + "/"
    try:
        with _open(base + CHECKSUMS, timeout=timeout) as resp:
            sums_text = resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise FedECGError(f"{base}{CHECKSUMS}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FedECGError(f"{base}{CHECKSUMS}: cannot connect ({exc})") from exc
    entries = [(p, d) for p, d in parse_checksums(sums_text) if not include or p.startswith(tuple(include))]
    atomic_write_text(dest / CHECKSUMS, sums_text)

    def one(entry: tuple[str, str]) -> tuple[str, str]:
        rel, digest = entry
        target = dest / rel
        if on_file:
            on_file(rel, len(entries))
        if target.is_file() and sha256_file(target) == digest:
            return rel, "skipped"
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        _fetch(base + urllib.request.quote(rel), part, on_bytes, timeout, retries)
        if sha256_file(part) != digest:
            part.unlink(missing_ok=True)
            return rel, "mismatch"
        os.replace(part, target)
        return rel, "downloaded"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, entries))
    bad = [rel for rel, status in results if status == "mismatch"]
    if bad:
        raise FedECGError(
            f"SHA-256 mismatch for {len(bad)} file(s) (deleted, re-run to retry): {', '.join(bad[:10])}"
        )
    n_down = sum(status == "downloaded" for _, status in results)
    size = sum((dest / rel).stat().st_size for rel, _ in results)
    return DownloadResult(downloaded=n_down, skipped=len(results) - n_down, bytes=size, dest=str(dest))
