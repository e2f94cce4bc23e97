"""privacy: runs started from a pretrained base (RUN_DIR/base.json) get the base's public training records
reported apart from the sites' records (`audit["base_corpus"]`); the verdict stays about the sites' records."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedecg.cli import app

BASE_SEED, BASE_N = 4242, 50


@pytest.fixture(scope="module")
def base_x():
    from pretraining.corpus import synthetic_corpus

    arrays, _ = synthetic_corpus(BASE_N, BASE_SEED)
    return np.asarray(arrays.x)


def _run_dir(root, dataset, card_data=None):
    """The audit's run layout (manifest.json; no checkpoint, so --synthetic is needed and MIA is skipped),
    plus base.json as server.prepare writes it when ``card_data`` is given."""
    from ptbxl.layout import read_database
    from ptbxl.partition import partition_dataset

    root.mkdir(parents=True, exist_ok=True)
    manifest = partition_dataset(read_database(dataset), by="site", dataset=str(dataset))
    manifest.save(root / "manifest.json")
    if card_data is not None:
        card = {"format": "fedecg-model-card/1", "name": "tiny-base", "data": card_data}
        (root / "base.json").write_text(json.dumps(
            {"init": "/somewhere/tiny-base.pt", "path": "/somewhere/tiny-base.pt", "sha256": "0" * 64,
             "weights": "ema", "card": card}))
    return root, manifest


def _synthetic_card(n=BASE_N, seed=BASE_SEED):
    return {"source": "synthetic", "generator_seed": seed, "n_records": n, "description": "tiny", "licence": "x"}


def _audit(rd, tmp_path, syn, name="audit", **cfg):
    from privacy.audit import AuditConfig
    from privacy.pipeline import AuditRunConfig, run_audit

    np.savez(tmp_path / f"{name}.npz", signals=syn)
    c = AuditRunConfig(audit=AuditConfig(n_permutations=2000), **cfg)
    return run_audit(rd, tmp_path / name, synthetic=tmp_path / f"{name}.npz", cfg=c)


def _check(audit, name):
    return [c for c in audit["verdict"]["checks"] if c["check"] == name]


def _train_x(manifest, n):
    from ptbxl.dataset import load_arrays

    return np.asarray(load_arrays(manifest.dataset, manifest.ecg_ids("train")[:n]).x)


def test_synthetic_corpus_is_prefix_stable():
    """The audit caps a synthetic base corpus by regenerating its first records only: they must be the base's."""
    from pretraining.corpus import synthetic_corpus

    small, _ = synthetic_corpus(12, BASE_SEED)
    big, _ = synthetic_corpus(30, BASE_SEED)
    assert np.array_equal(np.asarray(small.x), np.asarray(big.x)[:12])


def test_copies_of_public_base_records_are_reported_apart_and_do_not_fail(demo_ptbxl, base_x, tmp_path):
    rd, _ = _run_dir(tmp_path / "run", demo_ptbxl, _synthetic_card())
    audit = _audit(rd, tmp_path, base_x[:12])
    b = audit["base_corpus"]
    assert b["available"] and b["source"] == "synthetic" and b["n_records"] == BASE_N and not b["capped"]
    assert b["closest"]["nearest"] == ["base"] * 12 and b["closest"]["share_base"] == 1.0
    assert b["near_copy"]["count"] == 12 and b["dcr"]["min"] < 1e-6
    assert b["overlap_with_sites"]["n_records"] == 0 and b["overlap_with_holdout"]["n_records"] == 0
    # the sites' checks never see the base records: no near copies of private records, no FAIL
    assert audit["near_copy_share"] == 0.0 and audit["n_train"] < 60
    assert audit["verdict"]["overall"] != "FAIL"
    assert _check(audit, "near copies")[0]["level"] == "PASS"
    assert _check(audit, "public base corpus")[0]["level"] == "INFO"
    html = (tmp_path / "audit" / "report.html").read_text()
    assert "Public base corpus" in html and "do not fail the audit" in html
    assert (tmp_path / "audit" / "base_dcr.png").is_file()


