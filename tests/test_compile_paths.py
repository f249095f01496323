"""The compiled loop computes the same bits however numba produced it: compiled in this process, loaded
from its disk cache, or mixed (a caller compiled fresh around callees loaded from the cache, which LLVM
then cannot inline). Fast-math flags that let LLVM fuse or reorder weight arithmetic break this: the
weights then depend on inlining, and two processes of one run (Ray shards, a resumed run) part ways."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from psann_stream import KeyedLearner, Learner, StatefulNet
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 4)); y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    keys = rng.integers(0, 3, 400)
    def single():
        return Learner(StatefulNet(4, hidden=(6, 5), seed=0)).learn_batch(X, y)
    def keyed():
        return KeyedLearner(StatefulNet(4, hidden=(6, 5), seed=0), per_key_weights=True).learn_batch(keys, X, y)
    first, second = (single, keyed) if sys.argv[2] == "single-first" else (keyed, single)
    out = {first.__name__: first(), second.__name__: second()}
    np.savez(sys.argv[1], **out)
    """
)


def _run(tmp_path, cache, order: str) -> dict:
    out = tmp_path / f"{order}-{len(list(tmp_path.iterdir()))}.npz"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(out), order], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_predictions_do_not_depend_on_how_the_loop_was_compiled(tmp_path):
    cache = tmp_path / "numba-cache"
    runs = tmp_path / "runs"
    runs.mkdir()
    cold = _run(runs, cache, "keyed-first")  # everything compiled here, callees first via the keyed loop
    mixed = _run(runs, cache, "single-first")  # the single-stream loop compiled around cached callees
    warm = _run(runs, cache, "keyed-first")  # everything from the cache
    for name in ("single", "keyed"):
        assert np.isfinite(cold[name]).all()
        np.testing.assert_array_equal(mixed[name], cold[name], err_msg=name)
        np.testing.assert_array_equal(warm[name], cold[name], err_msg=name)
