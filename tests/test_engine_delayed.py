"""The engine with delayed labels: prediction rows (target null) and label rows (features null)
in one stream, matched by id (and key); dead letters; checkpoints with waiting predictions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann_stream import ConfigError, KeyedLearner, Learner, StatefulNet
from psann_stream.delayed import DelayedLabels
from psann_stream.engine import CheckpointPolicy, Engine
from psann_stream.io import ColumnMap, TableSource
from psann_stream.scenarios.delayed import arrival_schedule
from psann_stream.sinks import read_parts

N, HORIZON = 240, 40


def _events(n: int = N, seed: int = 0, keyed: bool = False):
    """Event rows and label rows interleaved as they arrive: event t, then the labels due after it
    (1-30 events late, 10% never). Returns the table and, per row, what it is."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    Y = np.sin(X[:, 0]) + 0.5 * np.roll(X[:, 1], 1)
    keys = rng.choice(["a", "b"], size=n)
    due = arrival_schedule(n, max_delay=30, missing=0.1, seed=seed)
    rows = []  # (id, x or None, y or None, key)
    for t in range(n):
        rows.append((t, X[t], None, keys[t]))
        rows += [(i, None, Y[i], keys[i]) for i in due.get(t, [])]
    rows.append((10_000, None, 1.0, "a"))  # a label for an event that never was
    cols = {
        "x0": pa.array([None if x is None else x[0] for _, x, _, _ in rows], pa.float64()),
        "x1": pa.array([None if x is None else x[1] for _, x, _, _ in rows], pa.float64()),
        "y": pa.array([y for _, _, y, _ in rows], pa.float64()),
        "id": pa.array([i for i, _, _, _ in rows], pa.int64()),
    }
    if keyed:
        cols["key"] = pa.array([k for _, _, _, k in rows])
    return pa.table(cols), X, Y, keys, due


def _learner(keyed: bool = False, per_key: bool = False):
    net = StatefulNet(2, hidden=(8, 8), seed=0)
    return DelayedLabels(KeyedLearner(net, per_key_weights=per_key) if keyed else Learner(net), horizon=HORIZON)


def _columns(keyed: bool = False) -> ColumnMap:
    return ColumnMap(["x0", "x1"], target="y", id="id", key="key" if keyed else None)


@pytest.mark.parametrize("keyed, per_key", [(False, False), (True, False), (True, True)],
                         ids=["one stream", "keyed", "per-key weights"])
def test_the_engine_predicts_waits_and_learns_labels_as_delayed_labels_does(tmp_path, keyed, per_key):
    t, X, Y, keys, due = _events(keyed=keyed)
    stats = Engine(TableSource(t, batch_size=37), _learner(keyed, per_key), _columns(keyed), output=tmp_path / "out",
                   dead_letter=tmp_path / "dead", on_bad_input="dead-letter").run()
    ref = _learner(keyed, per_key)
    want = np.empty(N)
    for s in range(N):  # the same arrivals through the Python API
        want[s] = ref.predict([(keys[s], s) if keyed else s], X[s:s + 1], keys=keys[s:s + 1] if keyed else None)[0]
        if s in due:
            ref.label([(keys[i], i) if keyed else i for i in due[s]], Y[due[s]])
    out, dead = read_parts(tmp_path / "out"), read_parts(tmp_path / "dead")
    np.testing.assert_array_equal(out.column("prediction").to_numpy(), want)
    assert "target" not in out.column_names  # a prediction's target has not arrived
    reasons = dead.column("reason").to_pylist()
    assert sum(r.startswith("expired:") for r in reasons) == ref.n_expired == stats.expired
    assert [i for i, r in zip(dead.column("id").to_pylist(), reasons) if r.startswith("unknown:")] == ["10000"]
    assert stats.labels_learned == ref.n_learned
    assert stats.rows_in == t.num_rows == stats.predicted + stats.labels_learned + stats.dead_lettered
    assert stats.pending_labels == ref.n_pending


def test_an_expired_prediction_is_dead_lettered_with_the_position_of_its_row(tmp_path):
    t, *_ = _events(n=120)
    Engine(TableSource(t, batch_size=1000), _learner(), _columns(), output=tmp_path / "out",
           dead_letter=tmp_path / "dead", on_bad_input="dead-letter").run()
    dead = read_parts(tmp_path / "dead")
    ids, rows = t.column("id").to_pylist(), dead.column("row").to_pylist()
    for i, r, reason in zip(dead.column("id").to_pylist(), rows, dead.column("reason").to_pylist()):
        if reason.startswith("expired:"):
            assert str(ids[r]) == i and t.column("x0")[r].is_valid  # the row that was predicted


