import numpy as np
import pandas as pd
import pytest

from fedecg.errors import FedECGError
from ptbxl.layout import read_database
from ptbxl.partition import Manifest, PartitionConfig, partition_dataset, primary_superclass


def _toy_meta() -> pd.DataFrame:
    """12 records, 7 patients; patient 3 recorded at sites 0 (×2) and 1 (×1); one row without a site."""
    rows = [  # ecg_id, patient, site, fold, codes
        (1, 1, 0, 1, {"NORM": 100.0}),
        (2, 1, 0, 1, {"NORM": 100.0}),
        (3, 2, 0, 9, {"IMI": 100.0}),
        (4, 3, 0, 10, {"CLBBB": 100.0}),
        (5, 3, 0, 10, {"CLBBB": 100.0}),
        (6, 3, 1, 10, {"CLBBB": 100.0}),
        (7, 4, 1, 2, {"LVH": 100.0}),
        (8, 5, 1, 3, {"NORM": 100.0}),
        (9, 6, 2, 4, {"ISC_": 100.0}),
        (10, 6, 2, 4, {"ISC_": 100.0}),
        (11, 7, 3, 5, {"NORM": 100.0}),
        (12, 7, np.nan, 5, {"NORM": 100.0}),
    ]
    df = pd.DataFrame(rows, columns=["ecg_id", "patient_id", "site", "strat_fold", "scp_codes"])
    df["age"], df["sex"], df["height"], df["weight"] = 60.0, 1.0, np.nan, 70.0
    return df.set_index("ecg_id")


def _owner(manifest: Manifest) -> dict[int, str]:
    return {i: c.client_id for c in manifest.clients for i in c.ecg_ids()}


def test_site_partition_keeps_recording_site_and_reports_no_site():
    m = partition_dataset(_toy_meta(), by="site")

    assert [c.client_id for c in m.clients] == ["site-0", "site-1", "site-2", "site-3"]
    assert [c.n_records for c in m.clients] == [5, 3, 2, 1]
    assert m.unassigned["no_site"] == [12]
    assert (
        m.client("site-0").train == (1, 2)
        and m.client("site-0").val == (3,)
        and m.client("site-0").test == (4, 5)
    )


def test_majority_cross_site_moves_patient_to_one_client():
    m = partition_dataset(_toy_meta(), by="site", cross_site="majority")

    owner = _owner(m)
    assert owner[4] == owner[5] == owner[6] == "site-0"
    assert owner[12] == "site-3"  # the site-less record follows its patient
    assert m.unassigned["no_site"] == []


def test_tail_pool_and_drop():
    pooled = partition_dataset(_toy_meta(), by="site", min_records=3)
    dropped = partition_dataset(_toy_meta(), by="site", min_records=3, tail="drop")

    assert pooled.client_ids == ["site-0", "site-1", "site-pooled"]
    assert pooled.client("site-pooled").site == [2, 3] and pooled.client("site-pooled").n_records == 3
    assert dropped.client_ids == ["site-0", "site-1"] and dropped.unassigned["dropped"] == [9, 10, 11]


def test_patient_split_uses_most_common_fold():
    meta = _toy_meta()
    meta.loc[2, "strat_fold"] = 10  # patient 1 now has folds {1, 10}: tie → higher fold (holdout)
    m = partition_dataset(meta, by="site")
    assert m.client("site-0").test[:2] == (1, 2)


@pytest.mark.parametrize("by", ["iid", "dirichlet"])
def test_iid_and_dirichlet_assign_whole_patients(demo_ptbxl, by):
    meta = read_database(demo_ptbxl)

    m = partition_dataset(meta, by=by, num_clients=3, alpha=0.5, seed=1)

    ids = m.ecg_ids()
    assert sorted(ids) == sorted(meta.index) and len(ids) == len(set(ids))
    owner = pd.Series(_owner(m))
    assert (
        meta.loc[owner.index, "patient_id"].groupby(owner.values).apply(set).map(len).sum()
        == meta["patient_id"].nunique()
    )


def test_no_patient_in_two_splits_and_counts_sum(demo_ptbxl):
    meta = read_database(demo_ptbxl)

    m = partition_dataset(meta, by="site")

    split = {i: s for c in m.clients for s in ("train", "val", "test") for i in c.ecg_ids(s)}
    per_patient = (
        meta.loc[list(split)].assign(split=pd.Series(split)).groupby("patient_id")["split"].nunique()
    )
    assert (per_patient == 1).all()
    assert sum(c.n_records for c in m.clients) + len(m.unassigned["no_site"]) == len(meta)
    for c in m.clients:
        assert c.counts["total"] == c.counts["train"] + c.counts["val"] + c.counts["test"]
        assert c.demographic_summary["n"] == c.n_records


def test_iid_sizes_are_balanced(demo_ptbxl):
    m = partition_dataset(read_database(demo_ptbxl), by="iid", num_clients=4)
    sizes = [c.n_records for c in m.clients]
    assert max(sizes) - min(sizes) <= 3


def test_dirichlet_small_alpha_skews_labels_more_than_iid(demo_ptbxl):
    meta = read_database(demo_ptbxl)

    def skew(manifest):  # mean total-variation distance of client class mix to the global mix
        glob = meta["scp_codes"].map(primary_superclass).value_counts(normalize=True)
        tvs = []
        for c in manifest.clients:
            local = meta.loc[c.ecg_ids(), "scp_codes"].map(primary_superclass).value_counts(normalize=True)
            tvs.append(0.5 * local.reindex(glob.index, fill_value=0).sub(glob).abs().sum())
        return float(np.mean(tvs))

    skewed = np.mean(
        [skew(partition_dataset(meta, by="dirichlet", num_clients=3, alpha=0.1, seed=s)) for s in range(3)]
    )
    iid = np.mean([skew(partition_dataset(meta, by="iid", num_clients=3, seed=s)) for s in range(3)])
    assert skewed > iid + 0.15


def test_manifest_round_trip(tmp_path, demo_ptbxl):
    m = partition_dataset(read_database(demo_ptbxl), by="site", min_records=8, dataset=str(demo_ptbxl))

    path = m.save(tmp_path / "manifest.json")
    loaded = Manifest.load(path)

    assert loaded == m
    assert loaded.config == PartitionConfig(by="site", min_records=8)
    assert len(loaded.label_codes) == 71 and loaded.dataset == str(demo_ptbxl)


def test_manifest_load_errors(tmp_path):
    with pytest.raises(FedECGError, match="not found"):
        Manifest.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(FedECGError, match="bad.json"):
        Manifest.load(tmp_path / "bad.json")


def test_bad_config_rejected():
    with pytest.raises(FedECGError, match="tail"):
        PartitionConfig(tail="keep")
    with pytest.raises(FedECGError, match="by"):
        partition_dataset(_toy_meta(), by="hospital")


@pytest.mark.real_data
def test_real_metadata_full_site_counts(ptbxl_dir):
    meta = read_database(ptbxl_dir / "metadata_full")

    m = partition_dataset(meta, by="site")

    assert len(m.clients) == 51
    assert [c.n_records for c in m.clients[:4]] == [8940, 6294, 5075, 576]
    assert len(m.unassigned["no_site"]) == 17
    assert sum(c.n_records for c in m.clients) == 21799 - 17
