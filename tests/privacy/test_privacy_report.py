"""privacy.report: verdict levels follow the stated thresholds; the HTML is self-contained."""

import copy

import pytest

from privacy.report import VerdictThresholds, render_html, verdict


def _audit():
    stats = {"mean": 1.0, "median": 1.0, "p05": 0.8, "min": 0.7}
    return {
        "run_dir": "r",
        "created": "now",
        "n_synthetic": 100,
        "n_train": 300,
        "n_holdout": 100,
        "distance": "normalised Euclidean",
        "dcr": {
            "train": stats,
            "holdout": stats,
            "baseline_holdout_to_train": stats,
            "share_closer_to_train": 0.76,
            "closer_to_train": 76,
            "n": 100,
            "expected_share": 0.75,
            "binomial": {"p_value": 0.45, "null_share": 0.75},
            "p_value": 0.5,
            "significant": False,
            "permutation": {"p_value": 0.5, "max_share_of_one_record": 0.02},
            "mannwhitney_u": {"statistic": 1.0, "p_value": 0.5, "reference_size": 100},
        },
        "nndr": {**stats, "baseline_holdout": stats},
        "near_copy_share": 0.0,
        "near_copy": {"threshold": 1 / 3, "baseline_holdout_share": 0.0, "worst": []},
        "mia_auc": 0.52,
        "mia": {
            "auc": 0.52,
            "tpr_at_fpr": {"0.01": 0.01, "0.001": 0.0},
            "n_members": 100,
            "n_nonmembers": 100,
            "fpr_resolution": 0.01,
            "timesteps": [5],
            "n_noise": 1,
        },
        "epsilon": {
            "sites": {"a": {"n_records": 1000, "delta": 1e-5, "epsilon": 3.0}},
            "release": {"epsilon": 3.0, "delta": 1e-5},
            "non_private_sites": [],
        },
    }


def _levels(audit):
    return {c["check"]: c["level"] for c in verdict(audit)["checks"]}


def test_clean_audit_passes():
    v = verdict(_audit())
    assert v["overall"] == "PASS" and all(c["level"] == "PASS" for c in v["checks"])


@pytest.mark.parametrize(
    "mutate, check, level",
    [
        (lambda a: a.update(near_copy_share=0.02), "near copies", "FAIL"),
        (lambda a: a["dcr"].update(p_value=0.01), "distance to closest record", "WARN"),
        (lambda a: a["dcr"].update(p_value=0.01, share_closer_to_train=0.9), "distance to closest record", "FAIL"),
        (lambda a: a["mia"].update(auc=0.65), "membership inference", "WARN"),
        (lambda a: a["mia"].update(auc=0.8), "membership inference", "FAIL"),
        (lambda a: a["epsilon"].update(non_private_sites=["b"]), "formal guarantee", "WARN"),
        (lambda a: a["epsilon"]["sites"]["a"].update(delta=0.01), "formal guarantee", "WARN"),
        (
            lambda a: a.update(
                canary={"epsilon_lower_bound": 4.0, "beta": 0.05, "accounted_epsilon": 3.0, "consistent": False}
            ),
            "empirical DP audit",
            "FAIL",
        ),
    ],
)
def test_each_threshold_moves_its_check(mutate, check, level):
    a = copy.deepcopy(_audit())
    mutate(a)
    assert _levels(a)[check] == level
    assert verdict(a)["overall"] == level


def test_unrealistic_generator_is_flagged_as_uninformative_but_not_failed():
    a = _audit()
    a["dcr"]["train"] = {**a["dcr"]["train"], "median": 10.0}
    v = verdict(a, VerdictThresholds(realism_factor=3.0))
    assert any(c["check"] == "informativeness" and c["level"] == "INFO" for c in v["checks"])
    assert v["overall"] == "UNINFORMATIVE"  # never PASS for a generator the audit calls not yet realistic
    assert "may leave the consortium" not in v["summary"] and "does not support a release" in v["summary"]


def test_html_embeds_images_and_states_thresholds():
    a = _audit()
    a["verdict"] = verdict(a)
    html = render_html(a, {"dcr": b"\x89PNGfake", "roc": b"\x89PNGfake"})
    assert html.count("data:image/png;base64,") == 2
    assert "WARN above AUC 0.6" in html and "<script" not in html
