"""Kafka as a partitioned, replayable source (confluent-kafka), and a producer helper.

Each message value is an Arrow IPC stream (schema + one or more record batches: one micro-batch per
message), decoded without copying the message buffer. :class:`KafkaSource` reads the partitions of
one topic with ``assign()`` (no consumer-group rebalancing: the engine owns the offsets) and yields
``(KafkaPosition, RecordBatch)``. A :class:`KafkaPosition` holds, for every partition, the next
offset to read and how many rows of that message were already processed, so a checkpoint resumes
inside a message. The checkpoint is the source of truth for where to resume; offsets are committed
to the consumer group only *after* a checkpoint that covers them (:meth:`KafkaSource.commit`, called
by the engine), so the group's committed offsets show real progress (lag) and never run ahead of
the saved state.

Order: Kafka keeps order within a partition, not across partitions. :func:`produce_table` puts every
key in one partition (:func:`~psann_stream.keys.shard_of` of the key, so the same key always
lands in the same partition), so each key's events are learned in their order; with per-key weights
the predictions do not depend on how partitions interleave.

Needs ``pip install 'psann-stream[kafka]'``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa

from psann_stream.errors import BadInputError, ConfigError, PsannStreamError
from psann_stream.io import Source
from psann_stream.keys import EncodedKeys, shard_of

__all__ = ["KafkaPosition", "KafkaSink", "KafkaSource", "create_topic", "produce_table", "read_predictions"]


def _kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise ConfigError(
            "the Kafka adapter needs confluent-kafka: pip install 'psann-stream[kafka]' "
            "(or pip install 'confluent-kafka>=2.16,<2.17')."
        ) from None
    return confluent_kafka


# librdkafka settings whose values are secrets (sasl.password, ssl.key.password, ssl.key.pem,
# sasl.oauthbearer.client.secret, sasl.jaas.config, ...): never shown in an error or a log line.
_SECRET_MARKERS = ("password", "secret", "token", "jaas", "key.pem", "private", "credential")


def redact(text: str, config: Mapping[str, Any] | None) -> str:
    """``text`` with the value of every secret setting in ``config`` replaced by ``***`` (librdkafka
    echoes a rejected value, e.g. a password pasted into the wrong setting).

    >>> redact('Invalid value "hunter2" for "security.protocol"', {"sasl.password": "hunter2"})
    'Invalid value "***" for "security.protocol"'
    """
    for key, value in (config or {}).items():
        if any(m in str(key).lower() for m in _SECRET_MARKERS) and str(value):
            text = text.replace(str(value), "***")
    return text


def _client(kind: str, config: Mapping[str, Any], where: str) -> Any:
    """A confluent-kafka ``Consumer`` or ``Producer``; a rejected setting becomes a ConfigError that
    names it, with secret values redacted."""
    ck = _kafka()
    try:
        return getattr(ck, kind)(dict(config))
    except (ck.KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: librdkafka refused the {kind.lower()} settings: {redact(str(exc), config)} "
                          "(settings: https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md).") from None


@dataclass(frozen=True)
class KafkaPosition:
    """Where a Kafka source is: ``offsets`` = ``((partition, next offset, rows done in it), ...)`` by
    partition. A yielded position also names the message it starts (``partition``, ``offset``,
    ``row``: rows of that message already processed before this batch)."""

    topic: str
    offsets: tuple[tuple[int, int, int], ...]
    partition: int = -1
    offset: int = -1
    row: int = 0

    def after(self, consumed: int, batch_rows: int) -> KafkaPosition:
        """Resume point after ``consumed`` of the ``batch_rows`` rows yielded at this position."""
        done = consumed == batch_rows
        entry = (self.partition, self.offset + 1, 0) if done else (self.partition, self.offset, self.row + consumed)
        return KafkaPosition(self.topic, tuple(entry if p == self.partition else (p, o, r) for p, o, r in self.offsets))

    def within(self, rows: int) -> KafkaPosition:
        """The position of the rest of the message yielded here, ``rows`` rows further."""
        return KafkaPosition(self.topic, self.after(rows, rows + 1).offsets, self.partition, self.offset, self.row + rows)

    def to_state(self) -> dict[str, Any]:
        return {"topic": self.topic, "offsets": [list(e) for e in self.offsets]}

    def where(self, row: int) -> str:
        return f"topic {self.topic!r}, partition {self.partition}, offset {self.offset}, row {self.row + row}"

    def output_columns(self, rows: np.ndarray) -> dict[str, pa.Array]:
        n = len(rows)
        return {
            "partition": pa.array(np.full(n, self.partition, dtype=np.int32)),
            "offset": pa.array(np.full(n, self.offset, dtype=np.int64)),
            "row": pa.array(self.row + np.asarray(rows, dtype=np.int64)),
        }


def decode_message(value: bytes | None, where: str) -> pa.RecordBatch:
    """The rows of one message (an Arrow IPC stream) as one record batch; zero-copy for one batch."""
    if value is None:
        raise BadInputError(f"{where}: the message has no value; every message must hold an Arrow IPC stream.")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(value)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(
            f"{where}: the message value is not an Arrow IPC stream ({exc}). Produce messages with "
            "psann_stream.adapters.kafka.produce_table (or pyarrow.ipc.new_stream), or skip the offset."
        ) from None
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


class KafkaSource(Source):
    """The partitions of one Kafka topic as an engine source (see module doc).

    Args:
        bootstrap: ``HOST:PORT[,HOST:PORT...]`` of the brokers.
        topic: the topic; its messages hold Arrow IPC streams.
        partitions: the partitions to read (default: all of them).
        schema: the stream's schema; default: read from the first message of the topic.
        group_id: the consumer group whose committed offsets track progress.
        start: where a fresh run starts: ``"earliest"`` (every message still kept) or
            ``"committed"`` (the group's committed offsets, else earliest).
        until: ``"end"``: stop at the partitions' ends as of when reading starts (a replay or
            backfill); ``None``: read forever (stop with ``Engine.stop()`` or ``max_events``).
        poll_timeout: seconds one poll waits for a message.
        config: more librdkafka settings for the consumer.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: Sequence[int] | None = None,
        schema: pa.Schema | None = None,
        group_id: str = "psann-stream",
        start: Literal["earliest", "committed"] = "earliest",
        until: Literal["end"] | None = "end",
        poll_timeout: float = 1.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        ck = _kafka()
        if start not in ("earliest", "committed"):
            raise ConfigError(f"KafkaSource.start = {start!r} is not one of 'earliest', 'committed'.")
        if until not in ("end", None):
            raise ConfigError(f"KafkaSource.until = {until!r} is not 'end' or None.")
        self.bootstrap, self.topic, self.group_id = bootstrap, topic, group_id
        self.start, self.until, self.poll_timeout = start, until, float(poll_timeout)
        self._config = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **dict(config or {}),
        }
        self._consumer: Any = None
        probe = _client("Consumer", self._config, f"Kafka at {bootstrap}")
        try:
            meta = probe.list_topics(topic, timeout=10)
            info = meta.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                raise ConfigError(
                    f"Kafka topic {topic!r} at {bootstrap} does not exist or has no partitions "
                    f"({None if info is None else info.error}); create it first (create_topic)."
                )
            available = sorted(info.partitions)
            self.partitions = available if partitions is None else sorted(int(p) for p in partitions)
            missing = set(self.partitions) - set(available)
            if missing:
                raise ConfigError(f"Kafka topic {topic!r} has partitions {available}; {sorted(missing)} do not exist.")
            self._low = {}
            for p in self.partitions:
                low, _ = probe.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)
                self._low[p] = max(int(low), 0)
            self._committed = {}
            if start == "committed":
                for tp in probe.committed([ck.TopicPartition(topic, p) for p in self.partitions], timeout=10):
                    if tp.offset >= 0:
                        self._committed[tp.partition] = int(tp.offset)
            self.schema = schema if schema is not None else self._first_schema(probe)
        except ck.KafkaException as exc:
            raise ConfigError(f"Kafka at {bootstrap}: {redact(str(exc), self._config)}") from None
        finally:
            probe.close()

    def _first_schema(self, consumer: Any) -> pa.Schema:
        ck = _kafka()
        consumer.assign([ck.TopicPartition(self.topic, p, self._low[p]) for p in self.partitions])
        deadline = time.monotonic() + max(10.0, self.poll_timeout)
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            return decode_message(msg.value(), f"topic {self.topic!r}, partition {msg.partition()}, offset {msg.offset()}").schema
        raise ConfigError(
            f"Kafka topic {self.topic!r} has no message to read the schema from; pass KafkaSource(schema=...)."
        )

    # ------------------------------------------------------------------ positions
    def initial_position(self) -> KafkaPosition:
        return KafkaPosition(self.topic, tuple((p, self._committed.get(p, self._low[p]), 0) for p in self.partitions))

    def position_from_state(self, state: object) -> KafkaPosition:
        try:
            topic = state["topic"]  # type: ignore[index]
            offsets = tuple((int(p), int(o), int(r)) for p, o, r in state["offsets"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"checkpoint position {state!r} is not a Kafka position: was it written for another source?") from None
        if topic != self.topic or sorted(p for p, _, _ in offsets) != self.partitions:
            raise ConfigError(
                f"the checkpoint was taken reading topic {topic!r} partitions {sorted(p for p, _, _ in offsets)}; this "
                f"source reads {self.topic!r} partitions {self.partitions}. Resume with the same topic and partitions."
            )
        return KafkaPosition(topic, offsets)

    # ------------------------------------------------------------------ reading
    def batches(self, start: KafkaPosition) -> Iterator[tuple[KafkaPosition, pa.RecordBatch]]:
        ck = _kafka()
        self.close()
        consumer = self._consumer = _client("Consumer", self._config, f"Kafka at {self.bootstrap}")
        next_offset = {p: o for p, o, _ in start.offsets}
        skip_rows = {p: r for p, o, r in start.offsets if r}
        end = {}
        if self.until == "end":
            for p in self.partitions:
                _, high = consumer.get_watermark_offsets(ck.TopicPartition(self.topic, p), timeout=10)
                end[p] = int(high)
        live = [p for p in self.partitions if self.until is None or next_offset[p] < end[p]]
        if not live:
            return
        consumer.assign([ck.TopicPartition(self.topic, p, next_offset[p]) for p in live])
        pos = start
        while live:
            msg = consumer.poll(self.poll_timeout)
            if msg is None:
                continue
            if msg.error() is not None:
                raise PsannStreamError(
                    f"Kafka topic {self.topic!r} at {self.bootstrap}: {msg.error()}. The run stopped; nothing after "
                    "its last checkpoint was committed, so once the broker is reachable again run it with resume "
                    "(--resume) to continue exactly where it was."
                )
            p, o = msg.partition(), msg.offset()
            if p not in next_offset or o < next_offset[p]:
                continue  # a message before the resume point (a broker may deliver from the batch start)
            row = skip_rows.pop(p, 0) if o == next_offset[p] else 0
            where = f"topic {self.topic!r}, partition {p}, offset {o}"
            batch = decode_message(msg.value(), where)
            here = replace(pos, partition=p, offset=o, row=row)
            next_offset[p] = o + 1
            yield here, (batch.slice(row) if row else batch)
            pos = here.after(0, 0)  # the whole message is behind us
            if self.until == "end" and next_offset[p] >= end[p]:
                live.remove(p)
                consumer.incremental_unassign([ck.TopicPartition(self.topic, p)])

    def lag(self, position: KafkaPosition) -> dict[int, int]:
        """Messages per partition from ``position`` (the engine's next unread row) to the end of the
        partition as the broker has it now: how far the run is behind its input. Empty while no
        consumer is open (before the run, after :meth:`close`). Safe to call from another thread
        (the metrics endpoint): it asks the broker for watermarks, it does not poll."""
        consumer = self._consumer
        if consumer is None:
            return {}
        ck = _kafka()
        out = {}
        for p, nxt, _ in position.offsets:
            try:
                _, high = consumer.get_watermark_offsets(ck.TopicPartition(self.topic, p), timeout=2)
            except (ck.KafkaException, RuntimeError):  # closed meanwhile, or the broker is away: no number
                continue
            out[int(p)] = max(int(high) - int(nxt), 0)
        return out

    def commit(self, position: KafkaPosition) -> None:
        """Commit ``position``'s offsets (the first message not fully processed, per partition) to
        the consumer group; called by the engine after each checkpoint."""
        if self._consumer is None:
            return
        ck = _kafka()
        self._consumer.commit(offsets=[ck.TopicPartition(self.topic, p, o) for p, o, _ in position.offsets],
                              asynchronous=False)

    def close(self) -> None:
        """Close the consumer (the engine's reads open a new one)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


# ---------------------------------------------------------------------- writing
class KafkaSink:
    """Prediction rows to a Kafka topic: an :class:`~psann_stream.sinks.OutputSink` of the engine.

    At every checkpoint the rows since the last one are produced and flushed (all acknowledged by the
    broker) before the checkpoint is written: ``fmt="arrow"`` sends one Arrow IPC stream per key
    and commit with the key as the message key (rows without a key column: one message per
    commit, round robin), ``fmt="json"`` one JSON object per row with its key. A key's messages go
    to partition ``shard_of(key, partitions)``, so each key's predictions stay in order.

    **At least once plus dedupe, not transactions.** The producer is idempotent (no duplicates from
    its own retries). A crash after a flush and before the checkpoint repeats, on resume, the rows
    since the last checkpoint: the engine recomputes them bit for bit, and every row carries its
    source position (``batch, row`` for files; ``partition, offset, row`` for a Kafka source), so a
    consumer keeps the first row per position (:func:`read_predictions` does). Kafka transactions
    would make the output exactly once for ``read_committed`` consumers; the broker the tests run
    does not hide aborted messages from them (measured, docs/scale-out.md), so that path could not be
    tested here and is not offered.
    """

    exact = False

    def __init__(self, bootstrap: str, topic: str, *, fmt: Literal["arrow", "json"] = "arrow",
                 config: Mapping[str, Any] | None = None) -> None:
        if fmt not in ("arrow", "json"):
            raise ConfigError(f"KafkaSink.fmt = {fmt!r} is not 'arrow' or 'json'.")
        self.bootstrap, self.topic, self.fmt = bootstrap, topic, fmt
        settings = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                    **dict(config or {})}
        self._settings = settings
        self._producer = _client("Producer", settings, f"Kafka at {bootstrap}")
        meta = self._producer.list_topics(timeout=10)  # all topics: asking for one may auto-create it
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise ConfigError(f"Kafka output topic {topic!r} at {bootstrap} does not exist; create it first "
                              "(create_topic, or your cluster's tools).")
        self.partitions = len(info.partitions)
        self.count = 0
        self.pending: list[pa.RecordBatch] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.pending.append(batch)

    def truncate(self, count: int) -> None:
        """A topic keeps what was produced: forget only the unflushed rows (the engine recomputes them)."""
        self.count = count
        self.pending = []

    def commit(self) -> pa.Table | None:
        if not self.pending:
            return None
        table = pa.Table.from_batches(self.pending)
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for key, part in self._messages(table):
            partition = None if key is None else shard_of(key, self.partitions)
            kw = {} if partition is None else {"partition": partition}
            payload = part if isinstance(part, (bytes, str)) else _ipc_bytes(part)
            while True:
                try:
                    self._producer.produce(self.topic, value=payload, key=None if key is None else str(key),
                                           on_delivery=delivered, **kw)
                    break
                except BufferError:  # the local queue is full: let it drain
                    self._producer.poll(0.1)
        left = self._producer.flush(30)
        if errors or left:
            raise PsannStreamError(
                f"Kafka output topic {self.topic!r} at {self.bootstrap}: {left} message(s) undelivered"
                f"{', ' + redact(errors[0], self._settings) if errors else ''}. No checkpoint was written; resume "
                "(--resume) when the broker is reachable: the rows since the last checkpoint are produced again.")
        self.count += 1
        self.pending = []
        return table

    def _messages(self, table: pa.Table) -> Iterator[tuple[Any, Any]]:
        has_key = "key" in table.column_names
        if self.fmt == "json":
            for row in table.to_pylist():
                yield (row["key"] if has_key else None), json.dumps(row, default=str)
            return
        if not has_key:
            yield None, table.combine_chunks().to_batches()[0]
            return
        keys = EncodedKeys.from_arrow(table.column("key"))  # codes in order of first appearance
        order = np.argsort(keys.codes, kind="stable")  # each key's rows, in order, key after key
        starts = np.flatnonzero(np.diff(keys.codes[order], prepend=-2))
        for lo, hi in zip(starts.tolist(), starts[1:].tolist() + [len(order)]):
            yield keys[int(order[lo])], table.take(pa.array(order[lo:hi])).combine_chunks().to_batches()[0]

    def close(self) -> None:
        self._producer.flush(30)


def read_predictions(bootstrap: str, topic: str, *, timeout: float = 10.0) -> pa.Table:
    """Every prediction row in ``topic`` (as :class:`KafkaSink` wrote it, either format), with the
    repeats a crash produced dropped: the first row per source position (the output's position
    columns) is kept. Reads to the partitions' current ends."""
    ck = _kafka()
    consumer = _client("Consumer", {"bootstrap.servers": bootstrap, "group.id": "psann-stream-read-predictions",
                                    "enable.auto.commit": False}, f"Kafka at {bootstrap}")
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        parts = sorted(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=timeout)[1] for p in parts}
        consumer.assign([ck.TopicPartition(topic, p, 0) for p in parts if ends[p] > 0])
        tables, rows, left = [], [], {p: e for p, e in ends.items() if e > 0}
        while left:
            msg = consumer.poll(timeout)
            if msg is None:
                raise PsannStreamError(f"read_predictions: no message from {topic!r} within {timeout} s; "
                                       f"{sum(left.values())} expected.")
            if msg.error() is not None:
                raise PsannStreamError(f"read_predictions: {msg.error()}")
            value = msg.value()
            if value[:1] == b"{":
                rows.append(json.loads(value))
            else:
                tables.append(pa.Table.from_batches([decode_message(value, f"{topic}/{msg.partition()}@{msg.offset()}")]))
            if msg.offset() + 1 >= ends[msg.partition()]:
                left.pop(msg.partition(), None)
    finally:
        consumer.close()
    table = pa.concat_tables(tables) if tables else pa.Table.from_pylist(rows)
    position = [c for c in ("partition", "offset", "batch", "row") if c in table.column_names]
    seen, keep = set(), []
    for i, pos in enumerate(zip(*(table.column(c).to_pylist() for c in position))):
        if pos not in seen:
            seen.add(pos)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))


