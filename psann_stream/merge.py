"""Labels from a second source: events and labels read from two sources, merged by event time into
one stream for the engine's delayed labels (:mod:`psann_stream.delayed`).

:class:`MergedSource` yields the rows of both sources in time order: at each step it takes the
source whose next row is earlier (an event before a label at the same time) and yields the run of
its rows up to the other source's next time. The merge is deterministic (it depends on the data,
not on when rows arrive), so a resumed run reads exactly what an uninterrupted one would: its
position is both sources' positions, and both are committed after a checkpoint. Label rows are
given the events' schema (the columns the labels do not have are null: every feature, so the
engine reads them as labels).

Both sources must be of one kind (files/tables, or Kafka), each ordered by its time column; the
labels' columns must all be columns of the events, of the same types. With Kafka, both topics are
read to their ends as of the start (``until="end"``): a merge by time must see the other source's
next row before it yields, so following live topics is not supported yet.

>>> import pyarrow as pa
>>> from psann_stream.io import TableSource
>>> events = TableSource(pa.table({"t": [1, 3, 5], "x": [0.1, 0.2, 0.3], "y": pa.nulls(3, pa.float64()), "id": [0, 1, 2]}))
>>> labels = TableSource(pa.table({"t": [2, 6], "y": [1.0, 2.0], "id": [0, 1]}))
>>> rows = [r for _, b in MergedSource(events, labels, time="t").batches(MergedSource(events, labels, time="t").initial_position())
...         for r in b.to_pylist()]
>>> [(r["t"], r["id"], r["x"], r["y"]) for r in rows]
[(1, 0, 0.1, None), (2, 0, None, 1.0), (3, 1, 0.2, None), (5, 2, 0.3, None), (6, 1, None, 2.0)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from .errors import ConfigError

__all__ = ["MergedPosition", "MergedSource"]

EVENTS, LABELS = 0, 1


@dataclass(frozen=True)
class MergedPosition:
    """Where a merged run is: ``events`` and ``labels``, each source's next unread position. A
    yielded position also says which source the batch came from (``source``), where it starts there
    (``inner``) and how many rows that source's batch has left from there (``rows_left``: the batch
    yielded may be only the first of them)."""

    events: Any
    labels: Any
    source: int = -1
    inner: Any = None
    rows_left: int = 0

    def after(self, consumed: int, batch_rows: int) -> "MergedPosition":
        """Resume point after ``consumed`` rows of the batch yielded here."""
        moved = self.inner.after(consumed, self.rows_left)
        if self.source == EVENTS:
            return MergedPosition(moved, self.labels)
        return MergedPosition(self.events, moved)

    def to_state(self) -> dict[str, Any]:
        return {"events": self.events.to_state(), "labels": self.labels.to_state()}

    def where(self, row: int) -> str:
        return f"{'events' if self.source == EVENTS else 'labels'}: {self.inner.where(row)}"

    def output_columns(self, rows: np.ndarray) -> dict[str, pa.Array]:
        """``source`` (0 events, 1 labels), then the source's own position columns."""
        return {"source": pa.array(np.full(len(rows), self.source, dtype=np.int8)), **self.inner.output_columns(rows)}


class MergedSource:
    """Events and their labels from two sources, merged by the time column ``time`` (see the module
    doc). ``schema`` is the events' schema."""

    def __init__(self, events: Any, labels: Any, *, time: str) -> None:
        problems = []
        for name, src in (("events", events), ("labels", labels)):
            if src.schema.get_field_index(time) < 0:
                problems.append(f"the {name} source has no time column {time!r} (columns: {', '.join(src.schema.names)})")
        for f in labels.schema:
            i = events.schema.get_field_index(f.name)
            if i < 0:
                problems.append(f"label column {f.name!r} is not a column of the events ({', '.join(events.schema.names)})")
            elif not events.schema.field(i).type.equals(f.type):
                problems.append(f"label column {f.name!r} is {f.type}, but the events' {f.name!r} is "
                                f"{events.schema.field(i).type}")
        if type(events.initial_position()) is not type(labels.initial_position()):
            problems.append(f"the events ({type(events).__name__}) and the labels ({type(labels).__name__}) are "
                            "sources of different kinds; read both from files/tables, or both from Kafka")
        if problems:
            raise ConfigError("MergedSource: " + "; ".join(problems) + ".")
        self.events, self.labels, self.time = events, labels, time
        self.schema = events.schema

    def initial_position(self) -> MergedPosition:
        return MergedPosition(self.events.initial_position(), self.labels.initial_position())

    def position_from_state(self, state: object) -> MergedPosition:
        if not isinstance(state, dict) or set(state) != {"events", "labels"}:
            raise ConfigError(f"checkpoint position {state!r} is not a merged position ({{'events', 'labels'}}): was it "
                              "written for another source?")
        return MergedPosition(self.events.position_from_state(state["events"]),
                              self.labels.position_from_state(state["labels"]))

    def commit(self, position: MergedPosition) -> None:
        self.events.commit(position.events)
        self.labels.commit(position.labels)

    def close(self) -> None:
        for src in (self.events, self.labels):
            if hasattr(src, "close"):
                src.close()

    def _times(self, batch: pa.RecordBatch) -> np.ndarray:
        col = batch.column(self.time)
        if col.null_count:
            raise ConfigError(f"MergedSource: a row of the time column {self.time!r} is null; the merge orders rows by it.")
        return (col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col).to_numpy(zero_copy_only=False)

    def _as_event_rows(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        n = batch.num_rows
        cols = [batch.column(f.name) if batch.schema.get_field_index(f.name) >= 0 else pa.nulls(n, f.type)
                for f in self.schema]
        return pa.RecordBatch.from_arrays(cols, schema=self.schema)

    def batches(self, start: MergedPosition) -> Iterator[tuple[MergedPosition, pa.RecordBatch]]:
        its = [self.events.batches(start.events), self.labels.batches(start.labels)]
        heads = [next(it, None) for it in its]  # (position, batch) of each source's unread rows
        nxt = [start.events, start.labels]  # each source's next unread position
        while heads[EVENTS] is not None or heads[LABELS] is not None:
            times = [None if h is None else self._times(h[1]) for h in heads]
            if heads[LABELS] is None:
                s = EVENTS
            elif heads[EVENTS] is None:
                s = LABELS
            else:
                s = EVENTS if times[EVENTS][0] <= times[LABELS][0] else LABELS
            pos, batch = heads[s]
            m = batch.num_rows
            other = heads[1 - s]
            if other is None:
                k = m
            else:  # the run of rows up to the other's next time (events first at equal times)
                k = int(np.searchsorted(times[s], times[1 - s][0], side="right" if s == EVENTS else "left"))
                k = max(k, 1)
            piece = batch.slice(0, k) if k < m else batch
            if s == LABELS:
                piece = self._as_event_rows(piece)
            nxt[s] = pos
            yield MergedPosition(nxt[EVENTS], nxt[LABELS], s, pos, m), piece
            nxt[s] = pos.after(k, m)
            heads[s] = (pos.within(k), batch.slice(k)) if k < m else next(its[s], None)
