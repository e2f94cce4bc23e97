"""privacy.distances: normalised distance, exact chunked nearest neighbours, shift-tolerant variant."""

import numpy as np
import pytest

from fedecg.errors import FedECGError
from privacy.distances import (
    lead_scales,
    nearest_neighbours,
    nearest_neighbours_shift_tolerant,
    normalise,
    shift_tolerant_distance,
)


def _ecgs(n, seed, leads=8, t=200):
    rng = np.random.default_rng(seed)
    tt = np.arange(t) / 100.0
    base = np.sin(2 * np.pi * rng.uniform(0.8, 1.6, (n, 1, 1)) * tt + rng.uniform(0, 6, (n, leads, 1)))
    return (base * rng.uniform(0.2, 2.0, (n, leads, 1)) + 0.1 * rng.standard_normal((n, leads, t))).astype(np.float32)


def test_distance_formula_matches_definition():
    x, y = _ecgs(1, 0), _ecgs(1, 1)
    s = lead_scales(np.concatenate([x, y]))
    zx, zy = normalise(x, s), normalise(y, s)
    cx = (x - x.mean(2, keepdims=True)) / s[None, :, None]
    cy = (y - y.mean(2, keepdims=True)) / s[None, :, None]
    expected = np.sqrt(((cx - cy) ** 2).mean())
    assert np.linalg.norm(zx - zy) == pytest.approx(expected, rel=1e-5)


def test_baseline_offset_is_ignored_but_amplitude_is_not():
    x = _ecgs(1, 0)
    s = lead_scales(_ecgs(20, 3))
    assert np.linalg.norm(normalise(x + 0.7, s) - normalise(x, s)) < 1e-5
    assert np.linalg.norm(normalise(2 * x, s) - normalise(x, s)) > 0.1


def test_chunked_neighbours_equal_brute_force():
    ref, q = _ecgs(70, 1), _ecgs(13, 2)
    s = lead_scales(ref)
    nn = nearest_neighbours(q, ref, k=3, scales=s, query_chunk=4, ref_chunk=16)
    zq, zr = normalise(q, s).reshape(13, -1), normalise(ref, s).reshape(70, -1)
    full = np.sqrt(((zq[:, None].astype(np.float64) - zr[None]) ** 2).sum(-1))
    order = np.argsort(full, 1)[:, :3]
    np.testing.assert_array_equal(nn.index, order)
    np.testing.assert_allclose(nn.distance, np.take_along_axis(full, order, 1), rtol=1e-9)


def test_exact_copy_has_zero_distance_and_is_found():
    ref = _ecgs(50, 4)
    nn = nearest_neighbours(ref[[7, 21]], ref, k=2)
    assert list(nn.index[:, 0]) == [7, 21]
    assert nn.distance[:, 0].max() < 1e-6 and nn.distance[:, 1].min() > 0.1


def test_shift_tolerant_distance_recovers_a_shifted_copy():
    x = _ecgs(4, 5, t=300)
    shifted = np.roll(x, 6, axis=2)
    s = lead_scales(x)
    plain = shift_tolerant_distance(x, shifted, s, max_lag=0)
    tolerant = shift_tolerant_distance(x, shifted, s, max_lag=10)
    assert (plain > 0.2).all()
    assert (tolerant < 0.05).all()  # only the wrapped 6 samples differ, excluded from the overlap


def test_shift_tolerant_at_lag_zero_equals_plain_distance():
    x, y = _ecgs(5, 6), _ecgs(5, 7)
    s = lead_scales(np.concatenate([x, y]))
    plain = np.linalg.norm(normalise(x, s).reshape(5, -1) - normalise(y, s).reshape(5, -1), axis=1)
    np.testing.assert_allclose(shift_tolerant_distance(x, y, s, max_lag=0), plain, rtol=1e-5)


def test_shift_tolerant_search_finds_shifted_copy_and_matches_pairwise_distance():
    ref = _ecgs(40, 8, t=300)
    q = np.concatenate([np.roll(ref[[3]], 4, axis=2), _ecgs(2, 9, t=300)])
    s = lead_scales(ref)
    nn = nearest_neighbours_shift_tolerant(q, ref, k=2, scales=s, max_lag=8)
    assert nn.index[0, 0] == 3 and nn.distance[0, 0] < 0.05
    pair = shift_tolerant_distance(q, ref[nn.index[:, 1]], s, max_lag=8)
    np.testing.assert_allclose(nn.distance[:, 1], pair, rtol=1e-4, atol=1e-6)
    brute = np.array([shift_tolerant_distance(q[[i]].repeat(40, 0), ref, s, 8) for i in range(3)])
    np.testing.assert_allclose(nn.distance[:, 0], brute.min(1), rtol=1e-4, atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(FedECGError):
        nearest_neighbours(np.zeros((3, 8)), np.zeros((3, 8, 10)))
    with pytest.raises(FedECGError):
        nearest_neighbours(_ecgs(2, 0, leads=8), _ecgs(2, 0, leads=12))
