"""Arrow sources and column mapping: zero-copy features, schema errors, resumable positions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import ConfigError
from psann_stream.io import ColumnMap, Position, open_source


def _table(n: int = 10, f: int = 3, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f)).astype(np.float32)
    feats = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), f)
    return pa.table({
        "x": feats,
        "a": pa.array(x[:, 0].astype(np.float64)),
        "b": pa.array(np.arange(n, dtype=np.int64)),
        "y": pa.array(rng.standard_normal(n)),
        "k": pa.array([f"k{i % 3}" for i in range(n)]),
        "t": pa.array(np.arange(n, dtype=np.int64)),
    })


def test_list_column_features_are_zero_copy_views():
    t = _table()
    batch = t.to_batches()[0]
    ev = ColumnMap("x", target="y", key="k", time="t").bind(t.schema).read(batch)
    assert ev.x.shape == (10, 3) and ev.x.dtype == np.float32
    assert not ev.x.flags.writeable  # a view of the Arrow buffer, not a copy
    np.testing.assert_array_equal(ev.x[:, 0], t.column("a").to_numpy().astype(np.float32))
    assert ev.keys.tolist()[:3] == ["k0", "k1", "k2"] and ev.times.tolist() == list(range(10))


def test_sliced_batches_honour_the_offset():
    t = _table()
    sliced = t.to_batches()[0].slice(4, 3)
    ev = ColumnMap("x").bind(t.schema).read(sliced)
    np.testing.assert_array_equal(ev.x[:, 0], t.column("a").to_numpy()[4:7].astype(np.float32))


def test_named_numeric_columns_become_one_matrix():
    t = _table()
    ev = ColumnMap(["a", "b"], target="y").bind(t.schema).read(t.to_batches()[0])
    assert ev.x.shape == (10, 2)
    np.testing.assert_array_equal(ev.x[:, 1], np.arange(10))


def test_schema_problems_are_all_named_with_expected_and_actual_types():
    t = _table()
    with pytest.raises(ConfigError) as info:
        ColumnMap("k", target="k", key="nope", time="a").bind(t.schema)
    msg = str(info.value)
    assert "feature column 'k': expected a numeric column or fixed_size_list<float32 or float64>[F], got string" in msg
    assert "target column 'k': expected a numeric type, got string" in msg
    assert "key column 'nope' is missing" in msg
    assert "time column 'a': expected a timestamp or integer type, got double" in msg


def test_schema_change_is_refused_and_null_cells_are_marked_for_the_bad_input_policy():
    t = _table()
    bound = ColumnMap("x", target="y").bind(t.schema)
    with pytest.raises(ConfigError, match="schema changed mid-stream"):
        bound.read(t.drop_columns(["t"]).to_batches()[0])
    # a null element, and a null list (in a slice: offsets honoured)
    x = pa.array([[9.0, 9.0], [1.0, None], None, [5.0, 6.0]], pa.list_(pa.float32(), 2)).slice(1)
    nulls = pa.record_batch({"x": x, "y": pa.array([1.0, None, 2.0])})
    ev = ColumnMap("x", target="y").bind(nulls.schema).read(nulls)
    assert ev.missing_x.tolist() == [[False, True], [True, True], [False, False]]
    assert np.isnan(ev.x[0, 1]) and np.isnan(ev.x[1]).all() and ev.x[2].tolist() == [5.0, 6.0] and ev.x[0, 0] == 1.0
    assert ev.missing_y.tolist() == [False, True, False]
    clean = pa.record_batch({"x": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2)), "y": pa.array([1.0])})
    ev = ColumnMap("x", target="y").bind(clean.schema).read(clean)
    assert ev.missing_x is None and ev.missing_y is None


def test_one_numeric_feature_column_is_a_feature_vector_of_width_one():
    b = pa.record_batch({"v": pa.array([1.5, None, 3.0]), "y": pa.array([1, 2, 3], pa.int64())})
    bound = ColumnMap("v", target="y").bind(b.schema)
    assert bound.n_features == 1 and not bound.list_column
    ev = bound.read(b)
    assert ev.x.shape == (3, 1) and ev.x[0, 0] == 1.5 and ev.missing_x.tolist() == [[False], [True], [False]]


@pytest.mark.parametrize("kind", ["table", "batches", "ipc_file", "ipc_stream", "parquet"])
@given(start_batch=st.integers(0, 4), start_row=st.integers(0, 5))
def test_every_source_resumes_exactly_at_its_position(tmp_path_factory, kind, start_batch, start_row):
    t = _table(n=20)
    batches = t.to_batches(max_chunksize=4)
    d = tmp_path_factory.mktemp(kind)
    if kind == "table":
        src = open_source(pa.Table.from_batches(batches))
        src.batch_size = 4
    elif kind == "batches":
        src = open_source(batches)
    elif kind == "ipc_file":
        with pa.ipc.new_file(str(d / "s.arrow"), t.schema) as w:
            for b in batches:
                w.write_batch(b)
        src = open_source(d / "s.arrow")
    elif kind == "ipc_stream":
        with pa.ipc.new_stream(str(d / "s.arrows"), t.schema) as w:
            for b in batches:
                w.write_batch(b)
        src = open_source(d / "s.arrows")
    else:
        pq.write_table(t, d / "s.parquet", row_group_size=4)
        src = open_source(d / "s.parquet")
        src.batch_size = 4
    whole = [r for _, b in src.batches() for r in b.column("b").to_pylist()]
    assert whole == list(range(20))
    start = Position(start_batch, start_row)
    rest = [(p, b) for p, b in src.batches(start)]
    skipped = min(20, start_batch * 4 + min(start_row, 4))
    assert [r for _, b in rest for r in b.column("b").to_pylist()] == list(range(skipped, 20))
    assert all(p >= start for p, _ in rest)


def test_open_source_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(tmp_path / "missing.arrow")
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(b"not arrow at all")
    with pytest.raises(ConfigError, match="not a readable Arrow IPC stream"):
        open_source(bad)


def _serve(table: pa.Table, connections: int):
    """A TCP server on 127.0.0.1 that writes ``table`` as an Arrow IPC stream on each connection."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)

    def loop():
        for _ in range(connections):
            conn, _ = server.accept()
            with conn, conn.makefile("wb") as f:
                with pa.ipc.new_stream(f, table.schema) as w:
                    w.write_table(table, max_chunksize=64)
        server.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return f"tcp://127.0.0.1:{server.getsockname()[1]}", thread


