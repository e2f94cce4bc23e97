"""Download tests against a local HTTP server on 127.0.0.1 (no real network)."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fedecg.errors import FedECGError
from ptbxl.download import download_dataset, parse_checksums

FILES = {
    "ptbxl_database.csv": b"ecg_id,patient_id\n1,2\n" * 50,
    "records100/00000/00001_lr.hea": b"00001_lr 12 100 1000\n",
    "records100/00000/00001_lr.dat": bytes(range(256)) * 94,
    "records500/00000/00001_hr.dat": bytes(range(255, -1, -1)) * 40,
}


def _sums(files, wrong=()):
    lines = []
    for name, data in files.items():
        digest = hashlib.sha256(data + (b"x" if name in wrong else b"")).hexdigest()
        lines.append(f"{digest}  ./{name}")
    return ("\n".join(lines) + "\n").encode()


class _Server:
    def __init__(self, files, honour_range=True, drop_first=()):
        self.files, self.honour_range, self.requests = files, honour_range, []
        self.drop_first = set(drop_first)  # paths whose first GET is cut off half-way
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = self.path.split("/data/", 1)[-1]
                server.requests.append((path, self.headers.get("Range")))
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    data = data[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if path in server.drop_first:
                    server.drop_first.discard(path)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _serve(files=FILES, wrong=(), **kw):
    return _Server({**files, "SHA256SUMS.txt": _sums(files, wrong)}, **kw)


def test_full_download_then_rerun_skips_verified_files(tmp_path):
    with _serve() as srv:
        first = download_dataset(tmp_path, srv.url, workers=2)
        srv.requests.clear()
        second = download_dataset(tmp_path, srv.url)

    assert first.downloaded == 4 and first.skipped == 0
    for name, data in FILES.items():
        assert (tmp_path / name).read_bytes() == data
    assert second.downloaded == 0 and second.skipped == 4
    assert srv.requests == [("SHA256SUMS.txt", None)]
    assert (tmp_path / "SHA256SUMS.txt").is_file()


def test_resume_continues_partial_file_with_range(tmp_path):
    name = "records100/00000/00001_lr.dat"
    part = tmp_path / (name + ".part")
    part.parent.mkdir(parents=True)
    half = len(FILES[name]) // 2
    part.write_bytes(FILES[name][:half])
    got = []

    with _serve() as srv:
        download_dataset(tmp_path, srv.url, on_bytes=got.append)

    assert (name, f"bytes={half}-") in srv.requests
    assert (tmp_path / name).read_bytes() == FILES[name] and not part.exists()
    assert sum(got) == sum(len(d) for d in FILES.values()) - half


def test_server_without_range_support_restarts_file(tmp_path):
    name = "records500/00000/00001_hr.dat"
    part = tmp_path / (name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage-prefix")

    with _serve(honour_range=False) as srv:
        download_dataset(tmp_path, srv.url)

    assert (tmp_path / name).read_bytes() == FILES[name]


def test_checksum_mismatch_names_file_and_keeps_others(tmp_path):
    bad = "records100/00000/00001_lr.dat"
    with _serve(wrong=(bad,)) as srv, pytest.raises(FedECGError, match=bad):
        download_dataset(tmp_path, srv.url)

    assert not (tmp_path / bad).exists() and not (tmp_path / (bad + ".part")).exists()
    assert (tmp_path / "ptbxl_database.csv").read_bytes() == FILES["ptbxl_database.csv"]


def test_include_prefix_limits_files(tmp_path):
    with _serve() as srv:
        result = download_dataset(tmp_path, srv.url, include=("records100/",))

    assert result.downloaded == 2
    assert not (tmp_path / "ptbxl_database.csv").exists()


def test_unreachable_server_and_unsafe_paths(tmp_path):
    with pytest.raises(FedECGError, match="cannot connect|HTTP"):
        download_dataset(tmp_path, "http://127.0.0.1:9/", timeout=2)
    with pytest.raises(FedECGError, match="unsafe path"):
        parse_checksums("a" * 64 + "  ../etc/passwd\n")
    assert parse_checksums("A" * 64 + "  ./x/y.dat\n") == [("x/y.dat", "a" * 64)]


def test_dropped_connection_is_resumed_with_range(tmp_path, monkeypatch):
    import ptbxl.download

    monkeypatch.setattr(ptbxl.download, "RETRY_DELAY_S", 0.0)
    name = "records100/00000/00001_lr.dat"

    with _serve(drop_first=(name,)) as srv:
        download_dataset(tmp_path, srv.url, workers=1)

    ranges = [r for p, r in srv.requests if p == name]
    assert ranges == [None, f"bytes={len(FILES[name]) // 2}-"]
    assert (tmp_path / name).read_bytes() == FILES[name]


def test_gives_up_after_retries(tmp_path, monkeypatch):
    import ptbxl.download

    monkeypatch.setattr(ptbxl.download, "RETRY_DELAY_S", 0.0)
    name = "records100/00000/00001_lr.dat"
    with _serve(drop_first=(name,)) as srv, pytest.raises(FedECGError, match="after 1 attempt"):
        download_dataset(tmp_path, srv.url, retries=0, include=(name,))
