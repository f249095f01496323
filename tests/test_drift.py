"""Drift detection: the compiled Page-Hinkley test equals river's, resets land at the event of
detection (independent of batch size), the engine reports them through on_drift/on_reset, and
checkpoints carry the detectors (resume = uninterrupted run)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from river.drift import PageHinkley

from psann_stream import ColumnMap, ConfigError, KeyedLearner, Learner, StatefulNet
from psann_stream._fastpath import page_hinkley
from psann_stream.drift import DriftPolicy, fresh_detector
from psann_stream.engine import CheckpointPolicy, Engine
from psann_stream.sinks import read_parts
from psann_stream.io import TableSource


@given(
    st.integers(0, 10_000), st.integers(1, 60), st.floats(0.0, 0.1), st.floats(0.5, 30.0),
    st.sampled_from([1.0, 0.9999, 0.99]), st.sampled_from(["up", "down", "both"]),
    st.floats(-3.0, 3.0), st.integers(20, 400),
)
def test_compiled_page_hinkley_detects_exactly_where_rivers_does(seed, min_n, delta, threshold, alpha, mode, jump, at):
    rng = np.random.default_rng(seed)
    xs = np.abs(rng.standard_normal(600)) + np.where(np.arange(600) >= at, jump, 0.0)
    ref = PageHinkley(min_instances=min_n, delta=delta, threshold=threshold, alpha=alpha, mode=mode)
    want = []
    for i, x in enumerate(xs):
        ref.update(float(x))
        if ref.drift_detected:
            want.append(i)
    ph, cfg = fresh_detector(), DriftPolicy(min_n, delta, threshold, alpha, mode).kernel_config
    got = [i for i, x in enumerate(xs) if page_hinkley(ph, float(x), cfg)]
    assert got == want


def _switching(n: int = 4000, switch: int = 1500, seed: int = 0):
    """Two keys, one-lag sine prediction: key 0's frequency and amplitude jump at ``switch``; key 1 stays."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    keys, xs, ys = [], [], []
    for k in (0, 1):
        w = np.where((t >= switch) & (k == 0), 0.31, 0.05)
        amp = np.where((t >= switch) & (k == 0), 3.0, 1.0)
        s = amp * np.sin(np.cumsum(w)) + 0.02 * rng.standard_normal(n)
        keys.append(np.full(n - 1, k))
        xs.append(s[:-1, None])
        ys.append(s[1:])
    order = np.argsort(np.concatenate([t[:-1], t[:-1]]), kind="stable")  # interleave the keys in time
    return np.concatenate(keys)[order], np.concatenate(xs)[order], np.concatenate(ys)[order]


def _net() -> StatefulNet:
    return StatefulNet(1, hidden=(12, 12), seed=2)


POLICY = DriftPolicy(threshold=20.0)


def test_a_keyed_drift_resets_that_key_at_the_event_of_detection():
    k, X, Y = _switching()
    lrn = KeyedLearner(_net(), per_key_weights=True, drift=POLICY)
    preds = lrn.learn_batch(k, X, Y)
    hits = np.flatnonzero(lrn.last_drifted)
    assert len(hits) and set(k[hits].tolist()) == {0}  # the switching key, not the steady one
    assert (hits // 2 >= 1500).all()  # only after the switch (two events per time step)
    # the same learning without a detector, resetting the key by hand right after each detection
    ref = KeyedLearner(_net(), per_key_weights=True)
    want, start = [], 0
    for h in [*hits, len(k) - 1]:
        want.append(ref.learn_batch(k[start:h + 1], X[start:h + 1], Y[start:h + 1]))
        ref.reset([int(k[h])])
        start = h + 1
    assert np.array_equal(preds, np.concatenate(want))


@pytest.mark.parametrize("per_key", [True, False])
def test_where_resets_land_does_not_depend_on_batch_size(per_key):
    k, X, Y = _switching(2500, 900)
    policy = DriftPolicy(threshold=20.0, reset_optimizer=True)
    whole = KeyedLearner(_net(), per_key_weights=per_key, drift=policy)
    want = whole.learn_batch(k, X, Y)
    want_hits = whole.last_drifted.copy()
    parts = KeyedLearner(_net(), per_key_weights=per_key, drift=policy)
    got, hits = [], []
    for s in range(0, len(k), 37):
        got.append(parts.learn_batch(k[s:s + 37], X[s:s + 37], Y[s:s + 37]))
        hits.append(parts.last_drifted)
    assert np.array_equal(np.concatenate(got), want) and np.array_equal(np.concatenate(hits), want_hits)
    assert want_hits.any()


def test_a_single_stream_learner_resets_at_detection_and_refuses_what_it_cannot_test():
    k, X, Y = _switching()
    X, Y = X[k == 0], Y[k == 0]
    lrn = Learner(_net(), drift=DriftPolicy(threshold=20.0))
    preds = lrn.learn_batch(X, Y)
    hits = np.flatnonzero(lrn.last_drifted)
    assert len(hits) and (hits >= 1500).all()
    ref = Learner(_net())
    want, start = [], 0
    for h in [*hits, len(X) - 1]:
        want.append(ref.learn_batch(X[start:h + 1], Y[start:h + 1]))
        ref.reset(state=True)
        start = h + 1
    assert np.array_equal(preds, np.concatenate(want))
    with pytest.raises(ConfigError, match="mode='exact'"):
        lrn.learn_batch(X[:10], Y[:10], mode="batched")
    with pytest.raises(ConfigError, match="compiled loop"):
        Learner(_net(), backend="torch", drift=POLICY)
    with pytest.raises(ConfigError, match="resets nothing"):
        DriftPolicy(reset_state=False)
    with pytest.raises(ConfigError, match="mode"):
        DriftPolicy(mode="sideways")


def _table() -> pa.Table:
    k, X, Y = _switching()
    return pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 1), "y": Y, "k": k})


def test_the_engine_reports_drifts_and_resumes_with_the_detectors(tmp_path):
    table = _table()
    cols = ColumnMap("x", target="y", key="k")
    drifts, resets = [], []
    whole = Engine(TableSource(table, 500), KeyedLearner(_net(), per_key_weights=True, drift=POLICY), cols,
                   output=tmp_path / "whole",
                   hooks={"on_drift": lambda key, pos, row: drifts.append((key, pos.batch * 500 + pos.row + row)),
                          "on_reset": lambda keys, what: resets.append((keys, what))})
    stats = whole.run()
    out = read_parts(tmp_path / "whole")
    assert drifts and stats.drifts == len(drifts)
    assert all(key == 0 and table["k"][i].as_py() == 0 for key, i in drifts)
    assert all(keys == [0] and what == ("state",) for keys, what in resets)
    # stopped at odd places and resumed: the same output (the detectors' sums are in the checkpoint)
    ckpt = CheckpointPolicy(tmp_path / "ckpt", every_events=10**6)
    for n, resume in ((1777, False), (2903, True), (None, True)):
        Engine(TableSource(table, 500), KeyedLearner(_net(), per_key_weights=True, drift=POLICY), cols,
               output=tmp_path / "parts", checkpoint=ckpt).run(n, resume=resume)
    assert read_parts(tmp_path / "parts").equals(out)
