"""The river adapter: river's own estimator checks, one pytest test each, plus its contract."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pyarrow as pa
import pytest
from river import checks, evaluate, metrics, preprocessing
from river.datasets import synth

from psann_stream import ConfigError, NonFiniteInputError
from psann_stream.adapters.river import StatefulMultiTargetRegressor, StatefulRegressor


def _check_cases():
    for cls in (StatefulRegressor, StatefulMultiTargetRegressor):
        for i, params in enumerate(cls._unit_test_params()):
            for check in checks.yield_checks(cls(**params)):
                yield pytest.param(cls, params, check, id=f"{cls.__name__}-params{i}-{check.__name__}")


@pytest.mark.parametrize(("cls", "params", "check"), list(_check_cases()))
def test_river_check(cls, params, check):
    check(cls(**params))


def test_a_first_event_without_features_is_learned_and_features_join_later():
    """An event whose every feature is missing (an empty dict) is learned from the biases, also as
    the very first event (the model starts on one always-missing input); features that come later
    widen it as usual."""
    for model, y in ((StatefulRegressor(hidden=(4,)), 1.0), (StatefulMultiTargetRegressor(hidden=(4,)), {"a": 1.0})):
        model.learn_one({}, y)
        model.learn_one({"u": 2.0}, y)
        model.learn_one({}, y)
        assert model._learner.n_learned == 3


def test_multi_target_regressor_learns_every_target_and_refuses_other_names():
    rng = np.random.default_rng(0)
    model = StatefulMultiTargetRegressor(hidden=(16,), seed=0)
    errors = []
    for _ in range(3000):
        x = {"a": float(rng.standard_normal()), "b": float(rng.standard_normal())}
        y = {"sum": x["a"] + x["b"], "prod": x["a"] * x["b"]}
        p = model.predict_one(x)
        errors.append([abs(p.get(k, 0.0) - v) for k, v in sorted(y.items())])
        model.learn_one(x, y)
    errors = np.array(errors)
    assert (errors[-500:].mean(axis=0) < 0.5 * errors[:500].mean(axis=0)).all()
    assert sorted(model.predict_one({"a": 1.0})) == ["prod", "sum"]
    before = model._learner.n_learned
    with pytest.raises(ConfigError, match=r"the targets are \['prod', 'sum'\] \(from the first y\); this y has \['sum'\]"):
        model.learn_one({"a": 1.0}, {"sum": 1.0})
    with pytest.raises(ConfigError, match="a target of .* is not a number"):
        model.learn_one({"a": 1.0}, {"sum": 1.0, "prod": "x"})
    assert model._learner.n_learned == before


def _stream(n=200, seed=3):
    return list(synth.Friedman(seed=seed).take(n))


def test_predict_one_is_pure_and_learn_one_advances_the_state():
    model = StatefulRegressor(hidden=(8,), seed=0)
    data = _stream(50)
    for x, y in data[:40]:
        model.learn_one(x, y)
    x = data[40][0]
    p = model.predict_one(x)
    assert all(model.predict_one(x) == p for _ in range(3))
    state = model._learner._path.state.copy()
    model.learn_one(x, data[40][1])
    assert not np.array_equal(state, model._learner._path.state)


def test_emerging_feature_keeps_everything_learned():
    """A new feature enters with zero weight: predictions on the old features are unchanged."""
    a, b = StatefulRegressor(hidden=(8,), seed=0), StatefulRegressor(hidden=(8,), seed=0)
    data = _stream(60)
    for x, y in data[:50]:
        a.learn_one(x, y)
        b.learn_one(x, y)
    b._admit(["zzz_new"])
    for x, _ in data[50:]:
        assert math.isclose(a.predict_one(x), b.predict_one(x), rel_tol=1e-12, abs_tol=1e-12)
    feature_first = dict(data[50][0])
    b._admit(["!first"])  # sorts (by str) before every existing name: the columns are permuted
    assert b._features[0] == "!first"
    assert math.isclose(a.predict_one(feature_first), b.predict_one(feature_first), rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("state", [None, {"mode": "trace", "oscillatory": True}])
def test_an_emerging_feature_moves_the_traces_with_the_weights(state):
    """Traced learning: when a new feature sorts before the others, each feature's weight column, its
    optimiser moments and its eligibility traces move together (a later event then learns exactly as
    if the feature order had always been the new one)."""
    a, b = (StatefulRegressor(hidden=(6,), seed=0, state=state, state_grad="traced", optimizer="adam") for _ in range(2))
    data = _stream(60)
    for x, y in data[:40]:
        a.learn_one(x, y)
        b.learn_one(x, y)
    b._admit(["!first"])  # sorts before every existing name: the first layer's columns are permuted
    for x, y in data[40:]:
        assert math.isclose(a.predict_one(x), b.predict_one(x), rel_tol=1e-9, abs_tol=1e-12)
        a.learn_one(x, y)
        b.learn_one(x, y)
    assert float(b._learner.state_dict()["traces"].abs().max()) > 0


def test_x_is_not_mutated_and_bad_values_are_refused():
    model = StatefulRegressor(hidden=(4,))
    x = {"a": 1.0, "b": 2.0}
    before = copy.deepcopy(x)
    model.learn_one(x, 1.0)
    model.predict_one(x)
    assert x == before
    with pytest.raises(NonFiniteInputError, match="feature 'a' is nan"):
        model.learn_one({"a": float("nan"), "b": 1.0}, 1.0)
    with pytest.raises(ConfigError, match="feature 'a' = 'x' is not a number"):
        model.learn_one({"a": "x"}, 1.0)


def test_pickle_round_trip_and_clone():
    model = StatefulRegressor(hidden=(8,), optimizer="adam", seed=0)
    data = _stream(80)
    for x, y in data[:60]:
        model.learn_one(x, y)
    twin = pickle.loads(pickle.dumps(model))
    for x, y in data[60:]:
        assert model.predict_one(x) == twin.predict_one(x)
        model.learn_one(x, y)
        twin.learn_one(x, y)
    fresh = model.clone()
    assert fresh._learner is None and fresh.predict_one(data[0][0]) == 0.0


def test_learn_many_and_predict_many_on_pandas_and_arrow():
    import pandas as pd

    data = _stream(80)
    frame = pd.DataFrame([x for x, _ in data])
    target = pd.Series([y for _, y in data])
    one, many, arrow = (StatefulRegressor(hidden=(8,), seed=0) for _ in range(3))
    for x, y in data[:60]:
        one.learn_one(x, y)
    many.learn_many(frame.iloc[:60], target.iloc[:60])
    arrow.learn_many(pa.Table.from_pandas(frame.iloc[:60], preserve_index=False), target.iloc[:60].to_numpy())
    want = [one.predict_one(x) for x, _ in data[60:]]
    got_pd = many.predict_many(frame.iloc[60:]).tolist()
    got_pa = arrow.predict_many(pa.RecordBatch.from_pandas(frame.iloc[60:], preserve_index=False)).tolist()
    np.testing.assert_allclose(got_pd, want, rtol=1e-12)
    np.testing.assert_allclose(got_pa, want, rtol=1e-12)
    with pytest.raises(ConfigError, match="expected a pandas DataFrame or a pyarrow"):
        many.predict_many([[1.0, 2.0]])


def test_in_a_river_pipeline_with_progressive_validation():
    """The README's pipeline: StandardScaler | StatefulRegressor inside progressive_val_score."""
    model = preprocessing.StandardScaler() | StatefulRegressor(hidden=(16, 16), seed=1)
    mae = evaluate.progressive_val_score(synth.Friedman(seed=1).take(2000), model, metrics.MAE())
    baseline = evaluate.progressive_val_score(synth.Friedman(seed=1).take(2000), preprocessing.StandardScaler() | _mean(), metrics.MAE())
    assert mae.get() < 0.6 * baseline.get()