def create_topic(bootstrap: str, topic: str, partitions: int, *, timeout: float = 10.0) -> None:
    """Create ``topic`` with ``partitions`` partitions (an error if it exists)."""
    ck = _kafka()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        futures[topic].result(timeout)
    except ck.KafkaException as exc:
        raise ConfigError(f"cannot create Kafka topic {topic!r} at {bootstrap}: {exc}") from None


def _ipc_bytes(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue()


def produce_table(bootstrap: str, topic: str, table: pa.Table, *, key: str | None = None, partitions: int | None = None,
                  batch_size: int = 4096, config: Mapping[str, Any] | None = None) -> int:
    """Write ``table`` to ``topic`` as messages of Arrow IPC streams of at most ``batch_size`` rows;
    returns the number of messages. With ``key``, rows go to partition
    ``shard_of(row key, partitions)`` (row order kept within each partition, rows selected with
    ``take``); without, batches go round robin. Idempotent producer, ``acks=all``; flushed before
    returning."""
    ck = _kafka()
    producer = _client("Producer", {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                                    "linger.ms": 5, **dict(config or {})}, f"Kafka at {bootstrap}")
    if partitions is None:
        meta = producer.list_topics(topic, timeout=10)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise ConfigError(f"Kafka topic {topic!r} at {bootstrap} does not exist; create it first (create_topic).")
        partitions = len(info.partitions)
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    sent = 0
    for i, batch in enumerate(table.to_batches(max_chunksize=batch_size)):
        if key is None:
            targets = [(i % partitions, batch)]
        else:
            uniq, inverse = np.unique(batch.column(key).to_numpy(zero_copy_only=False), return_inverse=True)
            which = np.array([shard_of(k, partitions) for k in uniq.tolist()], dtype=np.int64)[inverse.reshape(-1)]
            targets = [(p, batch.take(pa.array(np.flatnonzero(which == p)))) for p in range(partitions)]
        for p, part in targets:
            if part.num_rows:
                producer.produce(topic, value=_ipc_bytes(part).to_pybytes(), partition=p, on_delivery=delivered)
                sent += 1
                producer.poll(0)
    left = producer.flush(30)
    if errors or left:
        raise PsannStreamError(f"producing to Kafka topic {topic!r} failed: {errors[:3]} ({left} message(s) undelivered).")
    return sent
