"""Engine overhead: rows/s of the event loop with a trivial learner on a memory-mapped Arrow IPC
file, next to a raw pyarrow read of the same file, measured in one run.

Run: ``python -m psann_stream.scenarios.bench_engine [--rows 4000000] [--batch 65536]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from psann_stream import ColumnMap
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--batch", type=int, default=65_536)
    p.add_argument("--repeats", type=int, default=3)
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


if __name__ == "__main__":
    main()