def test_a_tcp_socket_source_resumes_on_a_replaying_sender(tmp_path):
    from psann_stream import KeyedLearner, StatefulNet
    from psann_stream.engine import CheckpointPolicy, Engine
    from psann_stream.sinks import read_parts
    from psann_stream.io import TableSource

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 2)).astype(np.float32)
    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 2), "y": x.sum(axis=1).astype(np.float64),
                      "k": rng.integers(0, 4, 1000)})
    cols = ColumnMap("x", target="y", key="k")

    def net():
        return KeyedLearner(StatefulNet(2, hidden=(5,), seed=0), per_key_weights=True)

    Engine(TableSource(table, 64), net(), cols, output=tmp_path / "ref").run()
    address, thread = _serve(table, connections=2)
    ckpt = CheckpointPolicy(tmp_path / "ckpt")
    for n, resume in ((333, False), (None, True)):  # stop inside a batch, reconnect and resume
        src = open_source(address)
        Engine(src, net(), cols, output=tmp_path / "out", checkpoint=ckpt).run(n, resume=resume)
    thread.join(10)
    assert read_parts(tmp_path / "out").equals(read_parts(tmp_path / "ref"))
    with pytest.raises(ConfigError, match="expected tcp://HOST:PORT"):
        open_source("tcp://nowhere")
    with pytest.raises(ConfigError, match="cannot connect"):
        open_source(address)  # the server has gone


def test_a_socket_stream_that_breaks_off_says_how_to_continue():
    """The sender dies mid-stream (a truncated IPC message): a one-line error that names the address
    and says to resume, not a bare socket exception."""
    import socket
    import threading

    from psann_stream import KeyedLearner, PsannStreamError, StatefulNet
    from psann_stream.engine import Engine

    x = np.zeros((200, 2), dtype=np.float32)
    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 2), "y": np.zeros(200), "k": np.zeros(200, np.int64)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=50)
    data = sink.getvalue().to_pybytes()
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(data[: len(data) - 700])  # cut inside the last batch
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    src = open_source(f"tcp://127.0.0.1:{server.getsockname()[1]}")
    lrn = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0), per_key_weights=True)
    with pytest.raises(PsannStreamError, match=r"socket source tcp://127\.0\.0\.1:\d+: the stream broke off .* resume"):
        Engine(src, lrn, ColumnMap("x", target="y", key="k")).run()
