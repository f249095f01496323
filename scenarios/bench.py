"""``psann-stream bench``: throughput, per-event latency and peak memory of psann_stream and the
baselines on the same stream, as ratios measured in one run.

Run: ``psann-stream bench [--events 20000]`` or ``python -m psann_stream.scenarios.bench``.

Every model learns the same synthetic 10-feature stream prequentially (predict, then learn each
event). Each runs in its own spawned process, so its peak memory is its own: the peak resident set
(``ru_maxrss``) after the run minus the peak after imports, data and warm-up (what learning itself
added). Rows:

* ``psann_stream learn_batch``: the default :class:`~psann_stream.learner.Learner` (32x32
  StatefulNet, ObGD, normalisers, monitor) learning the stream in batches of 1,000 events in exact
  per-event order; latency is a batch's time divided by its events;
* ``psann_stream learn_one``: the same learner called once per event (the per-event API): latency is
  each call's time;
* ``psann_stream recommended ...``: the same two with the scenario suite's recommended configuration
  (oscillatory state pairs, learned with exact traces through the state: ``scenarios.run.RECOMMENDED``);
* ``psann_stream ensemble ...``: the same two with :func:`~psann_stream.ensemble.default_ensemble`
  (its members and their mixture; members in threads);
* the baselines of :mod:`psann_stream.scenarios.baselines`, called once per event.

Slow models learn fewer events (``--slow-events``); rates are per event, so they compare. Machines
are shared and noisy: only ratios from one run mean anything.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

import numpy as np

__all__ = ["main", "measure"]

BATCH = 1000
SLOW = {"eager MLP (Adam)", "eager LSTM (Adam)", "river ARF"}


def _stream(n: int, f: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f))
    y = np.sin(X[:, 0] + 0.5 * X[:, 1]) + 0.3 * X[:, 2] * X[:, 3] + 0.05 * rng.standard_normal(n)
    return X, y


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure(name: str, n_events: int) -> dict:
    """Run model ``name`` on ``n_events`` events in this process: events/s, latency percentiles
    (microseconds), peak memory added (MiB)."""
    import torch

    torch.set_num_threads(1)
    from psann_stream import Learner, StateConfig, StatefulNet
    from psann_stream.ensemble import default_ensemble

    from .baselines import BASELINES, prequential
    from .run import RECOMMENDED

    X, y = _stream(n_events + 500)
    warm, (X, y) = (X[:500], y[:500]), (X[500:], y[500:])
    lat = np.empty(n_events)
    if name.startswith("psann_stream"):
        rec = "recommended" in name
        cfg = StateConfig.from_mapping({"mode": "trace", **RECOMMENDED["state"]}) if rec else StateConfig()
        kwargs = RECOMMENDED["learner"] if rec else {}

        def make(seed: int):
            if "ensemble" in name:
                return default_ensemble(10, seed=seed)
            return Learner(StatefulNet(10, hidden=(32, 32), state=cfg, seed=seed), **kwargs)

        make(1).learn_batch(*warm)  # compile the loops
        lrn = make(0)
        base = _peak_mb()
        t0 = time.perf_counter()
        if name.endswith("learn_batch"):
            for lo in range(0, n_events, BATCH):
                t = time.perf_counter()
                lrn.learn_batch(X[lo:lo + BATCH], y[lo:lo + BATCH])
                lat[lo:lo + BATCH] = (time.perf_counter() - t) / len(X[lo:lo + BATCH])
        else:
            for i in range(n_events):
                t = time.perf_counter()
                lrn.learn_one(X[i], float(y[i]))
                lat[i] = time.perf_counter() - t
    else:
        factory = BASELINES[name]
        prequential(factory(10), *warm, None)  # imports, first-call costs
        model = factory(10)
        base = _peak_mb()
        t0 = time.perf_counter()
        prequential(model, X, y, None, lat)
    seconds = time.perf_counter() - t0
    return {"events_per_s": n_events / seconds, "p50_us": float(np.percentile(lat, 50) * 1e6),
            "p99_us": float(np.percentile(lat, 99) * 1e6), "peak_mb": _peak_mb() - base, "events": n_events}


def _child(name: str, n: int, queue: mp.Queue) -> None:
    queue.put(measure(name, n))


def main(argv: list[str] | None = None) -> int:
    from .baselines import BASELINES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20_000, help="events for the fast models (default 20,000)")
    p.add_argument("--slow-events", type=int, default=1_000, help=f"events for {', '.join(sorted(SLOW))} (default 1,000)")
    a = p.parse_args(argv)
    names = ["psann_stream learn_batch", "psann_stream learn_one", "psann_stream recommended learn_batch",
             "psann_stream recommended learn_one", "psann_stream ensemble learn_batch", "psann_stream ensemble learn_one",
             *BASELINES]
    ctx = mp.get_context("spawn")
    rows = {}
    for name in names:
        q: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, a.slow_events if name in SLOW else a.events, q))
        proc.start()
        rows[name] = q.get()
        proc.join()
    mlp, lr = rows["eager MLP (Adam)"]["events_per_s"], rows["river LinearRegression"]["events_per_s"]
    print(f"{'model':<36} {'events/s':>11} {'x eager MLP':>12} {'x river LR':>11} {'p50 us':>9} {'p99 us':>9} {'peak MiB':>9}")
    for name, r in rows.items():
        print(f"{name:<36} {r['events_per_s']:11,.0f} {r['events_per_s'] / mlp:12.1f} {r['events_per_s'] / lr:11.2f} "
              f"{r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['peak_mb']:9.1f}")
    print(f"one run, {os.cpu_count()} CPU(s), torch 1 thread; 10 features; exact per-event prequential order; "
          f"{a.events:,} events ({a.slow_events:,} for the slow models); peak MiB = resident peak added by learning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
