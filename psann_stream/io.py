"""Arrow in: sources with resumable positions, and the mapping from record batches to learner inputs.

**Columns.** :class:`ColumnMap` says which columns hold the features (one ``fixed_size_list<float>``
column, converted without copying, or several numeric columns, converted with one copy through
``RecordBatch.to_tensor``), the optional target, key and event-time columns. :meth:`ColumnMap.bind`
checks a schema once, naming the column, the expected and the actual type of every mismatch;
:meth:`BoundColumns.read` turns each batch into :class:`Events` (numpy views, no Python object per
row).

**Sources.** Every source yields ``(position, RecordBatch)`` from a given start position, so a run
that stops after any row can resume at the next one: in-memory tables and iterables of batches,
Arrow IPC files (memory-mapped) and streams (a path, ``"-"`` for stdin, or ``tcp://HOST:PORT``),
Parquet files and datasets here; Kafka partitions in :mod:`psann_stream.adapters.kafka`. The source protocol
(:class:`Source`) is what the engine relies on: ``schema``, ``initial_position()``,
``batches(start)``, ``position_from_state(state)`` and ``commit(position)``; a position has
``after(consumed, batch_rows)``, ``to_state()``, ``where(row)`` and ``output_columns(n)``.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from .errors import ConfigError, PsannStreamError
from .keys import EncodedKeys

__all__ = ["ColumnMap", "BoundColumns", "Events", "Position", "Source", "open_source", "TableSource",
           "BatchesSource", "IpcFileSource", "IpcStreamSource", "ParquetSource", "SocketSource"]


@dataclass(frozen=True, order=True)
class Position:
    """Where a file or in-memory source is: the ``batch``-th record batch, ``row`` rows into it.

    A yielded position is where that batch (or its remaining part) starts; :meth:`after` is where
    the source resumes once ``consumed`` of its rows were processed.
    """

    batch: int = 0
    row: int = 0

    def after(self, consumed: int, batch_rows: int) -> Position:
        """The next unread row after ``consumed`` of the ``batch_rows`` rows yielded at this position."""
        return Position(self.batch + 1, 0) if consumed == batch_rows else Position(self.batch, self.row + consumed)

    def within(self, rows: int) -> Position:
        """The position of the rest of the batch yielded here, ``rows`` rows further (a source that
        splits a batch, like :class:`~psann_stream.merge.MergedSource`, yields the rest there)."""
        return Position(self.batch, self.row + rows)

    def to_state(self) -> list[int]:
        """Checkpoint form (plain ints; :meth:`Source.position_from_state` reads it back)."""
        return [self.batch, self.row]

    def where(self, row: int) -> str:
        """Human-readable place of row ``row`` of the batch yielded at this position."""
        return f"batch {self.batch}, row {self.row + row}"

    def output_columns(self, rows: np.ndarray) -> dict[str, pa.Array]:
        """Source-position columns of output rows (``rows``: offsets into the yielded batch); with
        ``row`` they identify an input row, so consumers dedupe by them."""
        return {
            "batch": pa.array(np.full(len(rows), self.batch, dtype=np.int64)),
            "row": pa.array(self.row + np.asarray(rows, dtype=np.int64)),
        }


class Source:
    """Base of the sources: positions are :class:`Position` s and there is nothing to commit.

    Subclasses set ``schema`` and implement ``batches(start)``.
    """

    schema: pa.Schema

    def initial_position(self) -> Position:
        """Where a fresh run starts."""
        return Position()

    def batches(self, start: Position) -> Iterator[tuple[Position, pa.RecordBatch]]:  # pragma: no cover
        raise NotImplementedError

    def position_from_state(self, state: object) -> Position:
        """A position from its checkpoint form (:meth:`Position.to_state`)."""
        try:
            batch, row = (int(v) for v in state)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ConfigError(f"checkpoint position {state!r} is not [batch, row]: was it written for another source?") from None
        return Position(batch, row)

    def commit(self, position: Position) -> None:
        """Called after a checkpoint that covers everything before ``position`` was saved (a broker
        source acknowledges its offsets here); files have nothing to do."""


@dataclass
class Events:
    """One batch of events. ``x``: ``[N, F]`` float32/float64 (read-only when zero-copy), ``y``:
    ``[N]`` float64 (several targets: ``[N, T]``) or None, ``keys``: the key column encoded once
    (:class:`~psann_stream.keys.EncodedKeys`: codes into the batch's distinct keys) or None,
    ``times``: ``[N]`` or None."""

    x: np.ndarray
    y: np.ndarray | None
    keys: EncodedKeys | None
    times: np.ndarray | None
    missing_key: np.ndarray | None = None  # [N] bool where the key is null; None when no key is null
    missing_time: np.ndarray | None = None  # [N] bool where the event time is null; None when none is
    missing_x: np.ndarray | None = None  # [N, F] bool where a feature is null (x holds NaN there); None when none is
    missing_y: np.ndarray | None = None  # [N] bool where a target is null (y holds NaN there); None when none is
    ids: np.ndarray | None = None  # [N] event ids (int64, or objects for other types) with an id column
    missing_id: np.ndarray | None = None  # [N] bool where the id is null; None when none is

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


@dataclass(frozen=True)
class ColumnMap:
    """Which columns are features, target, key, event time and event id.

    Args:
        features: one ``fixed_size_list<float32|float64>`` column name, one numeric column name (a
            feature vector of width 1: univariate streams), or a sequence of numeric column names
            (in that order).
        target: the target column (numeric), or several targets learned together by a model with
            ``out_features = T`` (a sequence of ``T`` numeric column names, in that order, or one
            ``fixed_size_list<float32|float64>[T]`` column), or None for prediction-only streams.
        key: the key column (any type), or None.
        time: the event-time column (timestamp or integer), or None.
        id: the event-id column (integer or string) for labels that arrive later, or None: a row
            with its target null is predicted and waits; a row with a target and every feature null
            is the label of the earlier row with the same id (and key); see
            :class:`~psann_stream.delayed.DelayedLabels`.
    """

    features: str | Sequence[str]
    target: str | Sequence[str] | None = None
    key: str | None = None
    time: str | None = None
    id: str | None = None

    def bind(self, schema: pa.Schema) -> BoundColumns:
        """Check ``schema`` against this map; every problem is named (column, expected, actual)."""
        problems = []

        def field(name: str, role: str) -> pa.Field | None:
            idx = schema.get_field_index(name)
            if idx < 0:
                problems.append(f"{role} column {name!r} is missing (columns: {', '.join(schema.names)})")
                return None
            return schema.field(idx)

        width = 0
        list_column = isinstance(self.features, str)
        names = [self.features] if list_column else list(self.features)
        if not names:
            problems.append("no feature columns given")
        if list_column:
            f = field(names[0], "feature")
            if f is not None:
                t = f.type
                if _is_numeric(t):  # one numeric column: a univariate stream, features of width 1
                    list_column, width = False, 1
                elif not (pa.types.is_fixed_size_list(t) and _is_float(t.value_type)):
                    problems.append(
                        f"feature column {f.name!r}: expected a numeric column or fixed_size_list<float32 or "
                        f"float64>[F], got {t}; or name several numeric columns"
                    )
                else:
                    width = t.list_size
        else:
            for n in names:
                f = field(n, "feature")
                if f is not None and not _is_numeric(f.type):
                    problems.append(f"feature column {n!r}: expected a numeric type, got {f.type}")
            width = len(names)
        n_targets, target_list = 0, False
        target_names: tuple[str, ...] = ()
        if isinstance(self.target, str):
            target_names, n_targets = (self.target,), 1
            f = field(self.target, "target")
            if f is not None and pa.types.is_fixed_size_list(f.type) and _is_float(f.type.value_type):
                target_list, n_targets = True, f.type.list_size
            elif f is not None and not _is_numeric(f.type):
                problems.append(f"target column {self.target!r}: expected a numeric type, got {f.type} (several "
                                "targets in one column: fixed_size_list<float32 or float64>[T])")
        elif self.target is not None:
            target_names, n_targets = tuple(self.target), len(self.target)
            if not target_names:
                problems.append("no target columns given (use target=None for prediction-only streams)")
            for n in target_names:
                f = field(n, "target")
                if f is not None and not _is_numeric(f.type):
                    problems.append(f"target column {n!r}: expected a numeric type, got {f.type}")
        if self.key is not None:
            field(self.key, "key")
        if self.time is not None:
            f = field(self.time, "time")
            if f is not None and not (pa.types.is_timestamp(f.type) or pa.types.is_integer(f.type)):
                problems.append(f"time column {self.time!r}: expected a timestamp or integer type, got {f.type}")
        if self.id is not None:
            f = field(self.id, "id")
            if f is not None and not (pa.types.is_integer(f.type) or pa.types.is_string(f.type)
                                      or pa.types.is_large_string(f.type)):
                problems.append(f"id column {self.id!r}: expected an integer or string type, got {f.type}")
        if problems:
            raise ConfigError("the stream's schema does not match the column map:\n  " + "\n  ".join(problems))
        return BoundColumns(self, schema, width, list_column, tuple(names), n_targets, target_list, target_names)


@dataclass(frozen=True)
class BoundColumns:
    """A :class:`ColumnMap` checked against one schema; :meth:`read` converts batches of it."""

    columns: ColumnMap
    schema: pa.Schema
    n_features: int
    list_column: bool
    feature_names: tuple[str, ...]  # the list column's name, or the numeric columns' names in order
    n_targets: int = 0  # targets per event (0: no target column)
    target_list: bool = False  # the targets are one fixed_size_list column
    target_names: tuple[str, ...] = ()  # the target column's name, or the numeric columns' names in order

    @property
    def several_targets(self) -> bool:
        """Whether ``Events.y`` is ``[N, T]`` (several target columns or a list column), not ``[N]``."""
        return self.target_list or len(self.target_names) > 1

    def read(self, batch: pa.RecordBatch) -> Events:
        """The events of ``batch``; raises ConfigError if its schema differs from the bound one."""
        if not batch.schema.equals(self.schema):
            raise ConfigError(
                f"the schema changed mid-stream: expected {self.schema}, got {batch.schema}; "
                "a stream keeps one schema (start a new run for the new one)."
            )
        c = self.columns
        missing_x = missing_y = None
        F = self.n_features
        if self.list_column:
            col = batch.column(c.features)  # type: ignore[arg-type]
            # a null list, or a null element, is bad input of its row (raised or dead-lettered by the
            # engine's policy, with "is null" as the reason): NaN in x, True in missing_x
            values = col.values.slice(col.offset * F, len(col) * F)  # .values ignores the slice; this does not
            if col.null_count or values.null_count:
                missing_x = values.is_null().to_numpy(zero_copy_only=False).reshape(-1, F)
                missing_x = missing_x | col.is_null().to_numpy(zero_copy_only=False)[:, None]
                x = values.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, F)
                x[missing_x] = np.nan
            else:
                x = values.to_numpy(zero_copy_only=True).reshape(-1, F)
        else:
            cols = [batch.column(n) for n in self.feature_names]
            x = batch.select(list(self.feature_names)).to_tensor(null_to_nan=True).to_numpy()
            if any(col.null_count for col in cols):
                missing_x = np.stack([col.is_null().to_numpy(zero_copy_only=False) for col in cols], axis=1)
        y = keys = times = missing = missing_time = None
        if self.several_targets:
            y, missing_y = self._read_targets(batch)
        elif c.target is not None:
            tcol = batch.column(self.target_names[0])
            y = tcol.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            if tcol.null_count:
                missing_y = tcol.is_null().to_numpy(zero_copy_only=False)
        if c.key is not None:
            kc = batch.column(c.key)
            keys = EncodedKeys.from_arrow(kc)  # no Python object per row from here on
            if kc.null_count:
                missing = keys.null_mask()
        if c.time is not None:
            tc = batch.column(c.time)
            times = tc.to_numpy(zero_copy_only=False)
            if tc.null_count:
                missing_time = tc.is_null().to_numpy(zero_copy_only=False)
        ids = missing_id = None
        if c.id is not None:
            ic = batch.column(c.id)
            if ic.null_count:  # objects, so the other ids stay integers (numpy would make them floats)
                ids = np.array(ic.to_pylist(), dtype=object)
                missing_id = ic.is_null().to_numpy(zero_copy_only=False)
            else:
                ids = ic.to_numpy(zero_copy_only=False)
        return Events(x=x, y=y, keys=keys, times=times, missing_key=missing, missing_time=missing_time,
                      missing_x=missing_x, missing_y=missing_y, ids=ids, missing_id=missing_id)


    def _read_targets(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
        """Several targets: ``y [N, T]`` float64 (NaN where null) and the rows with a null target."""
        T = self.n_targets
        if self.target_list:
            col = batch.column(self.target_names[0])
            values = col.values.slice(col.offset * T, len(col) * T)
            y = values.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, T)
            if not (col.null_count or values.null_count):
                return y, None
            null = values.is_null().to_numpy(zero_copy_only=False).reshape(-1, T)
            null |= col.is_null().to_numpy(zero_copy_only=False)[:, None]
            y[null] = np.nan  # a null list's slots hold whatever the buffer holds
        else:  # null_to_nan: y is NaN where null
            cols = [batch.column(n) for n in self.target_names]
            y = np.ascontiguousarray(batch.select(list(self.target_names)).to_tensor(null_to_nan=True).to_numpy(),
                                     dtype=np.float64)
            if not any(col.null_count for col in cols):
                return y, None
            null = np.stack([col.is_null().to_numpy(zero_copy_only=False) for col in cols], axis=1)
        return y, null.any(axis=1)


# ---------------------------------------------------------------------- sources
def _from(batches: Iterable[pa.RecordBatch], start: Position) -> Iterator[tuple[Position, pa.RecordBatch]]:
    for i, b in enumerate(batches):
        if i < start.batch:
            continue
        offset = start.row if i == start.batch else 0
        if offset >= b.num_rows:
            continue
        yield Position(i, offset), (b.slice(offset) if offset else b)


class TableSource(Source):
    """An in-memory ``pa.Table``, in batches of at most ``batch_size`` rows (fixed, so positions are stable)."""

    def __init__(self, table: pa.Table, batch_size: int = 4096) -> None:
        if batch_size < 1:
            raise ConfigError(f"TableSource.batch_size = {batch_size!r} must be >= 1.")
        self.table, self.batch_size, self.schema = table, batch_size, table.schema

    def batches(self, start: Position = Position()) -> Iterator[tuple[Position, pa.RecordBatch]]:
        return _from(self.table.to_batches(max_chunksize=self.batch_size), start)


class BatchesSource(Source):
    """A re-iterable sequence of record batches (e.g. a list)."""

    def __init__(self, batches: Sequence[pa.RecordBatch]) -> None:
        self._batches = list(batches)
        if not self._batches:
            raise ConfigError("BatchesSource needs at least one record batch (its schema defines the stream).")
        self.schema = self._batches[0].schema

    def batches(self, start: Position = Position()) -> Iterator[tuple[Position, pa.RecordBatch]]:
        return _from(self._batches, start)


class IpcFileSource(Source):
    """An Arrow IPC file, memory-mapped: batches are read in place, positions are exact."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._reader = pa.ipc.open_file(pa.memory_map(str(self.path), "r"))
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"{self.path}: not a readable Arrow IPC file ({exc}).") from None
        self.schema = self._reader.schema

    def batches(self, start: Position = Position()) -> Iterator[tuple[Position, pa.RecordBatch]]:
        r = self._reader
        return _from((r.get_batch(i) for i in range(r.num_record_batches)), start)