def test_copies_of_site_records_still_fail_with_a_base(demo_ptbxl, base_x, tmp_path):
    rd, manifest = _run_dir(tmp_path / "run", demo_ptbxl, _synthetic_card())
    site = _train_x(manifest, 6)
    audit = _audit(rd, tmp_path, np.concatenate([base_x[:6], site]))
    b = audit["base_corpus"]
    assert b["closest"]["nearest"] == ["base"] * 6 + ["site"] * 6
    assert b["closest"]["n_base"] == 6 and b["near_copy"]["count"] == 6
    assert audit["near_copy"]["count"] == 6  # the site-level count is of private records only
    assert audit["verdict"]["overall"] == "FAIL" and _check(audit, "near copies")[0]["level"] == "FAIL"


def test_capped_synthetic_corpus_is_said_so(demo_ptbxl, base_x, tmp_path):
    rd, _ = _run_dir(tmp_path / "run", demo_ptbxl, _synthetic_card())
    audit = _audit(rd, tmp_path, base_x[:4], base_max_records=20)
    b = audit["base_corpus"]
    assert b["capped"] and b["n_records"] == 20 and b["n_records_card"] == BASE_N
    assert b["closest"]["nearest"] == ["base"] * 4  # the first records of the corpus are the base's
    assert "capped at 20" in _check(audit, "public base corpus")[0]["text"]
    assert "Capped" in (tmp_path / "audit" / "report.html").read_text()


def test_run_without_base_audits_as_before(demo_ptbxl, base_x, tmp_path):
    """No base.json: no base block and no base check; the sites' numbers equal those of the same audit with a
    base (which only adds its own block and checks)."""
    plain, manifest = _run_dir(tmp_path / "plain", demo_ptbxl)
    based, _ = _run_dir(tmp_path / "based", demo_ptbxl, _synthetic_card())
    syn = np.concatenate([base_x[:3], _train_x(manifest, 3)])
    a = _audit(plain, tmp_path, syn, "a")
    b = _audit(based, tmp_path, syn, "b")
    assert "base_corpus" not in a
    names = {c["check"] for c in a["verdict"]["checks"]}
    assert not names & {"public base corpus", "public/private overlap", "base trained on holdout"}
    assert "checked apart" not in _check(a, "near copies")[0]["text"]
    assert "Public base corpus" not in (tmp_path / "a" / "report.html").read_text()
    skip = {"created", "run_dir", "synthetic_source", "base_corpus", "verdict"}
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    assert a["verdict"]["overall"] == b["verdict"]["overall"] == "FAIL"
    assert not (tmp_path / "a" / "base_dcr.png").exists()


def test_unreachable_folder_corpus_is_reported_not_failed(demo_ptbxl, tmp_path):
    rd, manifest = _run_dir(tmp_path / "run", demo_ptbxl)
    _run_dir(rd, demo_ptbxl, {"source": "folder", "root": str(tmp_path / "not-here"), "folds": [1, 2],
                              "ecg_ids": [int(i) for i in manifest.ecg_ids("train")[:5]] + [100_000],
                              "n_records": 6})
    audit = _audit(rd, tmp_path, _train_x(manifest, 4))
    b = audit["base_corpus"]
    assert not b["available"] and b["reason"].startswith("base corpus not available here")
    assert "closest" not in b and b["n_records"] == 0
    ov = b["overlap_with_sites"]  # the ids are shared but cannot be checked: reported as possible overlap
    assert ov["n_records"] == 5 and ov["n_confirmed"] == 0 and ov["n_unconfirmed"] == 5
    assert _check(audit, "public/private overlap")[0]["level"] == "WARN"
    assert "not available here" in _check(audit, "public base corpus")[0]["text"]
    assert audit["verdict"]["overall"] == "FAIL"  # the copies of site records still fail it
    assert "not available here" in (tmp_path / "audit" / "report.html").read_text()


