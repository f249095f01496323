"""The echo-state ensemble member (psann_stream.reservoir): its state follows the documented recursion
(a float64 numpy reference), stays within [-1, 1] for any finite input, is kept per key, survives a
checkpoint, and its readout learns what the state holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psann_stream.errors import CheckpointError, ConfigError
from psann_stream.normalize import RunningStats
from psann_stream.reservoir import EchoState


def _reference_states(esn: EchoState, X: np.ndarray, keys: list) -> tuple[dict, np.ndarray]:
    """The module doc's recursion in plain numpy: inputs standardised with the statistics before each
    event (zeros until they have a spread), ``s' = (1 - leak) s + leak tanh(W_in x + W s + b)`` per
    key, from 0. Returns every key's last state and each event's new state."""
    stats = RunningStats(X.shape[1], clip=esn.x_stats.clip)
    states: dict = {}
    after = np.empty((X.shape[0], esn.units))
    for n, (x, k) in enumerate(zip(X, keys)):
        xn = stats.transform(x) if stats.count >= 2 else np.zeros_like(x)
        s = states.get(k, np.zeros(esn.units))
        s = (1 - esn.leak) * s + esn.leak * np.tanh(esn._Win @ xn + esn._Wr @ s + esn._bias)
        states[k] = after[n] = s
        stats.update(x[None, :])
    return states, after


@pytest.mark.parametrize("keyed, leak", [(False, 1.0), (False, 0.3), (True, 1.0), (True, 0.6)])
def test_the_reservoir_state_follows_the_documented_recursion(keyed, leak):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
    keys = [f"k{i}" for i in rng.integers(0, 5, 400)] if keyed else [None] * 400
    esn = EchoState(3, keyed=keyed, units=20, leak=leak, seed=3)
    esn.learn_batch(*([keys] if keyed else []), X, rng.standard_normal(400))
    want, _ = _reference_states(esn, X, keys)
    for k, s in want.items():
        got = esn.state_of(k if keyed else None)
        np.testing.assert_allclose(got, s, rtol=1e-12, atol=1e-12)


@given(st.lists(st.floats(-1e30, 1e30), min_size=2, max_size=40), st.floats(0.05, 1.0), st.floats(0.1, 1.5))
def test_the_state_stays_within_one_for_any_finite_input(xs, leak, radius):
    esn = EchoState(1, units=8, leak=leak, spectral_radius=radius, input_scaling=3.0)
    X = np.array(xs)[:, None]
    try:
        esn.learn_batch(X, np.zeros(len(xs)))
    except Exception as exc:  # the readout may refuse a non-finite gain; the state must still be bounded
        assert "non-finite" in str(exc)
    states = esn.state_dict()["states"].numpy()
    assert np.isfinite(states).all() and np.abs(states).max() <= 1.0


def test_the_readout_learns_a_linear_function_of_the_state():
    """A target that is a linear function of the reservoir state (the reference's): the RLS readout's
    error falls from the scale of the target to under 1% of it (the state's weak directions, which the
    inputs barely excite, are what is left)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 2))
    esn = EchoState(2, units=16, seed=0)
    _, S = _reference_states(esn, X, [None] * 600)
    y = S @ rng.standard_normal(16) + 0.5
    p = esn.learn_batch(X, y)
    scale = np.abs(y).max()
    assert np.abs(p[2:12] - y[2:12]).mean() > 0.1 * scale  # it had to learn it
    assert np.abs(p[-100:] - y[-100:]).max() < 0.01 * scale


def test_one_key_is_the_unkeyed_network_and_calls_of_any_size_equal_one_call():
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((300, 2)), rng.standard_normal(300)
    one = EchoState(2, units=12).learn_batch(X, y)
    keyed = EchoState(2, units=12, keyed=True).learn_batch(["a"] * 300, X, y)
    np.testing.assert_array_equal(one, keyed)
    esn = EchoState(2, units=12)
    parts = [esn.learn_batch(X[a:b], y[a:b]) for a, b in ((0, 1), (1, 77), (77, 78), (78, 300))]
    np.testing.assert_array_equal(np.concatenate(parts), one)
    esn = EchoState(2, units=12)
    np.testing.assert_array_equal([esn.learn_one(x, t) for x, t in zip(X, y)], one)