def test_a_repeated_id_and_a_row_with_neither_features_nor_target_are_dead_lettered(tmp_path):
    t = pa.table({"x0": pa.array([0.1, 0.2, None, None, 0.3], pa.float64()), "x1": pa.array([0.0, 0.0, None, None, 0.1]),
                  "y": pa.array([None, None, None, 2.0, None], pa.float64()), "id": pa.array([7, 7, 8, 7, None])})
    stats = Engine(TableSource(t), _learner(), _columns(), output=tmp_path / "out", dead_letter=tmp_path / "dead",
                   on_bad_input="dead-letter").run()
    dead = read_parts(tmp_path / "dead")
    reasons = dict(zip(dead.column("row").to_pylist(), dead.column("reason").to_pylist()))
    ids = dict(zip(dead.column("row").to_pylist(), dead.column("id").to_pylist()))
    assert reasons[1].startswith("duplicate:") and "is null" in reasons[2] and reasons[4] == "id is null"
    assert ids == {1: "7", 2: "8", 4: None}  # ids as they were written, not as floats
    assert (stats.predicted, stats.labels_learned, stats.dead_lettered) == (1, 1, 3)


@pytest.mark.parametrize("keyed", [False, True], ids=["one stream", "keyed"])
@settings(max_examples=6, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=3), st.integers(20, 120))
def test_stopping_anywhere_with_waiting_predictions_and_resuming_equals_an_uninterrupted_run(tmp_path_factory, keyed,
                                                                                            stops, every):
    t, *_ = _events(keyed=keyed)
    assert_resumes_exactly(tmp_path_factory.mktemp("run"), lambda: TableSource(t, batch_size=23),
                           lambda: _learner(keyed), _columns(keyed), stops, every)


def assert_resumes_exactly(d, source, learner, columns: ColumnMap, stops: list[int], every: int) -> None:
    """A run stopped after each of ``stops`` rows (a checkpoint every ``every``) and resumed each time
    writes the output and dead letters of an uninterrupted run and ends with its counters."""
    def engine(name):
        return Engine(source(), learner(), columns, output=d / name / "out", dead_letter=d / name / "dead",
                      on_bad_input="dead-letter", checkpoint=CheckpointPolicy(d / name / "ckpt", every_events=every))

    ref = engine("ref").run()
    for k, n in enumerate(stops):
        engine("cut").run(max_events=n, resume=k > 0)
    stats = engine("cut").run(resume=True)
    assert read_parts(d / "cut" / "out").equals(read_parts(d / "ref" / "out"))
    assert read_parts(d / "cut" / "dead").equals(read_parts(d / "ref" / "dead"))
    assert (stats.rows_in, stats.labels_learned, stats.expired) == (ref.rows_in, ref.labels_learned, ref.expired)


def test_an_id_column_without_delayed_labels_and_delayed_labels_without_one_are_refused():
    t, *_ = _events(n=10)
    with pytest.raises(ConfigError, match="wrap the learner in"):
        Engine(TableSource(t), Learner(StatefulNet(2, hidden=(4,))), _columns())
    with pytest.raises(ConfigError, match="need an id column"):
        Engine(TableSource(t), _learner(), ColumnMap(["x0", "x1"], target="y"))
    with pytest.raises(ConfigError, match="id column 'x0'"):
        Engine(TableSource(t.set_column(0, "x0", pa.array([[1.0]] * t.num_rows))), _learner(),
               ColumnMap(["x1"], target="y", id="x0"))


def test_the_metrics_endpoint_reports_learned_expired_and_waiting_labels(tmp_path):
    import urllib.request

    from psann_stream.observe import EngineMetrics

    t, *_ = _events()
    engine = Engine(TableSource(t, batch_size=50), _learner(), _columns(), output=tmp_path / "out",
                    dead_letter=tmp_path / "dead", on_bad_input="dead-letter")
    metrics = EngineMetrics(engine)
    port = metrics.serve(0)
    try:
        stats = engine.run()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            lines = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if line and line[0] != "#")
    finally:
        metrics.close()
    assert float(lines["psann_labels_learned_total"]) == stats.labels_learned > 0
    assert float(lines["psann_labels_expired_total"]) == stats.expired > 0
    assert float(lines["psann_pending_labels"]) == stats.pending_labels == engine.learner.n_pending > 0
