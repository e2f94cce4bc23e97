"""Bad data never trains silently, and errors never carry it off a site (issue 16, parts 5 and 8).

- The reader checks the header's sampling rate and length against the folder (records100: 100 Hz, 1000
  samples) and the samples' finiteness; a site skips a bad record (named with its ecg_id in its own log, counted
  in its reply as ``records-invalid``), refuses with its name when too few valid records remain, and the run's
  exit code and status.json say so. CONTRACT: ``fedecg simulate`` on a dataset whose records100/ holds a
  500 Hz (or 900-sample) header names that record and does not train on it.
- A site's error reply carries an error class and a fixed message; the details (a malformed scp_codes cell
  holding a name, birth date, MRN and diagnosis, local paths) stay in the site's local log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedecg import protocol as P
from fedecg.errors import FedECGError
from ptbxl.constants import TRAIN_FOLDS

REPO = Path(__file__).resolve().parents[2]
PHI = "Jane Doe, born 1961-02-03, MRN 0042317, diagnosis: acute anterior MI"


@pytest.fixture(autouse=True)
def _task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


@pytest.fixture()
def dataset(tmp_path, demo_ptbxl) -> Path:
    """A private copy of the demo dataset (the session's one is read-only)."""
    dest = tmp_path / "ptbxl"
    shutil.copytree(demo_ptbxl, dest)
    return dest


def _set_header(root: Path, filename: str, fs: int | None = None, length: int | None = None) -> None:
    hea = root / f"{filename}.hea"
    lines = hea.read_text().splitlines()
    rec = lines[0].split()
    rec[2] = str(fs) if fs is not None else rec[2]
    rec[3] = str(length) if length is not None else rec[3]
    hea.write_text("\n".join([" ".join(rec), *lines[1:]]) + "\n")


def _filename(root: Path, ecg_id: int) -> str:
    from ptbxl.layout import read_database

    return str(read_database(root).at[ecg_id, "filename_lr"])


def _first_train_id(root: Path, site: int = 0) -> int:
    from ptbxl.layout import read_database

    meta = read_database(root)
    return int(meta.index[(meta["site"] == site) & meta["strat_fold"].isin(TRAIN_FOLDS)][0])


# ---- the reader -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fs, length, says", [(500, None, "header says 500 Hz"),
                                              (None, 900, "header says 900 samples")])
def test_reader_refuses_a_header_that_does_not_fit_its_folder(dataset, fs, length, says):
    from ptbxl.dataset import load_arrays, load_valid_arrays
    from ptbxl.signals import read_record

    ecg_id = _first_train_id(dataset)
    name = _filename(dataset, ecg_id)
    _set_header(dataset, name, fs, length)
    with pytest.raises(FedECGError, match=f"{name}: {says}"):
        read_record(dataset, name)
    with pytest.raises(FedECGError, match=name):
        load_arrays(dataset, [ecg_id, ecg_id + 1])
    arrays, skipped = load_valid_arrays(dataset, [ecg_id, ecg_id + 1], cache_dir=dataset.parent / "cache")
    assert list(arrays.ecg_ids) == [ecg_id + 1]
    assert [(s["ecg_id"], s["record"]) for s in skipped] == [(ecg_id, name)] and says in skipped[0]["reason"]
    again, skipped_again = load_valid_arrays(dataset, [ecg_id, ecg_id + 1], cache_dir=dataset.parent / "cache")
    assert skipped_again == skipped and list(again.ecg_ids) == [ecg_id + 1]  # cached with its skipped list


def test_reader_refuses_invalid_samples(dataset):
    from ptbxl.dataset import load_arrays, load_valid_arrays

    ecg_id = _first_train_id(dataset)
    dat = dataset / f"{_filename(dataset, ecg_id)}.dat"
    digital = np.fromfile(dat, dtype="<i2")
    digital[100:110] = -32768  # WFDB's invalid sample
    digital.tofile(dat)
    with pytest.raises(FedECGError, match="10 invalid"):
        load_arrays(dataset, [ecg_id])
    arrays, skipped = load_valid_arrays(dataset, [ecg_id, ecg_id + 1])
    assert [s["ecg_id"] for s in skipped] == [ecg_id] and len(arrays) == 1
    assert np.isfinite(np.asarray(arrays.x)).all()