def test_a_resumed_run_equals_an_uninterrupted_one_and_a_foreign_state_is_refused(tmp_path):
    from psann_stream.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((500, 2)), rng.standard_normal((500, 2))
    keys = [int(k) for k in rng.integers(0, 9, 500)]
    whole = EchoState(2, n_outputs=2, keyed=True, units=10).learn_batch(keys, X, y)
    first = EchoState(2, n_outputs=2, keyed=True, units=10)
    head = first.learn_batch(keys[:250], X[:250], y[:250])
    path = save_checkpoint(tmp_path, {"learner": first.state_dict()}, step=250)
    resumed = EchoState(2, n_outputs=2, keyed=True, units=10)
    resumed.load_state_dict(load_checkpoint(path)["learner"])
    np.testing.assert_array_equal(np.concatenate([head, resumed.learn_batch(keys[250:], X[250:], y[250:])]), whole)
    sd = first.state_dict()
    for other, match in ((EchoState(2, n_outputs=2, keyed=True, units=10, seed=1), "another reservoir"),
                         (EchoState(2, n_outputs=2, keyed=True, units=11), "another reservoir"),
                         (EchoState(2, n_outputs=1, keyed=True, units=10), "same n_outputs"),
                         (EchoState(2, n_outputs=2, units=10), "same keyed")):
        with pytest.raises(CheckpointError, match=match):
            other.load_state_dict(sd)
    with pytest.raises(CheckpointError, match="unknown echo-state state format"):
        resumed.load_state_dict({"format": "psann_stream.learner/1"})


def test_predictions_without_advance_change_nothing_and_reset_clears_one_key():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((200, 2)), rng.standard_normal(200)
    esn = EchoState(2, units=8, keyed=True)
    esn.learn_batch(["a", "b"] * 100, X, y)
    before = esn.state_dict()
    p = esn.predict_one("a", X[0])
    q = esn.predict_batch(["a", "c", "b"], X[:3], advance=False)
    after = esn.state_dict()
    assert after["keys"] == before["keys"] == ["a", "b"]
    np.testing.assert_array_equal(after["states"].numpy(), before["states"].numpy())
    assert p == q[0] == esn.learn_batch(["a"], X[:1], y[:1])[0]
    esn.reset(["b"])
    assert not esn.state_of("b").any() and esn.state_of("a").any()
    with pytest.raises(ConfigError, match="unknown key 'z'"):
        esn.reset(["z"])


@pytest.mark.parametrize("kwargs, match", [
    ({"units": 0}, "EchoState.units = 0 must be an integer >= 1"),
    ({"leak": 0.0}, r"EchoState.leak = 0.0 is out of range: need 0.0 < leak <= 1.0"),
    ({"spectral_radius": 2.0}, "EchoState.spectral_radius = 2.0 is out of range"),
    ({"input_scaling": -1.0}, "EchoState.input_scaling = -1.0 is out of range"),
    ({"forgetting": 1.5}, "EchoState.rls_forgetting = 1.5 is out of range"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EchoState(2, **kwargs)


def test_calls_of_the_wrong_form_are_refused():
    with pytest.raises(ConfigError, match=r"takes \(keys, X, Y\) for this keyed EchoState; got 2"):
        EchoState(2, keyed=True).learn_batch(np.zeros((1, 2)), np.zeros(1))
    with pytest.raises(ConfigError, match=r"X must have shape \[N, 2\], got \(1, 3\)"):
        EchoState(2).learn_batch(np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(ConfigError, match="keys are for a keyed EchoState; this one has one state"):
        EchoState(2).reset(["a"])


@pytest.mark.parametrize("make", [lambda: EchoState(2, units=6), lambda: __import__("psann_stream.experts").experts.LinearRLS(2)])
def test_a_non_finite_input_stops_the_expert_at_that_event_with_nothing_of_it_learned(make):
    from psann_stream.errors import NonFiniteStateError

    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((50, 2)), rng.standard_normal(50)
    X[30, 1] = np.nan
    expert, twin = make(), make()
    with pytest.raises(NonFiniteStateError, match="event 30 of this batch: the prediction became non-finite; the events "
                                                  "before it were learned"):
        expert.learn_batch(X, y)
    twin.learn_batch(X[:30], y[:30])
    for k, v in twin.state_dict().items():
        if hasattr(v, "numpy"):
            np.testing.assert_array_equal(expert.state_dict()[k].numpy(), v.numpy())
    assert expert.x_stats.count == twin.x_stats.count == 30