def test_folder_corpus_overlapping_the_sites_is_flagged(demo_ptbxl, tmp_path):
    """The base trained on some of the sites' own records (same folder): overlap_with_sites names them, and
    copies of them count as copies of private records (ties go to the sites)."""
    from ptbxl.layout import read_database

    rd, manifest = _run_dir(tmp_path / "run", demo_ptbxl)
    train_ids = [int(i) for i in manifest.ecg_ids("train")]
    test_ids = set(int(i) for i in manifest.ecg_ids("test"))
    others = [int(i) for i in read_database(demo_ptbxl).index if int(i) not in set(train_ids) | test_ids]
    listed = train_ids[:4] + others + sorted(test_ids)[:1]
    _run_dir(rd, demo_ptbxl, {"source": "folder", "root": str(demo_ptbxl), "folds": [1], "ecg_ids": listed,
                              "n_records": len(listed)})
    audit = _audit(rd, tmp_path, _train_x(manifest, 4))
    b = audit["base_corpus"]
    assert b["available"] and b["n_records"] == len(listed)
    ov = b["overlap_with_sites"]
    assert ov["n_confirmed"] == 4 and ov["ecg_ids"] == sorted(train_ids[:4]) and ov["by_content"] == 4
    assert b["closest"]["nearest"] == ["site"] * 4
    assert _check(audit, "public/private overlap")[0]["level"] == "WARN"
    assert b["overlap_with_holdout"]["ecg_ids"] == sorted(test_ids)[:1]  # the base saw a holdout record
    assert _check(audit, "base trained on holdout")[0]["level"] == "WARN"
    assert audit["verdict"]["overall"] == "FAIL"
    assert "Public/private overlap" in (tmp_path / "audit" / "report.html").read_text()


def test_generator_version_mismatch_makes_the_corpus_unavailable(demo_ptbxl, base_x, tmp_path):
    rd, _ = _run_dir(tmp_path / "run", demo_ptbxl, {**_synthetic_card(), "generator_version": "some-older-one"})
    b = _audit(rd, tmp_path, base_x[:3])["base_corpus"]
    assert not b["available"] and "NOT the base's records" in b["reason"]


def test_cli_base_max_records(demo_ptbxl, base_x, tmp_path):
    from privacy.inputs import DEFAULT_BASE_MAX_RECORDS

    rd, _ = _run_dir(tmp_path / "run", demo_ptbxl, _synthetic_card())
    np.savez(tmp_path / "syn.npz", signals=base_x[:3])
    out = tmp_path / "audit"
    res = CliRunner().invoke(app, ["audit", str(rd), "--out", str(out), "--synthetic", str(tmp_path / "syn.npz"),
                                   "--base-max-records", "10", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    b = json.loads((out / "audit.json").read_text())["base_corpus"]
    assert b["n_records"] == 10 and b["capped"] and b["max_records"] == 10
    assert "public base corpus" in res.output
    import inspect

    from fedecg.cli.audit import audit as audit_command

    option = inspect.signature(audit_command).parameters["base_max_records"].default
    assert option.default == DEFAULT_BASE_MAX_RECORDS  # the CLI's literal default is the documented maximum


def test_folder_corpus_in_another_copy_is_confirmed_by_signal(demo_ptbxl, tmp_path):
    """The base's folder is another copy of the sites' data: shared ecg_ids are checked by signal there."""
    import shutil

    from privacy.inputs import base_overlap, load_base_corpus, load_records

    copy = tmp_path / "copy"
    shutil.copytree(demo_ptbxl, copy)
    rd, manifest = _run_dir(tmp_path / "run", demo_ptbxl)
    train_ids = [int(i) for i in manifest.ecg_ids("train")]
    _run_dir(rd, demo_ptbxl, {"source": "folder", "root": str(copy), "folds": [1], "ecg_ids": train_ids[:3]})
    base = load_base_corpus(rd, max_records=2)
    assert base.available and base.capped and len(base.arrays) == 2
    train = load_records(demo_ptbxl, train_ids)
    ov = base_overlap(base, train, demo_ptbxl)
    assert ov["by_id"] == 3 and ov["n_confirmed"] == 3 and ov["by_content"] == 2  # 2 compared, 3 ids checked
    other = load_records(demo_ptbxl, train_ids[3:])  # different records that share no id: nothing found
    assert base_overlap(base, other, demo_ptbxl)["n_records"] == 0