# ---- the CONTRACT: fedecg simulate names the record and does not train on it ------------------------------


def _scenario(tmp_path: Path, dataset: Path, **train) -> Path:
    scen = {"name": "bad", "dataset": str(dataset), "rounds": 1, "seed": 7,
            "partition": {"by": "site", "min_records": 1, "tail": "pool"}, "model": "tiny",
            "train": {"local_steps": 1, "batch_size": 4, "eval_batches": 1, **train},
            "strategy": {"min_train_nodes": 1, "min_available_nodes": 1}, "output": {"synthesize": 0},
            "site_policy": {"dp_required": False}}  # the sites' own policy: no DP-SGD needed here
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(scen))
    return path


def _fedecg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200",
           "FEDECG_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "fedecg", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def _check_bad_record_run(tmp_path, dataset, engine: str, fs, length):
    from ptbxl.partition import Manifest

    ecg_id = _first_train_id(dataset)
    name = _filename(dataset, ecg_id)
    _set_header(dataset, name, fs, length)
    run = tmp_path / "run"
    out = _fedecg("simulate", str(_scenario(tmp_path, dataset)), "--run-dir", str(run), "--engine", engine,
                  cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert f"ecg_id {ecg_id}" in text and name in text  # named
    manifest = Manifest.load(run / "manifest.json")
    client = next(c for c in manifest.clients if ecg_id in c.train)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    site = row["sites"][client.client_id]
    assert site["status"] == "accepted"
    assert site[P.NUM_EXAMPLES] == len(client.train) - 1 and site["records-invalid"] == 1  # not trained on
    check = json.loads((run / "data_check.json").read_text())["invalid"]
    assert [r["ecg_id"] for r in check[client.client_id]] == [ecg_id]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["invalid_records"] == {client.client_id: 1}
    assert name not in json.dumps(row) and "ecg_id" not in json.dumps(row)  # the count reaches the server, not ids


@pytest.mark.parametrize("fs, length", [(500, None), (None, 900)])
def test_contract_simulate_names_a_500hz_or_short_record_and_does_not_train_on_it(tmp_path, dataset, fs, length):
    _check_bad_record_run(tmp_path, dataset, "inprocess", fs, length)


@pytest.mark.slow
def test_contract_with_flowers_simulation_engine(tmp_path, dataset):
    _check_bad_record_run(tmp_path, dataset, "ray", 500, None)


def test_a_site_with_too_few_valid_records_refuses_with_its_name_and_the_run_fails(tmp_path, dataset):
    from ptbxl.layout import read_database

    meta = read_database(dataset)
    site3 = [int(i) for i in meta.index[meta["site"] == 3]]
    for ecg_id in site3:  # every record of the smallest site is broken
        _set_header(dataset, _filename(dataset, ecg_id), fs=500)
    run = tmp_path / "run"
    out = _fedecg("simulate", str(_scenario(tmp_path, dataset)), "--run-dir", str(run), "--engine", "inprocess",
                  cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "site(s) failed" in text and "site-3" in text, text[-3000:]
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    refused = row["sites"]["site-3"]
    assert refused["status"] == "rejected" and refused["reason"].startswith(f"refused: {P.DATA_REFUSAL}: 0 of")
    from ptbxl.partition import Manifest

    client = next(c for c in Manifest.load(run / "manifest.json").clients if c.client_id == "site-3")
    assert refused["records-invalid"] == len(client.train) + len(client.val)  # train + validation records
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and list(status["failed_sites"]) == ["site-3"]
    assert all(m["status"] == "accepted" for s, m in row["sites"].items() if s != "site-3")


# ---- part 5: error replies carry a fixed message, details stay at the site ------------------------------------


def test_a_malformed_scp_codes_cell_never_reaches_the_coordinator(tmp_path, dataset, caplog):
    import pandas as pd

    from client.app import app as client_app
    from ptbxl.partition import Manifest
    from server.loop import ServerSettings, run_federation
    from server.prepare import prepare_run
    from simulations.inprocess import InProcessGrid
    from simulations.runner import simulated_node_configs

    rd = prepare_run(_scenario(tmp_path, dataset), [], tmp_path / "run", partition=True)
    csv = dataset / "ptbxl_database.csv"  # corrupted after the server partitioned it: only the sites read it now
    df = pd.read_csv(csv)
    df.loc[0, "scp_codes"] = PHI
    df.to_csv(csv, index=False)
    outgoing: list = []
    configs = simulated_node_configs(rd)
    with caplog.at_level(logging.ERROR, logger="client.egress"):
        run_federation(InProcessGrid(client_app, len(Manifest.load(rd.manifest_path).clients), outgoing=outgoing,
                                     node_config=lambda i: configs[i]),
                       ServerSettings(run_dir=str(rd.path), run_name=rd.run_name(), simulation=True))
    assert outgoing and all(m.has_error() for m in outgoing)
    assert {m.error.reason for m in outgoing} == {P.error_reason("data")}
    # what the coordinator wrote from the replies (manifest.json names the dataset: the simulation partitioned it)
    written = "".join((rd.path / f).read_text() for f in ("metrics.jsonl", "status.json", "privacy_ledger.json"))
    for secret in ("Jane", "1961-02-03", "0042317", "anterior", str(dataset)):
        assert secret not in written
    row = rd.metrics()[0]
    assert {m["reason"] for m in row["sites"].values()} == {f"site error: data: {P.ERROR_MESSAGES['data']}"}
    assert "Jane Doe" in caplog.text  # the details: in the site's own log


def test_error_guard_classifies_and_logs_locally(tmp_path):
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

    from client.egress import egress_guard
    from fedecg.errors import SiteRefusal

    request = Message(content=RecordDict({P.ARRAYS: ArrayRecord(array_dict={"w": Array(np.zeros(2, np.float32))}),
                                          P.CONFIG: ConfigRecord({"x": 1})}), dst_node_id=3, message_type="train")
    state = tmp_path / "state"
    context = Context(run_id=1, node_id=3, node_config={"data-dir": str(tmp_path), "state-dir": str(state)},
                      state=RecordDict(), run_config={})

    def raising(exc):
        def handler(msg, ctx):
            raise exc
        return handler

    def from_ptbxl(msg, ctx):
        from ptbxl.layout import read_database

        read_database(tmp_path / "missing")  # raises inside ptbxl/

    cases = [(from_ptbxl, "data"), (raising(MemoryError()), "resources"),
             (raising(RuntimeError(f"boom {PHI}")), "internal")]
    for handler, cls in cases:
        reply = egress_guard(request, context, handler)
        assert reply.has_error() and reply.error.reason == P.error_reason(cls)
    leaky = Message(content=RecordDict({P.METRICS: MetricRecord({P.NUM_EXAMPLES: 1.0, "MRN 0042317": 1.0})}),
                    reply_to=request)
    reply = egress_guard(request, context, lambda m, c: leaky)
    assert reply.error.reason == P.error_reason("egress")
    refusal = SiteRefusal(f"details {PHI}", site="h1", public=f"{P.DATA_REFUSAL}: 0 of 3",
                          metrics={"records-invalid": 3.0, "not-allowed": 1.0})
    reply = egress_guard(request, context, raising(refusal))
    assert not reply.has_error()
    assert dict(reply.content.config_records[P.SITE_INFO]) == {"site": "h1", "status": P.STATUS_REFUSED,
                                                                 "message": f"{P.DATA_REFUSAL}: 0 of 3"}
    assert dict(reply.content.metric_records[P.METRICS]) == {P.NUM_EXAMPLES: 0.0, "refused": 1.0,
                                                             "records-invalid": 3.0}
    log = (state / "site-errors.log").read_text()
    assert "MemoryError" in log and PHI in log and "MRN 0042317" in log and "details" in log
