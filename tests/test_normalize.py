"""Online normalisers (C11): float64 agreement with numpy, associative merging, constant input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import ConfigError, NonFiniteInputError
from psann_stream.normalize import RunningStats

values = st.integers(0, 2**32 - 1).flatmap(
    lambda seed: st.tuples(st.just(seed), st.integers(1, 60), st.sampled_from([1e-3, 1.0, 1e3]), st.sampled_from([0.0, 1.0, -1e4]))
)


def _data(seed: int, n: int, scale: float, offset: float, f: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, f)) * scale + offset


@given(values)
def test_cumulative_stats_match_numpy_float64(v):
    x = _data(*v)
    rs = RunningStats()
    for row in x:
        rs.update(row)
    np.testing.assert_allclose(rs.mean, x.mean(0), rtol=1e-9, atol=1e-12 * (1 + np.abs(x).max()))
    if len(x) >= 2:
        np.testing.assert_allclose(rs.var, x.var(0, ddof=1), rtol=1e-9, atol=1e-12 * (1 + x.var(0).max()))
    assert (rs.var >= 0).all()


@given(values, st.floats(0.5, 0.9999))
def test_forgetting_stats_match_numpy_weighted_moments(v, lam):
    x = _data(*v)
    rs = RunningStats(forget=lam)
    rs.update(x)
    w = lam ** np.arange(len(x) - 1, -1, -1)
    mean = np.average(x, axis=0, weights=w)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-9, atol=1e-12 * (1 + np.abs(x).max()))
    if len(x) >= 2:
        var = np.average((x - mean) ** 2, axis=0, weights=w)
        np.testing.assert_allclose(rs.var, var, rtol=1e-8, atol=1e-12 * (1 + x.var(0).max()))


@given(values, st.integers(0, 60), st.integers(0, 60), st.sampled_from([1.0, 0.99]))
def test_merging_partitions_is_associative_and_equals_one_pass(v, cut1, cut2, lam):
    x = _data(*v)
    i, j = sorted((min(cut1, len(x)), min(cut2, len(x))))
    parts = []
    for chunk in (x[:i], x[i:j], x[j:]):
        rs = RunningStats(3, forget=lam)
        if len(chunk):
            rs.update(chunk)
        parts.append(rs)
    left = parts[0].merge(parts[1]).merge(parts[2])
    right = parts[0].merge(parts[1].merge(parts[2]))
    whole = RunningStats(3, forget=lam)
    whole.update(x)
    for got in (left, right):
        assert got.count == whole.count
        np.testing.assert_allclose(got.mean, whole.mean, rtol=1e-9, atol=1e-9 * (1 + np.abs(x).max()))
        np.testing.assert_allclose(got.var, whole.var, rtol=1e-7, atol=1e-9 * (1 + x.var(0).max()))


@given(st.floats(-1e6, 1e6), st.integers(1, 50), st.sampled_from([1.0, 0.9]))
def test_constant_input_normalises_to_zero_and_stays_finite(c, n, lam):
    rs = RunningStats(forget=lam)
    rs.update(np.full((n, 2), c))
    z = rs.transform(np.full((1, 2), c))
    assert np.isfinite(z).all() and np.abs(z).max() <= 1e-6
    assert np.isfinite(rs.inverse_transform(z)).all()


@given(values)
def test_inverse_transform_undoes_transform(v):
    x = _data(*v)
    rs = RunningStats()
    rs.update(x)
    np.testing.assert_allclose(rs.inverse_transform(rs.transform(x)), x, rtol=1e-9, atol=1e-9 * (1 + np.abs(x).max()))


def test_bad_values_and_shapes_raise_and_change_nothing():
    rs = RunningStats()
    rs.update(np.array([[1.0, 2.0]]))
    before = rs.state_dict()
    with pytest.raises(NonFiniteInputError, match=r"row 1, column 0 is nan"):
        rs.update(np.array([[1.0, 2.0], [np.nan, 1.0]]))
    with pytest.raises(ConfigError, match="has 2 feature"):
        rs.update(np.zeros((1, 3)))
    after = rs.state_dict()
    assert after["count"] == before["count"] and np.array_equal(after["mean"], before["mean"])
    with pytest.raises(ConfigError, match="forget"):
        RunningStats(forget=0.0)
    with pytest.raises(ConfigError, match="malformed state"):
        rs.load_state_dict({"count": 1})


@given(st.integers(0, 2**32 - 1), st.floats(2.0, 20.0), st.sampled_from([1.0, 0.99]))
def test_clipped_stats_are_not_poisoned_by_outliers(seed, clip, lam):
    """With clip, a 1e6 outlier moves the mean by at most clip*std/n; without, it dominates."""
    x = np.random.default_rng(seed).standard_normal((200, 1))
    bad = np.vstack([x, [[1e6]], x])
    clipped, plain = RunningStats(clip=clip, forget=lam), RunningStats(forget=lam)
    clipped.update(bad)
    plain.update(bad)
    ref = RunningStats(forget=lam)
    ref.update(np.vstack([x, x]))
    assert abs(clipped.mean[0] - ref.mean[0]) < 0.5 and clipped.std[0] < 3.0
    assert plain.std[0] > 1000.0


@given(st.floats(-1e3, 1e3), st.integers(2, 50), st.sampled_from([1.0, 0.99]), st.floats(2.0, 20.0))
def test_a_constant_so_far_has_no_scale_and_its_first_other_value_is_folded_in_whole(c, n, lam, clip):
    """All values equal (m2 = 0): the variance is 1, not 0 (a scale of sqrt(eps) would make the first
    other value thousands of deviations away), and the clip does not limit that first other value to
    the constant (it would then take many events to find the scale)."""
    rs = RunningStats(1, forget=lam, clip=clip)
    rs.update(np.full((n, 1), c))
    assert rs.var[0] == 1.0 and rs.transform(np.array([[c]]))[0, 0] == 0.0
    rs.update(np.array([[c + 10.0]]))
    plain = RunningStats(1, forget=lam)
    plain.update(np.vstack([np.full((n, 1), c), [[c + 10.0]]]))
    np.testing.assert_allclose(rs.mean, plain.mean, rtol=1e-12)
    np.testing.assert_allclose(rs.var, plain.var, rtol=1e-9)
    assert 0.0 < rs.var[0] < 1e3
