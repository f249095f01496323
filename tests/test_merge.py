"""Labels from a second source: MergedSource merges events and labels by time; through the engine
it equals the same rows in one stream, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann_stream import ConfigError
from psann_stream.engine import Engine
from psann_stream.io import ColumnMap, Position, TableSource
from psann_stream.merge import MergedSource
from psann_stream.sinks import read_parts

from test_engine_delayed import _learner, assert_resumes_exactly

N = 200


def _streams(n: int = N, seed: int = 0):
    """The events (time 10 t) and their labels (time 10 (t + d) + 5: after event t + d), as two
    tables, and the same rows in one table in time order."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    Y = np.sin(X[:, 0]) + 0.5 * np.roll(X[:, 1], 1)
    delay = rng.integers(1, 30, n)
    lost = rng.random(n) < 0.1
    ev = [{"t": 10 * i, "x0": X[i, 0], "x1": X[i, 1], "y": None, "id": i} for i in range(n)]
    lb = sorted(({"t": 10 * int(i + delay[i]) + 5, "y": Y[i], "id": i} for i in range(n) if not lost[i]),
                key=lambda r: (r["t"], r["id"]))
    schema = pa.schema([("t", pa.int64()), ("x0", pa.float64()), ("x1", pa.float64()), ("y", pa.float64()),
                        ("id", pa.int64())])
    lschema = pa.schema([("t", pa.int64()), ("y", pa.float64()), ("id", pa.int64())])
    events, labels = pa.Table.from_pylist(ev, schema=schema), pa.Table.from_pylist(lb, schema=lschema)
    one = pa.Table.from_pylist(sorted(ev + [{**r, "x0": None, "x1": None} for r in lb], key=lambda r: r["t"]),
                               schema=schema)
    return events, labels, one


COLUMNS = ColumnMap(["x0", "x1"], target="y", id="id", time="t")


def test_merged_rows_are_the_rows_of_both_sources_in_time_order():
    events, labels, one = _streams()
    src = MergedSource(TableSource(events, 17), TableSource(labels, 13), time="t")
    got = pa.Table.from_batches([b for _, b in src.batches(src.initial_position())])
    assert got.equals(one)


def test_the_engine_on_two_sources_equals_the_same_rows_in_one_stream(tmp_path):
    events, labels, one = _streams()
    Engine(TableSource(one, 23), _learner(), COLUMNS, output=tmp_path / "one").run()
    stats = Engine(MergedSource(TableSource(events, 23), TableSource(labels, 11), time="t"), _learner(), COLUMNS,
                   output=tmp_path / "two").run()
    a, b = read_parts(tmp_path / "one"), read_parts(tmp_path / "two")
    np.testing.assert_array_equal(a["prediction"].to_numpy(), b["prediction"].to_numpy())
    assert set(b["source"].to_pylist()) == {0} and stats.labels_learned > 0


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 150), min_size=1, max_size=3), st.integers(15, 90))
def test_a_merged_run_stopped_anywhere_and_resumed_equals_an_uninterrupted_one(tmp_path_factory, stops, every):
    events, labels, _ = _streams()
    assert_resumes_exactly(tmp_path_factory.mktemp("run"),
                           lambda: MergedSource(TableSource(events, 19), TableSource(labels, 7), time="t"), _learner,
                           COLUMNS, stops, every)


def test_sources_that_cannot_be_merged_are_refused_by_name():
    events, labels, _ = _streams(n=20)
    with pytest.raises(ConfigError, match="no time column 'when'"):
        MergedSource(TableSource(events), TableSource(labels), time="when")
    with pytest.raises(ConfigError, match="label column 'extra' is not a column of the events"):
        MergedSource(TableSource(events), TableSource(labels.append_column("extra", pa.array([1] * labels.num_rows))),
                     time="t")
    with pytest.raises(ConfigError, match="label column 'y' is double, but the events' 'y' is float"):
        MergedSource(TableSource(events.set_column(3, "y", events["y"].cast(pa.float32()))), TableSource(labels), time="t")
    src = MergedSource(TableSource(events), TableSource(labels), time="t")
    with pytest.raises(ConfigError, match="not a merged position"):
        src.position_from_state([0, 0])
    assert src.position_from_state(src.initial_position().to_state()).events == Position()
