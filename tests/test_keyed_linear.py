"""A lagged LinearRLS with a window per key (keyed=True): each key's window holds that key's own
past inputs, one key is the unkeyed expert, calls of any size and checkpoints change nothing, and
resets, predictions without advancing and foreign checkpoints behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psann_stream.errors import CheckpointError, ConfigError
from psann_stream.experts import LinearRLS


def _interleaved_copies(n: int, keys: int, lag: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``keys`` white-noise streams interleaved at random; each event's target is its own key's input
    ``lag`` events of that key back (0 before there is one)."""
    rng = np.random.default_rng(seed)
    key = rng.integers(0, keys, n)
    x = rng.standard_normal(n)
    y = np.zeros(n)
    for k in range(keys):
        rows = np.flatnonzero(key == k)
        y[rows[lag:]] = x[rows[:-lag]]
    return np.array([f"k{k}" for k in key]), x[:, None], y


def test_each_key_s_window_holds_its_own_past_so_a_per_key_delay_is_learned():
    keys, X, y = _interleaved_copies(4000, keys=5, lag=3)
    keyed = LinearRLS(1, lags=4, keyed=True).learn_batch(keys, X, y)
    shared = LinearRLS(1, lags=4).learn_batch(X, y)  # one window over the interleaved events
    tail = slice(3000, None)
    assert np.mean((keyed[tail] - y[tail]) ** 2) < 1e-3 * np.var(y[tail])
    assert np.mean((shared[tail] - y[tail]) ** 2) > 0.5 * np.var(y[tail])


def test_a_key_s_window_shifts_by_one_event_of_that_key_only():
    keys, X, y = _interleaved_copies(300, keys=3, lag=1, seed=1)
    lin = LinearRLS(1, lags=3, keyed=True)
    last: dict[str, np.ndarray] = {}
    for k, x, t in zip(keys, X, y):
        before = {other: lin.window_of(other) for other in lin.keys}
        lin.learn_one(k, x, t)
        now = lin.window_of(k)
        if k in last:
            np.testing.assert_array_equal(now[1:], last[k][:-1])
        for other, w in before.items():
            if other != k:
                np.testing.assert_array_equal(lin.window_of(other), w)
        last[k] = now


def test_one_key_is_the_unkeyed_expert_and_calls_of_any_size_equal_one_call():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((500, 2)), rng.standard_normal(500)
    alone = LinearRLS(2, lags=3).learn_batch(X, y)
    np.testing.assert_array_equal(LinearRLS(2, lags=3, keyed=True).learn_batch(["a"] * 500, X, y), alone)
    keys = np.array(["a", "b", "c"])[rng.integers(0, 3, 500)]
    whole = LinearRLS(2, lags=3, keyed=True).learn_batch(keys, X, y)
    split, ones = LinearRLS(2, lags=3, keyed=True), LinearRLS(2, lags=3, keyed=True)
    parts = [split.learn_batch(keys[lo:hi], X[lo:hi], y[lo:hi]) for lo, hi in ((0, 1), (1, 170), (170, 500))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal([ones.learn_one(k, x, t) for k, x, t in zip(keys, X, y)], whole)


def test_a_resumed_keyed_expert_equals_an_uninterrupted_one_and_predictions_without_advancing_change_nothing():
    keys, X, y = _interleaved_copies(800, keys=4, lag=2, seed=3)
    whole = LinearRLS(1, lags=3, keyed=True, n_outputs=1)
    want = whole.learn_batch(keys, X, y)
    first = LinearRLS(1, lags=3, keyed=True)
    got = [first.learn_batch(keys[:400], X[:400], y[:400])]
    first.predict_batch(keys[400:450], X[400:450], advance=False)
    first.predict_one(keys[400], X[400])
    resumed = LinearRLS(1, lags=3, keyed=True)
    resumed.load_state_dict(first.state_dict())
    got.append(resumed.learn_batch(keys[400:], X[400:], y[400:]))
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_foreign_checkpoints_are_refused_naming_the_difference():
    keys, X, y = _interleaved_copies(100, keys=3, lag=1)
    keyed = LinearRLS(1, lags=3, keyed=True)
    keyed.learn_batch(keys, X, y)
    plain = LinearRLS(1, lags=3)
    plain.learn_batch(X, y)
    with pytest.raises(CheckpointError, match="this one is unkeyed: build it with the same keyed"):
        LinearRLS(1, lags=3).load_state_dict(keyed.state_dict())
    with pytest.raises(CheckpointError, match="this one is keyed: build it with the same keyed"):
        LinearRLS(1, lags=3, keyed=True).load_state_dict(plain.state_dict())
    with pytest.raises(CheckpointError, match="lags = 2"):
        LinearRLS(1, lags=2, keyed=True).load_state_dict(keyed.state_dict())
    with pytest.raises(CheckpointError, match="3 state\\(s\\) for 2 key\\(s\\)"):
        LinearRLS(1, lags=3, keyed=True).load_state_dict({**keyed.state_dict(), "keys": ["k0", "k1"]})


def test_reset_of_some_keys_empties_their_windows_only():
    keys, X, y = _interleaved_copies(200, keys=3, lag=1)
    lin = LinearRLS(1, lags=3, keyed=True)
    lin.learn_batch(keys, X, y)
    kept = lin.window_of("k2")
    lin.reset(["k0", "k1"])
    assert not lin.window_of("k0").any() and not lin.window_of("k1").any()
    np.testing.assert_array_equal(lin.window_of("k2"), kept)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        lin.reset(["k2", "nope"])
    np.testing.assert_array_equal(lin.window_of("k2"), kept)  # refused before anything changed
    with pytest.raises(ConfigError, match="keys are for a keyed LinearRLS"):
        LinearRLS(1, lags=3).reset(["k0"])


def test_bad_settings_and_call_forms_are_refused():
    with pytest.raises(ConfigError, match="give lags >= 2"):
        LinearRLS(2, keyed=True)
    with pytest.raises(ConfigError, match=r"takes \(keys, X, Y\) for this keyed LinearRLS; got 2"):
        LinearRLS(2, lags=2, keyed=True).learn_batch(np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ConfigError, match=r"2 key\(s\) for 1 row\(s\)"):
        LinearRLS(2, lags=2, keyed=True).learn_batch(["a", "b"], np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ConfigError, match="unknown key 'a'"):
        LinearRLS(2, lags=2, keyed=True).window_of("a")
    with pytest.raises(ConfigError, match="unkeyed; call it without a key"):
        LinearRLS(2, lags=2).window_of("a")
    saved = LinearRLS(2, lags=2, keyed=True).state_dict()
    assert saved["keys"] == [] and tuple(torch.as_tensor(saved["window"]).shape) == (0, 4)