class IpcStreamSource(Source):
    """An Arrow IPC stream from a file, or from standard input with ``"-"``. A stream cannot seek:
    resuming reads (and skips) the batches before the start position; stdin can be read once."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            self._stdin = pa.ipc.open_stream(sys.stdin.buffer) if self.path == "-" else None
            self.schema = self._stdin.schema if self._stdin is not None else self._reader().schema
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"{self.path}: not a readable Arrow IPC stream ({exc}).") from None

    def _reader(self) -> pa.ipc.RecordBatchStreamReader:
        return pa.ipc.open_stream(pa.OSFile(self.path, "r"))

    def batches(self, start: Position = Position()) -> Iterator[tuple[Position, pa.RecordBatch]]:
        return _from(self._stdin if self._stdin is not None else self._reader(), start)


class ParquetSource(Source):
    """A Parquet file or a directory dataset (``pyarrow.dataset``), in its stored batch order."""

    def __init__(self, path: str | Path, batch_size: int = 65_536) -> None:
        import pyarrow.dataset as ds

        self.path = Path(path)
        try:
            self._dataset = ds.dataset(str(self.path), format="parquet")
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConfigError(f"{self.path}: not a readable Parquet file or dataset ({exc}).") from None
        self.batch_size = batch_size
        self.schema = self._dataset.schema

    def batches(self, start: Position = Position()) -> Iterator[tuple[Position, pa.RecordBatch]]:
        return _from(self._dataset.to_batches(batch_size=self.batch_size), start)


class SocketSource(Source):
    """An Arrow IPC stream read from a TCP connection, ``tcp://HOST:PORT``: the sender writes a stream
    (schema, then record batches) on every connection it accepts.

    A socket has no offsets: to resume at a checkpoint's position the source reconnects and skips
    the batches before it, which is exactly-once only if the sender replays the stream from its
    start on each connection (a recording server, a file served over TCP). A live feed that cannot
    replay belongs in Kafka (:mod:`psann_stream.adapters.kafka`).

    Args:
        address: ``tcp://HOST:PORT``.
        connect_timeout: seconds to wait for the connection and the schema.
        read_timeout: seconds a read may wait for the next bytes (``None``: forever).
    """

    def __init__(self, address: str, *, connect_timeout: float = 10.0, read_timeout: float | None = None) -> None:
        rest = address[len("tcp://"):] if address.startswith("tcp://") else ""
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"socket source {address!r}: expected tcp://HOST:PORT.")
        self.address, self.host, self.port = address, host.strip("[]"), int(port)
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._open: tuple[socket.socket, pa.ipc.RecordBatchStreamReader] | None = self._connect()
        self.schema = self._open[1].schema

    def _connect(self) -> tuple[socket.socket, pa.ipc.RecordBatchStreamReader]:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise ConfigError(f"socket source {self.address}: cannot connect ({exc}).") from None
        try:
            reader = pa.ipc.open_stream(pa.PythonFile(sock.makefile("rb"), mode="r"))
        except (OSError, pa.ArrowInvalid) as exc:
            sock.close()
            raise ConfigError(f"socket source {self.address}: the peer did not send an Arrow IPC stream ({exc}).") from None
        sock.settimeout(self.read_timeout)
        return sock, reader

    def batches(self, start: Position = Position()) -> Iterator[tuple[Position, pa.RecordBatch]]:
        sock, reader = self._open if self._open is not None else self._connect()
        self._open = None
        try:
            yield from _from(reader, start)
        except (OSError, pa.ArrowInvalid) as exc:
            raise PsannStreamError(
                f"socket source {self.address}: the stream broke off ({exc}). Nothing after the last checkpoint "
                "was committed; resume (--resume) once the sender is back and replays its stream."
            ) from None
        finally:
            sock.close()

    def close(self) -> None:
        """Close a connection opened for the schema and not read yet."""
        if self._open is not None:
            self._open[0].close()
            self._open = None


def open_source(
    spec: str | Path | pa.Table | Sequence[pa.RecordBatch],
) -> TableSource | BatchesSource | IpcFileSource | IpcStreamSource | ParquetSource | SocketSource:
    """A source for a table, a list of batches, ``"-"`` (IPC stream on stdin), ``tcp://HOST:PORT`` (an
    IPC stream from a socket), or a path: ``.parquet`` files and directories are Parquet, other files
    are tried as an IPC file, then as an IPC stream."""
    if isinstance(spec, pa.Table):
        return TableSource(spec)
    if isinstance(spec, (list, tuple)):
        return BatchesSource(spec)
    if str(spec) == "-":
        return IpcStreamSource("-")
    if str(spec).startswith("tcp://"):
        return SocketSource(str(spec))
    p = Path(spec)
    if not p.exists():
        raise ConfigError(f"input {p} does not exist.")
    if p.is_dir() or p.suffix == ".parquet":
        return ParquetSource(p)
    try:
        return IpcFileSource(p)
    except ConfigError:
        return IpcStreamSource(p)
