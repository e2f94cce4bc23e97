"""evaluation.plots: ECG paper PNGs (per ECG and grid overview)."""

import numpy as np
import pytest

from evaluation.plots import paper_size_mm, plot_ecg, plot_ecg_grid
from fedecg.errors import FedECGError
from tests._evaluation_ecgs import toy_ecgs


def test_paper_is_25_mm_per_second_wide():
    width, height = paper_size_mm(10.0)

    assert width == pytest.approx(10.0 + 250.0)
    assert height == pytest.approx(120.0)


def test_plot_ecg_writes_png_with_red_grid_and_black_trace(tmp_path):
    import matplotlib.image as mpimg

    path = plot_ecg(toy_ecgs(1)[0], tmp_path / "ecg.png", title="toy")

    img = mpimg.imread(path)[..., :3]
    reddish = (img[..., 0] > 0.8) & (img[..., 1] < 0.6) & (img[..., 2] < 0.6)
    dark = img.sum(axis=-1) < 0.6
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert img.shape[1] > 1.8 * img.shape[0]  # landscape paper (260 x 120 mm + margins)
    assert reddish.mean() > 0.005 and dark.mean() > 0.005


def test_plot_ecg_accepts_model_view_and_grid_accepts_titles(tmp_path):
    x8 = toy_ecgs(3)[:, [0, 1, 6, 7, 8, 9, 10, 11]]

    one = plot_ecg(x8[0], tmp_path / "one.png")
    grid = plot_ecg_grid(x8, tmp_path / "grid.png", titles=["a", "b", "c"])

    assert one.stat().st_size > 10_000 and grid.stat().st_size > 10_000


def test_bad_shapes_raise(tmp_path):
    with pytest.raises(FedECGError):
        plot_ecg_grid(np.zeros((2, 5, 100)), tmp_path / "x.png")
    with pytest.raises(FedECGError):
        plot_ecg_grid(toy_ecgs(2), tmp_path / "x.png", titles=["only one"])
