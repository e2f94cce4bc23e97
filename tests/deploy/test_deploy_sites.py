"""deploy.sites.split_sites: one valid PTB-XL folder per site, original rows unchanged, only its own records."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.sites import split_sites
from fedecg.errors import FedECGError
from ptbxl.layout import read_database


def _check_folders(dataset: Path, out: Path, folders) -> None:
    source = read_database(dataset)
    src_lines = {line.split(",", 1)[0]: line for line in (dataset / "ptbxl_database.csv").read_text().splitlines()}
    seen: set[int] = set()
    for f in folders:
        meta = read_database(f.path)
        assert len(meta) == f.n_records > 0
        assert meta["site"].nunique() == 1  # by site: one hospital per folder
        assert not (seen & set(meta.index))
        seen |= set(meta.index)
        for line in (f.path / "ptbxl_database.csv").read_text().splitlines()[1:]:
            assert src_lines[line.split(",", 1)[0]] == line  # rows copied byte for byte
        for ecg_id in meta.index:
            rel = meta.at[ecg_id, "filename_lr"]
            assert (f.path / f"{rel}.hea").is_file() and (f.path / f"{rel}.dat").is_file()
        other = [p for p in (f.path / "records100").rglob("*.hea")]
        assert len(other) == f.n_records  # no other site's record files
        assert (f.path / "scp_statements.csv").is_file()
    assert seen == set(source.index[source["site"].notna()])
    assert (out / "manifest.json").is_file()


def test_split_demo_dataset_by_site(demo_ptbxl, tmp_path):
    out = tmp_path / "sites"
    folders = split_sites(demo_ptbxl, out)
    assert len(folders) == 4
    _check_folders(demo_ptbxl, out, folders)


def test_refuses_a_non_empty_output_folder(demo_ptbxl, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("x")
    with pytest.raises(FedECGError, match="not empty"):
        split_sites(demo_ptbxl, tmp_path / "x")


@pytest.mark.real_data
def test_split_real_ptbxl_subset_by_site(ptbxl_dir, tmp_path):
    out = tmp_path / "sites"
    folders = split_sites(ptbxl_dir, out)
    assert {f.client_id: f.n_records for f in folders} == {"site-0": 256, "site-1": 161, "site-2": 17, "site-3": 54}
    _check_folders(ptbxl_dir, out, folders)