def _mean():
    from river import dummy

    return dummy.StatisticRegressor(__import__("river").stats.Mean())


def test_beats_river_linear_regression_on_friedman_drift():
    """The documented comparison (scenarios/bench_river.py), shortened: prequential MAE on the
    abrupt-drift Friedman stream below river's StandardScaler | LinearRegression."""
    from river import linear_model

    def data():
        return synth.FriedmanDrift(drift_type="gra", position=(2000, 4000), seed=42).take(6000)

    ours = evaluate.progressive_val_score(data(), preprocessing.StandardScaler() | StatefulRegressor(), metrics.MAE())
    lr = evaluate.progressive_val_score(data(), preprocessing.StandardScaler() | linear_model.LinearRegression(), metrics.MAE())
    assert ours.get() < 0.9 * lr.get()


def test_the_input_scaler_is_rivers_standard_scaler_arithmetic():
    """The adapter scales each feature as river's StandardScaler does (same values, bit for bit), so
    a model learns what a river pipeline with that scaler in front would give it: checked by feeding
    river's scaled dict to a Learner directly. Features appear late and go missing."""
    from river import preprocessing

    from psann_stream import Learner, StatefulNet

    rng = np.random.default_rng(4)
    model = StatefulRegressor(hidden=(6,), optimizer="obgd", lr=None, seed=5)
    scaler = preprocessing.StandardScaler()
    ref = None
    for n in range(300):
        x = {"b": float(rng.normal(3, 2)), "a": float(rng.normal(-1, 0.1))}
        if n >= 50:
            x["c"] = float(rng.integers(0, 3))  # appears late, often constant for a while
        if n % 7 == 3:
            del x["a"]  # missing now and then
        y = x["b"] - x.get("a", 0.0)
        if n < 50:  # before "c" exists, the reference is a 2-input learner in sorted order
            names = ["a", "b"]
        else:
            names = ["a", "b", "c"]
        if ref is None:
            ref = Learner(StatefulNet(2, hidden=(6,), seed=5), normalize_x=False)
        elif ref.in_features < len(names):
            ref.grow_inputs(len(names))
        scaled = scaler.transform_one(dict(x))
        vec = np.array([scaled.get(k, 0.0) for k in names])
        assert model.predict_one(x) == (ref.predict_one(vec) if n else 0.0)
        model.learn_one(x, y)
        ref.learn_one(vec, y)
        scaler.learn_one(x)
