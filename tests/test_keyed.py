"""KeyedLearner: per-key independence, shared-weight order, eviction to the cold store and back,
checkpoints (C8), resets, bad events and configuration errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import CheckpointError, ConfigError, KeyedLearner, Learner, NonFiniteInputError, StateConfig, StatefulNet


def _net(seed: int = 0) -> StatefulNet:
    return StatefulNet(3, hidden=(6, 5), seed=seed)


def _events(seed: int, n: int, keys: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n)
    X = rng.standard_normal((n, 3)) + k[:, None] * 0.5
    return k, X, np.sin(X.sum(axis=1)) * (1 + k)


@given(st.integers(0, 1000), st.integers(1, 6), st.sampled_from(["obgd", "intentional", "adam"]))
def test_per_key_weights_equal_one_learner_per_key(seed, n_keys, opt):
    k, X, Y = _events(seed, 120, n_keys)
    kl = KeyedLearner(_net(), per_key_weights=True, optimizer=opt)
    got = np.concatenate([kl.learn_batch(k[:50], X[:50], Y[:50]), kl.learn_batch(k[50:], X[50:], Y[50:])])
    for key in np.unique(k):
        ref = Learner(_net(), optimizer=opt, backend="numba")
        m = k == key
        assert np.array_equal(got[m], ref.learn_batch(X[m], Y[m]))


@given(st.integers(0, 1000), st.integers(1, 5))
def test_shared_weights_learn_in_global_order_with_a_state_per_key(seed, n_keys):
    k, X, Y = _events(seed, 80, n_keys)
    kl = KeyedLearner(_net(), per_key_weights=False)
    got = kl.learn_batch(k, X, Y)
    ref = Learner(_net(), backend="numba")
    states = {}
    want = []
    for key, x, y in zip(k, X, Y):
        ref._path.state[:] = states.get(key, np.full_like(ref._path.state, ref._model.state_config.init))
        want.append(ref.learn_one(x, y))
        states[key] = ref._path.state.copy()
    assert np.array_equal(got, np.array(want))


@pytest.mark.parametrize("per_key", [True, False])
def test_checkpoint_round_trip_gives_bit_identical_future_predictions(per_key):
    k, X, Y = _events(1, 400, 20)
    a = KeyedLearner(_net(), per_key_weights=per_key, max_keys=8)
    a.learn_batch(k[:200], X[:200], Y[:200])
    assert len(a.keys) == 20 and len(a.hot_keys) <= 8 + 20  # cold keys kept
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = KeyedLearner(_net(), per_key_weights=per_key, max_keys=8)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert np.array_equal(a.learn_batch(k[200:], X[200:], Y[200:]), b.learn_batch(k[200:], X[200:], Y[200:]))
    assert sorted(a.keys) == sorted(b.keys)


@given(st.integers(0, 1000), st.integers(1, 4), st.sampled_from([True, False]))
def test_evicted_keys_come_back_exactly_as_they_left(seed, max_keys, per_key):
    """LRU eviction to the cold store changes no prediction."""
    k, X, Y = _events(seed, 150, 8)
    free = KeyedLearner(_net(), per_key_weights=per_key)
    tight = KeyedLearner(_net(), per_key_weights=per_key, max_keys=max_keys)
    a, b = [], []
    for i in range(0, 150, 10):
        a.append(free.learn_batch(k[i : i + 10], X[i : i + 10], Y[i : i + 10]))
        b.append(tight.learn_batch(k[i : i + 10], X[i : i + 10], Y[i : i + 10]))
        assert len(tight.hot_keys) <= max(max_keys, len(np.unique(k[i : i + 10])))
    assert np.array_equal(np.concatenate(a), np.concatenate(b))
    for key in free.keys:
        assert np.array_equal(free.state_of(key), tight.state_of(key))


def test_ttl_moves_idle_keys_to_the_cold_store():
    kl = KeyedLearner(_net(), ttl=5)
    kl.learn_batch(["a"], np.zeros((1, 3)), np.zeros(1))
    kl.learn_batch(["b"] * 10, np.zeros((10, 3)), np.zeros(10))
    assert kl.hot_keys == ["b"] and sorted(kl.keys) == ["a", "b"]


def test_reset_of_some_keys_hot_or_cold():
    cfg = StateConfig(init=0.25)
    kl = KeyedLearner(StatefulNet(3, hidden=(4,), state=cfg, seed=0), max_keys=1)
    kl.learn_batch(["a"], np.ones((1, 3)), np.ones(1))
    kl.learn_batch(["b", "b"], np.ones((2, 3)), np.ones(2))
    assert "a" not in kl.hot_keys  # the keys of the batch being learned are never evicted by it
    kl.reset(["a", "b"])
    assert np.all(kl.state_of("a") == 0.25) and np.all(kl.state_of("b") == 0.25)
    with pytest.raises(ConfigError, match="unknown key 'zzz'"):
        kl.reset(["zzz"])


def test_bad_events_raise_naming_the_key_or_are_skipped_and_counted():
    X = np.ones((4, 3))
    X[2, 1] = np.nan
    kl = KeyedLearner(_net())
    with pytest.raises(NonFiniteInputError, match=r"event 2 of this batch \(key 'c'\)"):
        kl.learn_batch(["a", "b", "c", "d"], X, np.zeros(4))
    assert kl.keys == []
    skip = KeyedLearner(_net(), on_nonfinite="skip")
    p = skip.learn_batch(["a", "b", "c", "d"], X, np.zeros(4))
    assert np.isnan(p[2]) and np.isfinite(p[[0, 1, 3]]).all()
    assert skip.n_skipped == 1 and skip.n_learned == 3


def test_keyed_configuration_and_checkpoint_errors():
    with pytest.raises(ConfigError, match="bound='ball'"):
        KeyedLearner(StatefulNet(3, hidden=(4,), state=StateConfig(bound="ball")))
    with pytest.raises(ConfigError, match="max_keys = 0"):
        KeyedLearner(_net(), max_keys=0)
    kl = KeyedLearner(_net())
    with pytest.raises(ConfigError, match=r"3 key\(s\) for 2 event"):
        kl.learn_batch(["a", "b", "c"], np.zeros((2, 3)), np.zeros(2))
    sd = kl.state_dict()
    with pytest.raises(CheckpointError, match="per_key_weights=False"):
        KeyedLearner(_net(), per_key_weights=True).load_state_dict(sd)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        KeyedLearner(StatefulNet(3, hidden=(4,))).load_state_dict(sd)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["keys"] == b["keys"] and a["cold_keys"] == b["cold_keys"]
    for name in a["rows"]:
        assert torch.equal(a["rows"][name], b["rows"][name]), name
    assert torch.equal(a["n_learned_rows"], b["n_learned_rows"])
    for ra, rb in zip(a["cold"], b["cold"]):
        assert ra.keys() == rb.keys()
        for name in ra:
            assert (torch.equal(ra[name], rb[name]) if isinstance(ra[name], torch.Tensor) else ra[name] == rb[name]), name


@given(st.integers(0, 1000), st.integers(1, 4), st.integers(1, 12))
def test_split_by_key_then_merge_restores_the_state_and_parts_continue_exactly(seed, n_parts, n_keys):
    from psann_stream.sharding import merge_key_states, select_keys

    k, X, Y = _events(seed, 300, n_keys)
    whole = KeyedLearner(_net(), per_key_weights=True, max_keys=4)
    whole.learn_batch(k[:150], X[:150], Y[:150])
    sd = whole.state_dict()
    part_of = {key: int(key) % n_parts for key in whole.keys}
    parts = [select_keys(sd, lambda key, p=p: part_of[key] == p, totals=(p == 0)) for p in range(n_parts)]
    merged = merge_key_states(parts)
    _assert_same_state(merged, sd)
    assert merged["counters"]["n_learned"] == sd["counters"]["n_learned"] == 150
    # a learner per part continues its keys bit for bit as the whole learner does
    want = whole.learn_batch(k[150:], X[150:], Y[150:])
    for p, part in enumerate(parts):
        lrn = KeyedLearner(_net(), per_key_weights=True, max_keys=4)
        lrn.load_state_dict(part)
        m = np.array([part_of.get(key, int(key) % n_parts) == p for key in k[150:]])
        if m.any():
            assert np.array_equal(lrn.learn_batch(k[150:][m], X[150:][m], Y[150:][m]), want[m])


def test_merging_refuses_shared_weights_and_overlapping_parts():
    from psann_stream.sharding import merge_key_states, select_keys

    k, X, Y = _events(0, 50, 3)
    shared = KeyedLearner(_net(), per_key_weights=False)
    shared.learn_batch(k, X, Y)
    with pytest.raises(ConfigError, match="per_key_weights=True"):
        select_keys(shared.state_dict(), lambda key: True)
    own = KeyedLearner(_net(), per_key_weights=True)
    own.learn_batch(k, X, Y)
    with pytest.raises(CheckpointError, match="more than one part"):
        merge_key_states([own.state_dict(), own.state_dict()])


@pytest.mark.parametrize("setting, value, message", [
    ("check_every", 0, "check_every = 0 is out of range: need an integer >= 1"),
    ("forget", 1.5, "forget = 1.5 is out of range: need 0 < forget <= 1"),
    ("normalize_clip", -1.0, "normalize_clip = -1.0 is out of range"),
    ("on_nonfinite", "drop", "on_nonfinite = 'drop' is not one of 'raise', 'skip'"),
    ("drift", "page-hinkley", "drift must be a DriftPolicy or None, got str"),
])
def test_both_learners_refuse_a_bad_common_setting_in_the_same_words(setting, value, message):
    for owner in (Learner, KeyedLearner):
        with pytest.raises(ConfigError, match=f"^{owner.__name__}.{message}"):
            owner(_net(), **{setting: value})


def test_a_non_finite_event_names_its_key_and_column():
    kl = KeyedLearner(_net())
    X = np.zeros((3, _net().in_features))
    X[1, 2] = np.inf
    with pytest.raises(NonFiniteInputError, match=r"event 1 of this batch \(key 'b'\) \(learned events so far: 0\): "
                                                  r"x column 2 is inf; nothing in the batch was learned"):
        kl.learn_batch(["a", "b", "c"], X, np.zeros(3))
    assert kl.keys == []


def test_a_key_given_as_a_numpy_scalar_is_the_python_key_whether_alone_or_in_a_batch():
    """learn_one (one key) and learn_batch (several) store a key as its Python value: a numpy str or
    int names the same key as the plain value, and the key table checkpoints as plain values."""
    x = np.zeros(2)
    for one, plain in ((np.str_("a"), "a"), (np.int64(7), 7)):
        kl = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0))
        kl.learn_one(one, x, 1.0)
        kl.learn_batch([plain, plain], np.zeros((2, 2)), np.ones(2))
        kl.learn_batch(np.array([one, one]), np.zeros((2, 2)), np.ones(2))
        assert list(kl.keys) == [plain] and type(list(kl.keys)[0]) is type(plain)
        back = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0))
        back.load_state_dict(kl.state_dict())
        assert list(back.keys) == [plain]
