"""Engine overhead, measured in one run:

* rows/s of the event loop with a trivial learner on a memory-mapped Arrow IPC file, next to a raw
  pyarrow read of the same file;
* a keyed stream (``--keyed-rows`` rows, ``--keys`` distinct string keys, 4,096-row batches, a
  KeyedLearner with per-key weights): the engine's rate as a share of ``KeyedLearner.learn_batch``
  on the same events handed over as numpy arrays, and how many Python objects reading a batch
  creates per row (``sys.getallocatedblocks`` while the batch's events are held).

Run: ``python -m psann_stream.scenarios.bench_engine [--rows 4000000] [--batch 65536]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from psann_stream import ColumnMap, KeyedLearner, StatefulNet
from psann_stream.engine import Engine
from psann_stream.io import IpcFileSource


class TrivialLearner:
    """Predicts 0 and learns nothing: what remains is the engine's own cost."""

    in_features = 10
    alerts: list = []  # the engine forwards new monitor alerts; this learner has none

    def learn_batch(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        return np.zeros(len(X))

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


def keyed(rows: int, keys: int, repeats: int, batch: int = 4096) -> None:
    """The keyed comparison (module doc), printed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 10)).astype(np.float32)
    y = np.sin(x[:, 0]) + 0.1 * rng.standard_normal(rows)
    names = np.array([f"sensor-{i:05d}" for i in range(keys)], dtype=object)[rng.integers(0, keys, rows)]
    table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 10), "y": pa.array(y),
                      "key": pa.array(names, pa.string())})
    net = StatefulNet(10, hidden=(32, 32), seed=0)

    def learner() -> KeyedLearner:
        lrn = KeyedLearner(net, per_key_weights=True, threads=os.cpu_count(), monitor=False)
        lrn.learn_batch(names[:5000], x[:5000].astype(np.float64), y[:5000])  # compile outside the timing
        return lrn

    X64 = x.astype(np.float64)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "keyed.arrow"
        with pa.ipc.new_file(str(path), table.schema) as w:
            for b in table.to_batches(max_chunksize=batch):
                w.write_batch(b)
        bound = ColumnMap("x", target="y", key="key").bind(table.schema)
        first = table.to_batches(max_chunksize=batch)[0]
        before = sys.getallocatedblocks()
        held = bound.read(first)
        per_row = (sys.getallocatedblocks() - before) / first.num_rows
        del held
        direct = engine = 0.0
        for _ in range(repeats):
            lrn = learner()
            t = time.perf_counter()
            for lo in range(0, rows, batch):
                lrn.learn_batch(names[lo:lo + batch], X64[lo:lo + batch], y[lo:lo + batch])
            direct = max(direct, rows / (time.perf_counter() - t))
            lrn = learner()
            t = time.perf_counter()
            Engine(IpcFileSource(path), lrn, ColumnMap("x", target="y", key="key")).run()
            engine = max(engine, rows / (time.perf_counter() - t))
    print(f"KeyedLearner.learn_batch, {keys:,} string keys (numpy arrays){direct:14,.0f} rows/s")
    print(f"Engine over the Arrow file, same learner       {engine:14,.0f} rows/s  {engine / direct:6.2f}x learn_batch")
    print(f"reading a {batch:,}-row batch: {per_row:.3f} new Python objects per row (keys encoded once)")
    print(f"{rows:,} rows, {keys:,} keys with their own weights, 10 float32 features, batches of {batch:,} rows")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keyed-rows", type=int, default=1_000_000)
    p.add_argument("--keys", type=int, default=10_000)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stream.arrow"
        rng = np.random.default_rng(0)
        x = rng.standard_normal((a.rows, 10)).astype(np.float32)
        table = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 10),
                          "y": pa.array(rng.standard_normal(a.rows))})
        with pa.ipc.new_file(str(path), table.schema) as w:
            for b in table.to_batches(max_chunksize=a.batch):
                w.write_batch(b)
        del table, x

        def raw() -> int:
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
            n = 0
            for i in range(reader.num_record_batches):
                b = reader.get_batch(i)
                xs = b.column("x").flatten().to_numpy().reshape(-1, 10)
                ys = b.column("y").to_numpy()
                n += xs.shape[0] + 0 * ys.shape[0]
            return n

        def engine() -> int:
            return Engine(IpcFileSource(path), TrivialLearner(), ColumnMap("x", target="y")).run().rows_in

        rates = {}
        for name, fn in (("raw pyarrow read (memory-mapped, to numpy)", raw), ("Engine, trivial learner, no output", engine)):
            best = 0.0
            for _ in range(a.repeats):
                t = time.perf_counter()
                n = fn()
                best = max(best, n / (time.perf_counter() - t))
            rates[name] = best
        base = rates["raw pyarrow read (memory-mapped, to numpy)"]
        for name, r in rates.items():
            print(f"{name:<45} {r:14,.0f} rows/s  {r / base:6.2f}x raw")
        print(f"{a.rows:,} rows, 10 float32 features + target, batches of {a.batch:,} rows")
    if a.keyed_rows:
        keyed(a.keyed_rows, a.keys, a.repeats)


if __name__ == "__main__":
    main()
