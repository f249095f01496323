"""Crash test: a keyed run killed with SIGKILL at random points and resumed gives exactly the output
and final model state of an uninterrupted run.

Run: ``python -m psann_stream.scenarios.crash_test [--rows 200000] [--trials 20] [--seed 0]``.
Each trial starts a worker process on the same Arrow IPC file, kills it (SIGKILL) after a random
delay, restarts it with ``resume=True``, and repeats until a worker finishes; then the committed
output rows and the final learner state must equal the reference run's bit for bit.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch


def write_stream(path: Path, rows: int, seed: int, keys: int = 50, batch: int = 4096) -> None:
    """A keyed stream: 4 features (fixed_size_list<float32>), target, string key."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, rows)
    x = (rng.standard_normal((rows, 4)) + k[:, None] / keys).astype(np.float32)
    y = np.sin(x.sum(axis=1) + k) + 0.05 * rng.standard_normal(rows)
    table = pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4),
        "y": pa.array(y),
        "key": pa.array([f"k{i}" for i in k]),
    })
    with pa.ipc.new_file(str(path), table.schema) as w:
        for b in table.to_batches(max_chunksize=batch):
            w.write_batch(b)


def run_engine(stream: Path, work: Path, *, resume: bool, every: int = 5000) -> None:
    from psann_stream import ColumnMap, KeyedLearner, StatefulNet
    from psann_stream.engine import CheckpointPolicy, Engine
    from psann_stream.io import IpcFileSource

    learner = KeyedLearner(StatefulNet(4, hidden=(8,), seed=0), per_key_weights=True, monitor=False, threads=1)
    engine = Engine(IpcFileSource(stream), learner, ColumnMap("x", target="y", key="key"),
                    output=work / "out", checkpoint=CheckpointPolicy(work / "ckpt", every_events=every))
    engine.run(resume=resume)


def final_state(work: Path) -> dict:
    from psann_stream.checkpoint import load_latest

    return load_latest(work / "ckpt")[1]["learner"]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", nargs=2, metavar=("STREAM", "WORKDIR"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        run_engine(Path(a.worker[0]), Path(a.worker[1]), resume=True)
        return 0
    from psann_stream.sinks import read_parts

    root = Path(tempfile.mkdtemp(prefix="psann-crash-"))
    try:
        stream = root / "stream.arrow"
        write_stream(stream, a.rows, a.seed)
        t = time.perf_counter()
        run_engine(stream, root / "reference", resume=False)
        ref_seconds = time.perf_counter() - t
        want, want_state = read_parts(root / "reference" / "out"), final_state(root / "reference")
        rng = random.Random(a.seed)
        kills = 0
        for trial in range(a.trials):
            work = root / f"trial{trial}"
            while True:
                proc = subprocess.Popen([sys.executable, "-m", "psann_stream.scenarios.crash_test", "--worker", str(stream), str(work)])
                try:
                    proc.wait(timeout=rng.uniform(0.5, 2.0 + 2 * ref_seconds))
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    continue
                if proc.returncode != 0:
                    print(f"trial {trial}: worker failed with exit code {proc.returncode}")
                    return 1
                break
            got = read_parts(work / "out")
            ok = got is not None and got.equals(want) and same(final_state(work), want_state)
            print(f"trial {trial}: {'identical' if ok else 'DIFFERENT'} ({got.num_rows if got is not None else 0} rows)", flush=True)
            if not ok:
                return 1
            shutil.rmtree(work)
        print(f"{a.trials} trials, {kills} SIGKILLs: every resumed run equals the uninterrupted one "
              f"({want.num_rows} rows, reference run {ref_seconds:.1f} s)")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
