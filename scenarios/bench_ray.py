"""Scale-out throughput: the engine with 2 Ray shards next to the single-process engine, on the same
keyed stream in 4096-row batches, measured in one run (``ray.init(num_cpus=2)``; start-up and
compilation are excluded by warm-up runs).

Run: ``python -m psann_stream.scenarios.bench_ray [--rows 400000] [--keys 1000] [--shards 2]``
(needs ``pip install 'psann-stream[ray]'``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from psann_stream import ColumnMap, KeyedLearner, StatefulNet
from psann_stream.engine import Engine
from psann_stream.io import TableSource

F = 10


def _stream(rows: int, keys: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, rows)
    x = rng.standard_normal((rows, F)).astype(np.float32)
    y = np.sin(x[:, :3].astype(np.float64).sum(axis=1) + 0.01 * k)
    return pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F), "y": y, "k": k})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=4)
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from psann_stream.adapters.ray import ShardedLearner

    table = _stream(a.rows, a.keys)
    warm = _stream(2 * a.batch, 8, seed=1)
    warm = warm.set_column(2, "k", pa.compute.subtract(pa.scalar(-1), warm["k"]))  # keys -1..-8: not in the stream
    columns = ColumnMap("x", target="y", key="k")

    def net() -> StatefulNet:
        return StatefulNet(F, hidden=(32, 32), seed=0)

    def timed(learner, **kw) -> float:
        Engine(TableSource(warm, a.batch), learner, columns, **kw).run()  # compile / import in every process
        t = time.perf_counter()
        n = Engine(TableSource(table, a.batch), learner, columns, **kw).run().rows_in
        return n / (time.perf_counter() - t)

    rates = {
        "single process, KeyedLearner (numba threads: all cores)": timed(KeyedLearner(net(), per_key_weights=True)),
        "single process, KeyedLearner (1 thread)": timed(KeyedLearner(net(), per_key_weights=True, threads=1)),
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        sharded = ShardedLearner(net(), a.shards, num_cpus=min(1.0, cpus / a.shards))
        try:
            rates[f"Ray, {a.shards} shards (1 thread each), {a.in_flight} batches in flight"] = timed(
                sharded, max_in_flight=a.in_flight)
        finally:
            sharded.close()
    finally:
        ray.shutdown()
    base = next(iter(rates.values()))
    for name, r in rates.items():
        print(f"{name:<62} {r:12,.0f} rows/s  {r / base:5.2f}x")
    print(f"{a.rows:,} rows, {a.keys:,} keys with their own weights, {F} features, 32x32 StatefulNet, "
          f"batches of {a.batch:,} rows, {os.cpu_count()} CPU(s)")


if __name__ == "__main__":
    main()
