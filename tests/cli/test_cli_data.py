import functools
import hashlib
import json
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedecg.cli import app
from ptbxl.partition import Manifest

runner = CliRunner()


def _json(result) -> dict:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return json.loads(result.stdout)


def test_every_data_command_has_help():
    for cmd in ("check", "partition", "demo", "download"):
        result = runner.invoke(app, ["data", cmd, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout


def test_check_json_good_dataset_exits_0(demo_ptbxl):
    result = runner.invoke(app, ["data", "check", str(demo_ptbxl), "--json"])

    out = _json(result)
    assert result.exit_code == 0
    assert out["records_ok"] == 60 and out["bad"] == [] and sum(out["sites"].values()) == 60


def test_check_json_names_truncated_dat_and_deleted_hea(tmp_path, demo_ptbxl):
    root = shutil.copytree(demo_ptbxl, tmp_path / "ptbxl")
    dat = root / "records100/00000/00011_lr.dat"
    dat.write_bytes(dat.read_bytes()[:100])
    (root / "records100/00000/00012_lr.hea").unlink()

    result = runner.invoke(app, ["data", "check", str(root), "--json"])

    out = _json(result)
    assert result.exit_code == 1
    reasons = {b["record"]: b["reason"] for b in out["bad"]}
    assert set(reasons) == {"records100/00000/00011_lr", "records100/00000/00012_lr"}
    assert (
        "truncated" in reasons["records100/00000/00011_lr"]
        and "missing" in reasons["records100/00000/00012_lr"]
    )
    assert out["records_ok"] == 58


def test_check_table_output_lists_bad_records(tmp_path, demo_ptbxl):
    root = shutil.copytree(demo_ptbxl, tmp_path / "ptbxl")
    (root / "records500/00000/00003_hr.hea").unlink()

    result = runner.invoke(app, ["data", "check", str(root)])

    assert result.exit_code == 1
    assert "59/60 records OK" in result.stdout and "records500/00000/00003_hr" in result.stdout


def test_partition_metadata_only_json_and_manifest(tmp_path, demo_ptbxl):
    meta_only = tmp_path / "meta"
    meta_only.mkdir()
    shutil.copy(demo_ptbxl / "ptbxl_database.csv", meta_only)
    out_path = tmp_path / "manifest.json"

    result = runner.invoke(
        app, ["data", "partition", str(meta_only), "--by", "site", "--json", "--out", str(out_path)]
    )

    out = _json(result)
    assert result.exit_code == 0
    counts = pd.read_csv(demo_ptbxl / "ptbxl_database.csv")["site"].value_counts().sort_index()
    assert [(c["site"], c["n_records"]) for c in out["clients"]] == [
        (int(s), int(n)) for s, n in counts.items()
    ]
    manifest = Manifest.load(out_path)
    assert [c.n_records for c in manifest.clients] == counts.tolist() and len(manifest.label_codes) == 71


def test_partition_table_and_bad_option(demo_ptbxl):
    result = runner.invoke(
        app, ["data", "partition", str(demo_ptbxl), "--by", "dirichlet", "--num-clients", "3"]
    )
    assert result.exit_code == 0 and "client-2" in result.stdout and "3 clients by dirichlet" in result.stdout

    bad = runner.invoke(app, ["data", "partition", str(demo_ptbxl), "--tail", "keep"])
    assert bad.exit_code != 0 and "tail" in str(bad.exception)


def test_demo_command_writes_a_valid_dataset(tmp_path):
    dest = tmp_path / "demo"
    result = runner.invoke(
        app, ["data", "demo", str(dest), "--n-records", "8", "--n-sites", "2", "--seed", "1"]
    )
    assert result.exit_code == 0
    check = runner.invoke(app, ["data", "check", str(dest), "--json"])
    assert check.exit_code == 0 and _json(check)["records_ok"] == 8


def test_download_command_from_local_server(tmp_path, demo_ptbxl):
    served = tmp_path / "served"
    served.mkdir()
    files = {
        "ptbxl_database.csv": (demo_ptbxl / "ptbxl_database.csv").read_bytes(),
        "records100/00000/00001_lr.hea": (demo_ptbxl / "records100/00000/00001_lr.hea").read_bytes(),
    }
    for name, data in files.items():
        (served / name).parent.mkdir(parents=True, exist_ok=True)
        (served / name).write_bytes(data)
    (served / "SHA256SUMS.txt").write_text(
        "".join(f"{hashlib.sha256(d).hexdigest()}  ./{n}\n" for n, d in files.items())
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = runner.invoke(
            app,
            [
                "data",
                "download",
                str(tmp_path / "dl"),
                "--url",
                f"http://127.0.0.1:{httpd.server_address[1]}/",
            ],
        )
    finally:
        httpd.shutdown()
        httpd.server_close()

    assert result.exit_code == 0, result.stdout
    assert "2 downloaded" in result.stdout
    assert (tmp_path / "dl/records100/00000/00001_lr.hea").read_bytes() == files[
        "records100/00000/00001_lr.hea"
    ]


def test_missing_columns_give_one_line_error_and_exit_2(tmp_path, demo_ptbxl):
    pd.read_csv(demo_ptbxl / "ptbxl_database.csv").drop(columns=["patient_id"]).to_csv(
        tmp_path / "ptbxl_database.csv", index=False
    )

    proc = subprocess.run(
        [sys.executable, "-c", "from fedecg.cli import main; main()", "data", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 2
    assert (
        "missing required column(s): patient_id" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    )


@pytest.mark.real_data
def test_real_check_json(ptbxl_dir):
    result = runner.invoke(app, ["data", "check", str(ptbxl_dir), "--json"])

    out = _json(result)
    assert result.exit_code == 0
    assert (
        out["records_ok"] == 488
        and out["bad"] == []
        and out["sites"] == {"0": 256, "1": 161, "2": 17, "3": 54}
    )


@pytest.mark.real_data
def test_real_metadata_full_partition_lists_51_sites(ptbxl_dir):
    result = runner.invoke(
        app, ["data", "partition", str(ptbxl_dir / "metadata_full"), "--by", "site", "--json"]
    )

    out = _json(result)
    assert result.exit_code == 0 and len(out["clients"]) == 51
    assert [(c["site"], c["n_records"]) for c in out["clients"][:4]] == [
        (0, 8940),
        (1, 6294),
        (2, 5075),
        (3, 576),
    ]
    assert out["unassigned"]["no_site"] == 17

    pooled = _json(
        runner.invoke(
            app,
            [
                "data",
                "partition",
                str(ptbxl_dir / "metadata_full"),
                "--json",
                "--min-records",
                "50",
                "--tail",
                "pool",
            ],
        )
    )
    assert [c["n_records"] for c in pooled["clients"]] == [8940, 6294, 5075, 576, 100, 58, 739]


@pytest.mark.real_data
def test_real_subset_download_from_local_mirror_then_check(tmp_path, ptbxl_dir):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(ptbxl_dir))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        first = runner.invoke(app, ["data", "download", str(tmp_path / "dl"), "--url", url, "--workers", "8"])
        again = runner.invoke(app, ["data", "download", str(tmp_path / "dl"), "--url", url])
    finally:
        httpd.shutdown()
        httpd.server_close()

    assert first.exit_code == 0, first.stdout
    assert " 0 already present" in first.stdout and "0 downloaded" in again.stdout
    check = runner.invoke(app, ["data", "check", str(tmp_path / "dl"), "--json"])
    assert check.exit_code == 0 and _json(check)["records_ok"] == 488
