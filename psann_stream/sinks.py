"""Where prediction rows go: the :class:`OutputSink` protocol the engine writes to, and
:class:`PartsSink`, a directory of atomically written part files (the Kafka sink is
:class:`psann_stream.adapters.kafka.KafkaSink`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pyarrow as pa

from .errors import ConfigError
from .files import atomic_write

__all__ = ["OutputSink", "PartsSink", "read_parts"]


class OutputSink(Protocol):
    """Where prediction rows go. The engine calls ``write(batch)`` for each batch's rows (in order),
    ``commit()`` before every checkpoint (durably store the rows written since the last commit;
    return them as a table, or None if there were none), and, when a run starts or resumes,
    ``truncate(count)`` with the number of commits the checkpoint covers. ``count`` is the number
    of commits the sink holds. ``exact``: True if ``truncate`` removes what was committed after the
    checkpoint (part files: output exactly once with the input); False if it cannot (a Kafka topic:
    a crash repeats the rows after the last checkpoint, each carrying its source position, so a
    consumer drops the repeats: at least once plus dedupe).
    """

    count: int
    exact: bool

    def write(self, batch: pa.RecordBatch) -> None: ...

    def commit(self) -> pa.Table | None: ...

    def truncate(self, count: int) -> None: ...


class PartsSink:
    """A directory of part files ``part-00000000.arrow``, ... (Arrow IPC file or stream, or Parquet): rows
    are buffered and become the next part, written atomically (:func:`~psann_stream.files.atomic_write`),
    at commit. Exact: :meth:`truncate` removes the parts a checkpoint does not cover."""

    exact = True

    def __init__(self, directory: str | Path, fmt: str = "arrow") -> None:
        if fmt not in _SUFFIX:
            raise ConfigError(f"output format {fmt!r} is not one of {', '.join(map(repr, _SUFFIX))}.")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.pending: list[pa.RecordBatch] = []
        self.count = len(_part_files(self.dir))

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.pending.append(batch)

    def commit(self) -> pa.Table | None:
        """Write the pending rows as the next part (atomically); returns them (None if there were none)."""
        if not self.pending:
            return None
        table = pa.Table.from_batches(self.pending)
        final = self.dir / f"part-{self.count:08d}{_SUFFIX[self.fmt]}"

        def write(tmp: str) -> None:
            if self.fmt == "arrow":
                with pa.ipc.new_file(tmp, table.schema) as w:
                    w.write_table(table)
            elif self.fmt == "arrow-stream":
                with pa.ipc.new_stream(tmp, table.schema) as w:
                    w.write_table(table)
            else:
                import pyarrow.parquet as pq

                pq.write_table(table, tmp)

        atomic_write(final, write, prefix=".part-")
        self.count += 1
        self.pending = []
        return table

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` parts; delete later parts and temporary files (a crash's leftovers)."""
        for p in _part_files(self.dir)[count:]:
            p.unlink()
        for p in self.dir.glob(".part-*.tmp"):
            p.unlink()
        self.count = count
        self.pending = []


_SUFFIX = {"arrow": ".arrow", "arrow-stream": ".arrows", "parquet": ".parquet"}


def _part_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("part-*") if p.suffix in _SUFFIX.values())


def read_parts(directory: str | Path) -> pa.Table | None:
    """All committed part files of an output directory, in order, as one table (None if empty)."""
    tables = []
    for p in _part_files(Path(directory)):
        if p.suffix == ".arrow":
            tables.append(pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all())
        elif p.suffix == ".arrows":
            tables.append(pa.ipc.open_stream(pa.memory_map(str(p), "r")).read_all())
        else:
            import pyarrow.parquet as pq

            tables.append(pq.read_table(p))
    return pa.concat_tables(tables) if tables else None
