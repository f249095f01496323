"""Engine: the loop equals the learner on the same rows, resumes exactly, and loses no bad row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann_stream import BadInputError, ColumnMap, ConfigError, KeyedLearner, Learner, NonFiniteInputError, StatefulNet
from psann_stream.engine import CheckpointPolicy, Engine
from psann_stream.sinks import read_parts
from psann_stream.io import BatchesSource, TableSource
from psann_stream.scenarios.crash_test import same


def _table(n=300, seed=0, keys=5) -> pa.Table:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3),
        "y": pa.array(np.sin(x.sum(axis=1)).astype(np.float64)),
        "key": pa.array([f"k{i}" for i in k]),
    })


def _keyed() -> KeyedLearner:
    return KeyedLearner(StatefulNet(3, hidden=(6,), seed=0), per_key_weights=True, monitor=False)


def test_engine_output_equals_the_learner_on_the_same_rows(tmp_path):
    t = _table()
    lrn = Learner(StatefulNet(3, hidden=(6,), seed=0))
    Engine(TableSource(t, batch_size=64), lrn, ColumnMap("x", target="y"), output=tmp_path / "out").run()
    out = read_parts(tmp_path / "out")
    ref = Learner(StatefulNet(3, hidden=(6,), seed=0))
    x = np.asarray(t.column("x").combine_chunks().values.to_numpy(), dtype=np.float64).reshape(-1, 3)
    want = ref.learn_batch(x, t.column("y").to_numpy())
    assert np.array_equal(out.column("prediction").to_numpy(), want)
    assert out.column("row").to_pylist() == [i % 64 for i in range(300)]


@pytest.mark.parametrize("keyed", [False, True])
def test_float64_features_reach_the_loop_as_a_read_only_zero_copy_view_and_are_learned(tmp_path, keyed):
    """A float64 list column is read without a copy (a read-only view): the loop takes it as it is,
    and the output equals the learner on the same rows."""
    t = _table()
    x = np.asarray(t.column("x").combine_chunks().values.to_numpy(), dtype=np.float64).reshape(-1, 3)
    t = t.set_column(0, "x", pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3))
    make = (lambda: KeyedLearner(StatefulNet(3, hidden=(6,), seed=0))) if keyed else (
        lambda: Learner(StatefulNet(3, hidden=(6,), seed=0)))
    cols = ColumnMap("x", target="y", key="key" if keyed else None)
    assert not cols.bind(t.schema).read(t.to_batches()[0]).x.flags.writeable
    Engine(TableSource(t, batch_size=64), make(), cols, output=tmp_path / "out").run()
    ref = make()
    y = t.column("y").to_numpy()
    want = ref.learn_batch(t.column("key").to_numpy(zero_copy_only=False), x, y) if keyed else ref.learn_batch(x, y)
    np.testing.assert_array_equal(read_parts(tmp_path / "out").column("prediction").to_numpy(), want)


@settings(max_examples=20)
@given(st.lists(st.integers(1, 120), min_size=1, max_size=4), st.integers(10, 200))
def test_stopping_anywhere_and_resuming_equals_an_uninterrupted_run(tmp_path_factory, stops, every):
    d = tmp_path_factory.mktemp("run")
    t = _table()
    cols = ColumnMap("x", target="y", key="key")

    def engine(name):
        return Engine(TableSource(t, batch_size=50), _keyed(), cols, output=d / name / "out",
                      checkpoint=CheckpointPolicy(d / name / "ckpt", every_events=every))

    engine("ref").run()
    first = True
    for n in stops:  # each run is a fresh process-like engine that resumes from the checkpoint
        engine("cut").run(max_events=n, resume=not first)
        first = False
    stats = engine("cut").run(resume=True)
    assert stats.rows_in == 300
    assert read_parts(d / "cut" / "out").equals(read_parts(d / "ref" / "out"))
    from psann_stream.checkpoint import load_latest

    assert same(load_latest(d / "cut" / "ckpt")[1]["learner"], load_latest(d / "ref" / "ckpt")[1]["learner"])


def _bad_batches():
    good = _table(40)
    b = good.to_batches()[0]
    x = b.column("x").values.to_numpy().copy().reshape(-1, 3)
    y = b.column("y").to_numpy().copy()
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    x[11, 2] = 1e20
    y[15] = np.nan
    keys = b.column("key").to_pylist()
    keys[19] = None
    return [pa.record_batch({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3),
        "y": pa.array(y),
        "key": pa.array(keys, pa.string()),
    })]


def test_dead_letter_routes_every_bad_row_with_its_reason_and_loses_nothing(tmp_path):
    e = Engine(BatchesSource(_bad_batches()), _keyed(), ColumnMap("x", target="y", key="key"),
               output=tmp_path / "out", dead_letter=tmp_path / "dead", on_bad_input="dead-letter")
    stats = e.run()
    dead = read_parts(tmp_path / "dead")
    out = read_parts(tmp_path / "out")
    assert stats.rows_in == 40 == stats.predicted + stats.dead_lettered
    assert out.num_rows + dead.num_rows == 40
    assert dead.column("row").to_pylist() == [3, 7, 11, 15, 19]
    reasons = dead.column("reason").to_pylist()
    assert "feature 1 is nan" in reasons[0] and "feature 0 is inf" in reasons[1]
    assert "|value| > 1e+12" in reasons[2] and "target is nan" in reasons[3] and "key is null" in reasons[4]
    assert sorted(out.column("row").to_pylist() + dead.column("row").to_pylist()) == list(range(40))


def test_raise_policy_names_batch_row_and_column_and_learns_nothing(tmp_path):
    lrn = _keyed()
    e = Engine(BatchesSource(_bad_batches()), lrn, ColumnMap("x", target="y", key="key"), output=tmp_path / "out")
    with pytest.raises(NonFiniteInputError, match=r"batch 0, row 3: feature 1 is nan.*on_bad_input='dead-letter'"):
        e.run()
    assert lrn.n_learned == 0 and read_parts(tmp_path / "out") is None


def test_engine_configuration_errors(tmp_path):
    t = _table()
    with pytest.raises(ConfigError, match="needs a key column"):
        Engine(TableSource(t), _keyed(), ColumnMap("x", target="y"))
    with pytest.raises(ConfigError, match="needs a dead_letter directory"):
        Engine(TableSource(t), _keyed(), ColumnMap("x", target="y", key="key"), on_bad_input="dead-letter")
    with pytest.raises(ConfigError, match="stream has 3 feature.*model takes 4"):
        Engine(TableSource(t), Learner(StatefulNet(4, hidden=(4,))), ColumnMap("x", target="y"))
    with pytest.raises(ConfigError, match="unknown hook"):
        Engine(TableSource(t), Learner(StatefulNet(3, hidden=(4,))), ColumnMap("x"), hooks={"on_bogus": print})
    with pytest.raises(ConfigError, match="needs a checkpoint policy"):
        Engine(TableSource(t), Learner(StatefulNet(3, hidden=(4,))), ColumnMap("x")).run(resume=True)


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.lists(st.tuples(st.integers(0, 59), st.sampled_from(["nan", "inf", "huge", "y", "key"])), max_size=12))
def test_rows_in_equal_rows_predicted_plus_rows_dead_lettered(tmp_path_factory, seed, damage):
    d = tmp_path_factory.mktemp("dl")
    t = _table(60, seed=seed)
    x = t.column("x").combine_chunks().values.to_numpy().copy().reshape(-1, 3)
    y = t.column("y").to_numpy().copy()
    keys = t.column("key").to_pylist()
    for row, kind in damage:
        if kind == "nan":
            x[row, seed % 3] = np.nan
        elif kind == "inf":
            x[row, 0] = -np.inf
        elif kind == "huge":
            x[row, 1] = 1e30
        elif kind == "y":
            y[row] = np.inf
        else:
            keys[row] = None
    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3), "y": pa.array(y),
                      "key": pa.array(keys, pa.string())})
    stats = Engine(TableSource(table, batch_size=16), _keyed(), ColumnMap("x", target="y", key="key"),
                   output=d / "out", dead_letter=d / "dead", on_bad_input="dead-letter").run()
    out, dead = read_parts(d / "out"), read_parts(d / "dead")
    n_out = 0 if out is None else out.num_rows
    n_dead = 0 if dead is None else dead.num_rows
    assert stats.rows_in == 60 == stats.predicted + stats.dead_lettered == n_out + n_dead
    assert n_dead == len({row for row, _ in damage})
    if out is not None:
        assert np.isfinite(out.column("prediction").to_numpy()).all()


def test_hooks_see_batches_predictions_checkpoints_and_alerts(tmp_path):
    from psann_stream import StateConfig

    seen = {"batch": 0, "pred": 0, "ckpt": [], "alert": []}
    lrn = Learner(StatefulNet(3, hidden=(6,), state=StateConfig(beta=8.0, max_abs=0.5), seed=0), check_every=100)
    hooks = {
        "on_batch": lambda pos, ev: seen.__setitem__("batch", seen["batch"] + len(ev)),
        "on_prediction": lambda pos, p: seen.__setitem__("pred", seen["pred"] + len(p)),
        "on_checkpoint": lambda step, path: seen["ckpt"].append(step),
        "on_alert": lambda a: seen["alert"].append(a.kind),
    }
    with pytest.warns(Warning):
        Engine(TableSource(_table(600), batch_size=100), lrn, ColumnMap("x", target="y"), hooks=hooks,
               checkpoint=CheckpointPolicy(tmp_path, every_events=250)).run()
    assert seen["batch"] == seen["pred"] == 600
    assert seen["ckpt"] == [300, 600]  # every 250 events, at batch boundaries; no duplicate final one
    assert "saturation" in seen["alert"]


def _one_bad(kind: str) -> pa.RecordBatch:
    b = _table(20).to_batches()[0]
    x = b.column("x").values.to_numpy().copy().reshape(-1, 3)
    y = b.column("y").to_numpy().copy()
    keys = b.column("key").to_pylist()
    feats = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3)
    if kind == "nan":
        x[5, 2] = np.nan
    elif kind == "inf":
        x[5, 2] = np.inf
    elif kind == "huge":
        x[5, 2] = 1e15
    elif kind == "target":
        y[5] = np.nan
    elif kind == "key":
        keys[5] = None
    if kind == "null-element":
        flat = pa.array([None if i == 5 * 3 + 2 else v for i, v in enumerate(x.reshape(-1).tolist())], pa.float32())
        feats = pa.FixedSizeListArray.from_arrays(flat, 3)
    elif kind != "key":
        feats = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3)
    target = pa.array([None if (kind == "null-target" and i == 5) else v for i, v in enumerate(y.tolist())], pa.float64())
    return pa.record_batch({"x": feats, "y": target, "key": pa.array(keys, pa.string())})


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("nan", NonFiniteInputError, r"batch 0, row 5: feature 2 is nan \(non-finite\)"),
        ("inf", NonFiniteInputError, r"batch 0, row 5: feature 2 is inf \(non-finite\)"),
        ("huge", BadInputError, r"batch 0, row 5: feature 2 is [0-9.e+]+ \(\|value\| > 1e\+12\)"),
        ("target", NonFiniteInputError, r"batch 0, row 5: target is nan"),
        ("key", BadInputError, r"batch 0, row 5: key is null"),
        ("null-element", BadInputError, r"batch 0, row 5: feature 2 is null\. Nothing"),
        ("null-target", BadInputError, r"batch 0, row 5: target is null\. Nothing"),
    ],
)
def test_raise_policy_names_each_kind_of_bad_row(kind, error, message):
    e = Engine(BatchesSource([_one_bad(kind)]), _keyed(), ColumnMap("x", target="y", key="key"))
    with pytest.raises(error, match=message):
        e.run()


def test_schema_problems_stop_the_run_before_any_row():
    t = _table(40)
    wrong = t.set_column(1, "y", pa.array([str(v) for v in t.column("y").to_pylist()]))
    with pytest.raises(ConfigError, match="target column 'y': expected a numeric type, got string"):
        Engine(TableSource(wrong), _keyed(), ColumnMap("x", target="y", key="key"))
    with pytest.raises(ConfigError, match="target column 'target' is missing"):
        Engine(TableSource(t), _keyed(), ColumnMap("x", target="target", key="key"))
    changed = [t.to_batches(max_chunksize=20)[0], t.append_column("extra", pa.array(np.zeros(40))).to_batches(max_chunksize=20)[1]]
    lrn = _keyed()
    with pytest.raises(ConfigError, match="schema changed mid-stream"):
        Engine(BatchesSource(changed), lrn, ColumnMap("x", target="y", key="key")).run()


@pytest.mark.parametrize("fmt, suffix", [("parquet", ".parquet"), ("arrow-stream", ".arrows")])
def test_parquet_and_ipc_stream_outputs_and_the_callback_sink_deliver_each_committed_row(tmp_path, fmt, suffix):
    delivered = []
    e = Engine(TableSource(_table(200), batch_size=30), _keyed(), ColumnMap("x", target="y", key="key"),
               output=tmp_path / "out", output_format=fmt, hooks={"on_commit": delivered.append},
               checkpoint=CheckpointPolicy(tmp_path / "ck", every_events=50))
    e.run()
    out = read_parts(tmp_path / "out")
    parts = sorted((tmp_path / "out").glob("part-*"))
    assert len(parts) > 1 and {p.suffix for p in parts} == {suffix} and out.num_rows == 200
    assert pa.concat_tables(delivered).equals(out)
    ref = tmp_path / "ref"
    Engine(TableSource(_table(200), batch_size=30), _keyed(), ColumnMap("x", target="y", key="key"), output=ref).run()
    assert out.equals(read_parts(ref))  # the same rows as the default IPC-file output
    if fmt == "arrow-stream":  # each part is a standalone IPC stream
        assert sum(pa.ipc.open_stream(p.read_bytes()).read_all().num_rows for p in parts) == 200
    with pytest.raises(ConfigError, match="output format 'csv'"):
        Engine(TableSource(_table()), _keyed(), ColumnMap("x", target="y", key="key"), output=tmp_path / "o2", output_format="csv")


def test_resume_refuses_a_foreign_checkpoint_or_a_lost_output_directory(tmp_path):
    import shutil

    from psann_stream import CheckpointError
    from psann_stream.checkpoint import save_checkpoint

    cols = ColumnMap("x", target="y", key="key")

    def engine(out):
        return Engine(TableSource(_table(200), batch_size=50), _keyed(), cols, output=out,
                      checkpoint=CheckpointPolicy(tmp_path / "ck", every_events=50))

    engine(tmp_path / "out").run(max_events=120)
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(CheckpointError, match=r"covers \d+ committed output part\(s\) but .* holds 0"):
        engine(tmp_path / "out").run(resume=True)
    save_checkpoint(tmp_path / "foreign", {"something": 1}, step=1)
    e = Engine(TableSource(_table()), _keyed(), cols, checkpoint=CheckpointPolicy(tmp_path / "foreign"))
    with pytest.raises(CheckpointError, match="is not an engine checkpoint"):
        e.run(resume=True)


def _timed(times, keys) -> pa.Table:
    n = len(times)
    x = np.linspace(-1, 1, 3 * n).astype(np.float32)
    return pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x), 3),
        "y": pa.array(np.cos(np.arange(n) * 0.1)),
        "key": pa.array(keys),
        "t": pa.array(times, pa.timestamp("ms")),
    })


TIMED_COLUMNS = ColumnMap("x", target="y", key="key", time="t")


def test_duplicate_and_out_of_order_times_within_a_key_are_bad_input(tmp_path):
    #          a0  b0  a1  a1(dup) b-1(back) a3  None  b2  a2(back)
    times = [0, 5, 1, 1, 4, 3, None, 6, 2]
    keys = ["a", "b", "a", "a", "b", "a", "a", "b", "a"]
    t = _timed(times, keys)
    with pytest.raises(BadInputError, match=r"batch 0, row 3: time .* of key 'a' repeats its last accepted time"):
        Engine(TableSource(t), _keyed(), TIMED_COLUMNS).run()
    e = Engine(TableSource(t, batch_size=4), _keyed(), TIMED_COLUMNS, output=tmp_path / "out",
               on_bad_input="dead-letter", dead_letter=tmp_path / "dead")
    stats = e.run()
    dead = read_parts(tmp_path / "dead")
    assert dead["row"].to_pylist() == [3, 0, 2, 0]  # rows 3, 4 (batch 1, row 0), 6 and 8 (batch 2, row 0)
    assert dead["batch"].to_pylist() == [0, 1, 1, 2]
    reasons = dead["reason"].to_pylist()
    assert "repeats" in reasons[0] and "is before" in reasons[1] and reasons[2] == "time is null" and "is before" in reasons[3]
    assert stats.rows_in == stats.predicted + stats.dead_lettered == 9 and stats.dead_lettered == 4
    out = read_parts(tmp_path / "out")
    for key in ("a", "b"):  # what was learned is in strictly increasing time per key
        kt = [v for k, v in zip(out["key"].to_pylist(), out["time"].to_pylist()) if k == key]
        assert kt == sorted(set(kt))
    # repeats are allowed when asked; then only the backward steps and the null are bad
    loose = Engine(TableSource(t, batch_size=4), _keyed(), TIMED_COLUMNS, time_order="non-decreasing",
                   on_bad_input="dead-letter", dead_letter=tmp_path / "dead2").run()
    assert loose.dead_lettered == 3
    off = Engine(TableSource(t.filter(pc.is_valid(t["t"]))), _keyed(), TIMED_COLUMNS, time_order="off").run()
    assert off.dead_lettered == 0 and off.predicted == 8
    with pytest.raises(ConfigError, match="time_order = 'sorted'"):
        Engine(TableSource(t), _keyed(), TIMED_COLUMNS, time_order="sorted")


def test_the_last_times_survive_a_resume(tmp_path):
    """A row that goes back to before a time seen before the checkpoint is caught after resume too."""
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.integers(0, 3, 400)).tolist()  # repeats (0 steps) included
    times[350] = times[10]  # far back, across the checkpoint below
    t = _timed(times, [f"k{i % 3}" for i in range(400)])
    kw = dict(on_bad_input="dead-letter")
    Engine(TableSource(t, 64), _keyed(), TIMED_COLUMNS, output=tmp_path / "ref", dead_letter=tmp_path / "refdead", **kw).run()
    ckpt = CheckpointPolicy(tmp_path / "ck", every_events=10**6)
    for n, resume in ((200, False), (None, True)):
        Engine(TableSource(t, 64), _keyed(), TIMED_COLUMNS, output=tmp_path / "out", dead_letter=tmp_path / "dead",
               checkpoint=ckpt, **kw).run(n, resume=resume)
    assert read_parts(tmp_path / "dead").equals(read_parts(tmp_path / "refdead"))
    assert read_parts(tmp_path / "out").equals(read_parts(tmp_path / "ref"))
    assert 350 in [b * 64 + r for b, r in zip(read_parts(tmp_path / "dead")["batch"].to_pylist(),
                                               read_parts(tmp_path / "dead")["row"].to_pylist())]


def test_every_learner_is_a_stream_learner_and_others_are_refused_by_name():
    from psann_stream.engine import StreamLearner
    from psann_stream.ensemble import default_ensemble

    for learner in (Learner(StatefulNet(4, hidden=(4,))), KeyedLearner(StatefulNet(4, hidden=(4,))), default_ensemble(4)):
        assert isinstance(learner, StreamLearner), type(learner).__name__

    class NoState:
        in_features, alerts = 4, []

        def learn_batch(self, X, Y):
            return np.zeros(len(X))

        def predict_batch(self, X):
            return np.zeros(len(X))

    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.float32)), 4), "y": pa.array([0.0, 1.0])})
    with pytest.raises(ConfigError, match=r"the learner \(NoState\) has no state_dict, load_state_dict; the engine needs a "
                                          r"StreamLearner"):
        Engine(TableSource(table), NoState(), ColumnMap("x", target="y"))
