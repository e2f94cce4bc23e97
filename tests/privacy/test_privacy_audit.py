"""privacy.audit: planted memorization is flagged; a generator of unseen records is not."""

import numpy as np
import pytest

from fedecg.errors import FedECGError
from privacy.audit import AuditConfig, dcr_tests, memorization_audit
from ptbxl.constants import TEST_FOLDS, TRAIN_FOLDS, VAL_FOLDS


def _population(n, seed, t=250):
    """ECG-like random records: a quasi-periodic beat train per lead plus noise (mV)."""
    rng = np.random.default_rng(seed)
    tt = np.arange(t) / 100.0
    hr = rng.uniform(0.9, 1.6, (n, 1, 1))
    phase = rng.uniform(0, 1, (n, 1, 1))
    beat = np.exp(-(((tt * hr + phase) % 1.0 - 0.5) ** 2) / 0.002)
    amp = rng.normal(1.0, 0.3, (n, 8, 1))
    return (amp * beat + 0.15 * rng.standard_normal((n, 8, t))).astype(np.float32)


@pytest.fixture(scope="module")
def sets():
    pop = _population(450, 0)
    return pop[:250], pop[250:350], pop[350:]  # train, holdout, fresh (unseen, same distribution)


def test_generator_returning_training_records_is_flagged(sets):
    train, holdout, _ = sets
    rng = np.random.default_rng(1)
    synthetic = train[rng.choice(len(train), 60, replace=False)]
    res = memorization_audit(synthetic, train, holdout, AuditConfig(seed=0))
    assert res.near_copy_share == pytest.approx(1.0)
    assert res.summary["dcr"]["significant"]
    assert res.summary["dcr"]["share_closer_to_train"] == 1.0
    assert res.summary["dcr"]["binomial"]["p_value"] < 1e-6  # (250/350)^60
    assert res.summary["dcr"]["permutation"]["p_value"] < 1e-3
    assert res.summary["near_copy"]["baseline_holdout_share"] < 0.05
    assert res.summary["nndr"]["median"] == pytest.approx(0.0, abs=1e-6)


def test_generator_returning_unseen_records_is_not_flagged(sets):
    train, holdout, fresh = sets
    res = memorization_audit(fresh[:60], train, holdout, AuditConfig(seed=0))
    assert res.near_copy_share <= 0.05
    assert not res.summary["dcr"]["significant"]
    assert abs(res.summary["dcr"]["share_closer_to_train"] - 250 / 350) < 0.2
    assert res.summary["nndr"]["median"] > 0.8


def test_noisy_copies_are_caught_and_report_names_the_train_record(sets):
    train, holdout, _ = sets
    rng = np.random.default_rng(2)
    idx = rng.choice(len(train), 20, replace=False)
    synthetic = train[idx] + 0.02 * rng.standard_normal(train[idx].shape).astype(np.float32)
    ids = np.arange(1000, 1000 + len(train))
    res = memorization_audit(synthetic, train, holdout, AuditConfig(n_worst=3), train_ids=ids)
    assert res.near_copy_share == pytest.approx(1.0)
    worst = res.summary["near_copy"]["worst"][0]
    assert worst["train_ecg_id"] == 1000 + idx[worst["synthetic_index"]]


def test_shift_tolerant_audit_catches_shifted_copies(sets):
    train, holdout, _ = sets
    synthetic = np.roll(train[:30], 5, axis=2)
    plain = memorization_audit(synthetic, train, holdout, AuditConfig())
    tolerant = memorization_audit(synthetic, train, holdout, AuditConfig(shift_tolerant=True, max_lag=8))
    assert tolerant.near_copy_share == pytest.approx(1.0)
    assert tolerant.near_copy_share > plain.near_copy_share


def test_dcr_tests_known_values():
    t, h = np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 1.1, 1.2, 1.3])
    out = dcr_tests(t, h, n_train=10, n_holdout=10, matched_train=t, matched_holdout=h)
    assert out["share_closer_to_train"] == 1.0
    assert out["binomial"]["p_value"] == pytest.approx(1 / 16)
    assert out["mannwhitney_u"]["statistic"] == 0.0
    # a 3:1 train:holdout split makes "closer to train" the expected outcome: 4 of 4 is then weak evidence
    assert dcr_tests(t, h, n_train=30, n_holdout=10)["binomial"]["p_value"] == pytest.approx(0.75**4)


def test_mismatched_shapes_raise(sets):
    train, holdout, _ = sets
    with pytest.raises(FedECGError, match="share"):
        memorization_audit(train[:5, :4], train, holdout)


def test_hub_record_does_not_make_the_dcr_test_significant(sets):
    """A generator of flat lines is nearest to the one lowest-amplitude real ECG for every sample. If that
    record happens to be in train, the binomial test (independent samples) cries wolf; the split-permutation
    test knows it is one record and stays at p ≈ N/(N+M)."""
    train, holdout, _ = sets
    train = train.copy()
    train[0] *= 0.05  # the hub: a near-flat training ECG
    synthetic = np.zeros((40, 8, train.shape[2]), np.float32) + 0.01 * np.random.default_rng(3).standard_normal(
        (40, 8, train.shape[2])
    ).astype(np.float32)
    res = memorization_audit(synthetic, train, holdout, AuditConfig(n_permutations=2000))
    d = res.summary["dcr"]
    assert d["share_closer_to_train"] == 1.0
    assert d["binomial"]["p_value"] < 1e-4
    assert d["permutation"]["max_share_of_one_record"] == 1.0
    assert d["permutation"]["p_value"] > 0.5 and not d["significant"]


@pytest.mark.real_data
def test_planted_memorization_on_real_ptbxl(ptbxl_dir):
    """Real PTB-XL subset: train = folds 1–8, holdout = fold 10, 'fresh' unseen = fold 9. A generator that
    returns training ECGs is flagged; one that returns unseen ECGs is not."""
    from ptbxl.dataset import load_arrays
    from ptbxl.layout import read_database

    meta = read_database(ptbxl_dir)
    ids = {
        s: meta.index[meta["strat_fold"].isin(f)].tolist()
        for s, f in {"train": TRAIN_FOLDS, "val": VAL_FOLDS, "test": TEST_FOLDS}.items()
    }
    train = np.asarray(load_arrays(ptbxl_dir, ids["train"]).x)
    holdout = np.asarray(load_arrays(ptbxl_dir, ids["test"]).x)
    fresh = np.asarray(load_arrays(ptbxl_dir, ids["val"]).x)
    rng = np.random.default_rng(0)
    copier = memorization_audit(
        train[rng.choice(len(train), 40, replace=False)], train, holdout, AuditConfig(n_permutations=2000)
    )
    honest = memorization_audit(fresh[:40], train, holdout, AuditConfig(n_permutations=2000))
    assert copier.near_copy_share == pytest.approx(1.0)
    assert copier.summary["dcr"]["significant"]
    assert honest.near_copy_share <= 0.05
    assert not honest.summary["dcr"]["significant"]
