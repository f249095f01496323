"""Delayed labels: events predicted now and learned from what they saw when their labels arrive;
expiry, dead letters, checkpoints and the scenario harness."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from psann_stream import CheckpointError, ConfigError, KeyedLearner, Learner, NonFiniteInputError, StateConfig, StatefulNet
from psann_stream.delayed import NOT_WAITING, DelayedLabels
from psann_stream.drift import DriftPolicy
from psann_stream.scenarios.delayed import arrival_schedule, compare, delayed_predictions

CONFIGS = {
    "truncated": ({}, {}),
    "traced pairs": ({"oscillatory": True, "learnable_rate": True}, {"state_grad": "traced"}),
    "traced pairs, RLS": ({"oscillatory": True}, {"state_grad": "traced", "readout": "rls"}),
}


def _learner(cfg: str, seed: int = 0, **kw) -> Learner:
    state, learner = CONFIGS[cfg]
    return Learner(StatefulNet(3, hidden=(6, 4), state=StateConfig(**state), seed=seed), **learner, **kw)


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, np.sin(np.roll(X[:, 0], 2)) + 0.5 * X[:, 1]


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_a_label_right_after_its_prediction_is_learned_as_learn_batch_would(cfg):
    """Zero delay: predict the event, then learn its label from the snapshot, event by event; the
    predictions and everything the learner holds equal one learn_batch over the stream, bit for bit
    (the snapshot is the state, input and traces the event saw)."""
    X, Y = _stream(300)
    inline = _learner(cfg)
    want = inline.learn_batch(X, Y)
    dl = DelayedLabels(_learner(cfg), horizon=5)
    got = [dl.predict([0], X[:1])[0]]
    for n in range(1, 300):
        dl.label([n - 1], Y[n - 1:n])  # the label of each event arrives before the next event
        got.append(dl.predict([n], X[n:n + 1])[0])
    dl.label([299], Y[299:])
    np.testing.assert_array_equal(np.array(got), want)
    a, b = inline.state_dict(), dl.learner.state_dict()
    for k in ("model", "optimizer"):
        for name, v in a[k].items():
            if hasattr(v, "shape"):
                np.testing.assert_array_equal(np.asarray(b[k][name]), np.asarray(v), err_msg=f"{k}.{name}")
    assert dl.n_learned == 300 and dl.n_pending == 0


@pytest.mark.parametrize("cfg", ["truncated", "traced pairs"])
def test_a_late_label_is_learned_from_the_state_its_event_saw(cfg):
    """Five events later: the label's step equals a copy of the learner put back in the state (and
    traces) the event saw, learning the event then; the held state does not move."""
    X, Y = _stream(60, seed=1)
    lrn = _learner(cfg, normalize_x=False)
    lrn.learn_batch(X[:40], Y[:40])
    _, snaps = lrn.predict_pending(X[40:46])
    ref = copy.deepcopy(lrn)
    held, kept = lrn._path.state.copy(), snaps.copy()
    lrn.learn_pending(snaps[:1], Y[40:41])
    np.testing.assert_array_equal(snaps, kept)  # the caller's snapshots are read, never written
    U = lrn._path.core.spec.layout.n_units
    ref._path.state[:] = snaps[0, :U]
    ref._path.traces[0][:] = snaps[0, U + 3:]
    ref.learn_one(X[40], float(Y[40]))
    np.testing.assert_array_equal(lrn._path.theta, ref._path.theta)
    np.testing.assert_array_equal(lrn._path.state, held)


def test_predictions_expire_after_the_horizon_and_late_unknown_and_bad_labels_are_dead_lettered():
    dl = DelayedLabels(_learner("truncated"), horizon=3)
    X, _ = _stream(10)
    dl.predict(["a", "b"], X[:2])
    dl.predict(["c", "d", "e"], X[2:5])  # "a" has 4 events after it: expired; "b" has 3: waits
    assert dl.n_expired == 1 and dl.n_pending == 4
    letters = dl.take_dead_letters()
    assert [d.id for d in letters] == ["a"] and "horizon (3 events)" in letters[0].reason
    learned = dl.label(["a", "zz", "b", "c", "b"], [1.0, 1.0, 1.0, np.nan, 2.0])
    assert learned.tolist() == [False, False, True, False, False]
    reasons = {d.id: d.reason for d in dl.take_dead_letters()}
    assert "after the horizon" in reasons["a"]
    assert reasons["zz"] == NOT_WAITING and "not finite" in reasons["c"]
    assert dl.n_learned == 1 and dl.n_pending == 3  # "c" keeps waiting for a valid label
    assert dl.label(["c"], [0.5]).tolist() == [True]
    assert dl.take_dead_letters() == []


def test_an_id_already_waiting_is_refused_before_anything_is_predicted():
    dl = DelayedLabels(_learner("truncated"), horizon=10)
    X, _ = _stream(4)
    dl.predict([1], X[:1])
    before = dl.learner._path.state.copy()
    for ids in ([1, 2], [3, 3]):
        with pytest.raises(ConfigError, match="already waiting"):
            dl.predict(ids, X[1:3])
    np.testing.assert_array_equal(dl.learner._path.state, before)
    assert dl.n_pending == 1


@pytest.mark.parametrize("cfg", ["truncated", "traced pairs, RLS"])
def test_a_resumed_run_with_pending_labels_equals_an_uninterrupted_one(cfg):
    X, Y = _stream(400, seed=2)

    def run(stop_at: int | None) -> tuple[np.ndarray, dict]:
        due = arrival_schedule(400, max_delay=30, missing=0.1, seed=2)
        dl = DelayedLabels(_learner(cfg), horizon=30)
        preds = np.empty(400)
        for t in range(400):
            if t == stop_at:  # crash and resume from the state at this point
                sd = copy.deepcopy(dl.state_dict())
                dl = DelayedLabels(_learner(cfg, seed=9), horizon=1)
                dl.load_state_dict(sd)
                assert dl.n_pending > 0
            preds[t] = dl.predict([t], X[t:t + 1])[0]
            if t in due:
                dl.label(due[t], Y[due[t]])
        return preds, dl.state_dict()

    want, sd_want = run(None)
    got, sd_got = run(217)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(sd_got["pending_snapshots"], sd_want["pending_snapshots"])
    assert sd_got["pending_ids"] == sd_want["pending_ids"] and sd_got["counters"] == sd_want["counters"]


def test_foreign_and_corrupt_checkpoints_are_refused_and_nothing_is_loaded():
    dl = DelayedLabels(_learner("truncated"), horizon=10)
    X, _ = _stream(3)
    dl.predict([0, 1, 2], X)
    with pytest.raises(CheckpointError, match="not a delayed-labels checkpoint"):
        dl.load_state_dict(dl.learner.state_dict())
    sd = dl.state_dict()
    sd["pending_snapshots"] = sd["pending_snapshots"][:, :-1]
    with pytest.raises(CheckpointError, match="do not match"):
        dl.load_state_dict(sd)
    del sd["pending_keys"]
    with pytest.raises(CheckpointError, match="has no pending_keys"):
        dl.load_state_dict(sd)
    assert dl.n_pending == 3


def test_learners_that_cannot_take_delayed_labels_are_refused_by_name():
    net = StatefulNet(3, hidden=(4,), seed=0)
    with pytest.raises(ConfigError, match="drift"):
        DelayedLabels(Learner(net, drift=DriftPolicy()))
    with pytest.raises(ConfigError, match="torch reference"):
        DelayedLabels(Learner(net, backend="torch"))
    with pytest.raises(ConfigError, match="horizon"):
        DelayedLabels(Learner(net), horizon=0)
    with pytest.raises(ConfigError, match="keys="):
        DelayedLabels(Learner(net)).predict([0], np.zeros((1, 3)), keys=["a"])
    with pytest.raises(NonFiniteInputError):
        Learner(net).predict_pending(np.array([[np.nan, 0.0, 0.0]]))
    with pytest.raises(ConfigError, match="snapshots have shape"):
        Learner(net).learn_pending(np.zeros((1, 2)), [0.0])


@pytest.mark.parametrize("per_key", [False, True], ids=["shared weights", "per-key weights"])
def test_keyed_delayed_labels_learn_each_event_from_its_keys_state(per_key):
    """Two keys interleaved: zero-delay labels equal learn_batch bit for bit (with per-key weights,
    each label is learned by its own key's weights)."""
    X, Y = _stream(200, seed=3)
    keys = np.where(np.arange(200) % 3 == 0, "a", "b")
    net = StatefulNet(3, hidden=(6, 4), state=StateConfig(oscillatory=True), seed=0)
    inline = KeyedLearner(copy.deepcopy(net), state_grad="traced", readout="rls", per_key_weights=per_key)
    want = inline.learn_batch(keys, X, Y)
    dl = DelayedLabels(KeyedLearner(copy.deepcopy(net), state_grad="traced", readout="rls", per_key_weights=per_key),
                       horizon=3)
    got = []
    for n in range(200):
        got.append(dl.predict([n], X[n:n + 1], keys=keys[n:n + 1])[0])
        dl.label([n], Y[n:n + 1])
    np.testing.assert_array_equal(np.array(got), want)


def test_per_key_weights_learn_late_labels_of_several_keys_in_one_call_by_each_keys_weights():
    """Labels of two keys arriving together, late: each key's weights take its own labels, in their
    order, exactly as that key learning them alone would."""
    X, Y = _stream(120, seed=5)
    keys = np.where(np.arange(120) % 2 == 0, "a", "b")
    net = StatefulNet(3, hidden=(6,), seed=0)
    dl = DelayedLabels(KeyedLearner(copy.deepcopy(net), per_key_weights=True), horizon=200)
    alone = {k: DelayedLabels(KeyedLearner(copy.deepcopy(net), per_key_weights=True), horizon=200) for k in "ab"}
    for n in range(100):
        dl.predict([n], X[n:n + 1], keys=keys[n:n + 1])
        alone[keys[n]].predict([n], X[n:n + 1], keys=keys[n:n + 1])
    late = list(range(0, 100, 3))  # both keys' labels, interleaved, in one call
    dl.label(late, Y[late])
    for k in "ab":
        mine = [i for i in late if keys[i] == k]
        alone[k].label(mine, Y[mine])
        r, ra = dl.learner._key_row[k], alone[k].learner._key_row[k]
        np.testing.assert_array_equal(dl.learner._core.rows["theta"][r], alone[k].learner._core.rows["theta"][ra])
    with pytest.raises(ConfigError, match="give each event's key"):
        dl.learner.learn_pending(np.zeros((1, dl.learner.snapshot_width)), [0.0])


def test_the_scenario_harness_accounts_for_every_label():
    X, Y = _stream(600, seed=4)
    due = arrival_schedule(600, max_delay=50, missing=0.05, seed=4)
    arriving = sum(len(v) for t, v in due.items() if t < 600)
    preds, dl = delayed_predictions(_learner("truncated"), X, Y, max_delay=50, missing=0.05, seed=4)
    assert np.isfinite(preds).all()
    assert dl.n_learned == arriving
    assert dl.n_learned + dl.n_expired + dl.n_pending == 600
    r = compare(X, Y, lambda: _learner("truncated"), max_delay=1, missing=0.0)
    assert r["learned"] == 599 and r["expired"] == 0 and r["pending"] == 1


def test_labels_whose_learning_fails_are_dead_lettered_and_the_error_reaches_the_caller():
    """Adam at an absurd rate makes an update non-finite: the error names the event, and the call's
    labels are dead-lettered as 'failed' instead of vanishing from the waiting set."""
    from psann_stream import NonFiniteStateError

    X, Y = _stream(50, seed=6)
    dl = DelayedLabels(Learner(StatefulNet(3, hidden=(4,), seed=0), optimizer="adam",
                               optimizer_kwargs={"lr": 1e300}, monitor=False), horizon=100)
    dl.predict(list(range(50)), X)
    with pytest.raises(NonFiniteStateError, match="non-finite"):
        for n in range(50):
            dl.label([n], Y[n:n + 1] * 1e200)
    letters = dl.take_dead_letters()
    assert letters and all(d.kind == "failed" and "non-finite" in d.reason for d in letters)
    assert dl.n_pending + dl.n_learned + len(letters) == 50
