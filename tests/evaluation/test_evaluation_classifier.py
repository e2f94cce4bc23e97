"""evaluation.classifier: the compact 1-D CNN, AUROC helpers and checkpoint round trip."""

import numpy as np
import pytest
import torch

from evaluation.classifier import (
    ClassifierConfig,
    bootstrap_auroc,
    embed,
    load_classifier,
    macro_auroc,
    predict_proba,
    save_classifier,
    train_classifier,
)
from evaluation.leads import to_model_view
from fedecg.errors import FedECGError
from tests._evaluation_ecgs import toy_ecgs


@pytest.fixture(scope="module")
def task():
    slow, fast = toy_ecgs(40, hr_bpm=55, seed=0), toy_ecgs(40, hr_bpm=110, seed=1)
    x = to_model_view(np.concatenate([slow, fast]))
    y = np.zeros((80, 2), np.float32)
    y[:40, 0], y[40:, 1] = 1, 1
    return x, y


def test_macro_auroc_known_values():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)

    assert macro_auroc(y, y) == 1.0
    assert macro_auroc(y, 1 - y) == 0.0
    assert np.isnan(macro_auroc(np.ones((4, 2)), y))


def test_classifier_learns_separable_task_and_roundtrips(task, tmp_path):
    x, y = task
    cfg = ClassifierConfig(n_classes=2, width=8, emb_dim=16, epochs=6, batch_size=16, lr=1e-2, seed=0)

    model = train_classifier(x, y, cfg, x_val=x, y_val=y)
    probs = predict_proba(model, x)
    save_classifier(tmp_path / "c.pt", model, cfg, ["slow", "fast"])
    loaded, classes = load_classifier(tmp_path / "c.pt")

    assert macro_auroc(y, probs) > 0.9
    assert classes == ["slow", "fast"]
    assert np.allclose(predict_proba(loaded, x), probs, atol=1e-6)
    assert embed(loaded, x[:5]).shape == (5, 16)


def test_training_is_seeded_and_leaves_global_rng_alone(task):
    x, y = task
    cfg = ClassifierConfig(n_classes=2, width=4, emb_dim=8, epochs=1, seed=3)
    state = torch.random.get_rng_state()

    a = predict_proba(train_classifier(x, y, cfg), x)
    b = predict_proba(train_classifier(x, y, cfg), x)

    assert np.array_equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_bootstrap_ci_brackets_point_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 3)).astype(np.float32)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.5, y.shape), 0, 1)

    out = bootstrap_auroc(y, p, n_boot=100)

    assert out["ci_low"] <= out["auroc"] <= out["ci_high"]
    assert 0.7 < out["auroc"] < 1.0


def test_bad_inputs_raise(tmp_path):
    with pytest.raises(FedECGError):
        train_classifier(np.zeros((4, 8, 100)), np.zeros((4, 3)), ClassifierConfig(n_classes=2))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FedECGError):
        load_classifier(tmp_path / "junk.pt")
