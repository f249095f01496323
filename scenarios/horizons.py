"""Free-running against teacher-forced error over horizons after a state reset.

For an autoregressive stream (the inputs are the series' last values, ``x[t + 1] = (x[t][1:],
y[t])``) and a learner that has learned it: from each start ``t0``, reset the state, then predict
``horizon`` steps ahead either **teacher-forced** (each step gets the true inputs ``x[t0 + h]``) or
**free-running** (each step's prediction becomes the newest input of the next step). The mean
absolute error per step ``h`` shows how fast the reset state recovers (teacher-forced) and how fast
the model's own errors compound (free-running). Nothing is learned; the learner is restored after.

>>> import numpy as np
>>> from psann_stream import Learner, StatefulNet
>>> v = np.sin(np.arange(801) * 0.2)
>>> lrn = Learner(StatefulNet(1, hidden=(8,), seed=0))
>>> _ = lrn.learn_batch(v[:-1, None], v[1:])
>>> h = horizon_errors(lrn, v[:-1, None], v[1:], starts=[600, 700], horizon=5)
>>> len(h["teacher_forced"]), h["free_running"][0] == h["teacher_forced"][0]
(5, True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["horizon_errors"]


def horizon_errors(learner, X: np.ndarray, y: np.ndarray, starts: Sequence[int], horizon: int) -> dict:
    """Mean absolute error at each step ``h = 1..horizon`` after a state reset at every start (see
    module doc): ``{"h": [...], "teacher_forced": [...], "free_running": [...], "starts": n}``."""
    snapshot = learner.state_dict()
    forced, free = np.zeros(horizon), np.zeros(horizon)
    used = 0
    try:
        for t0 in starts:
            if t0 + horizon > len(y):
                continue
            used += 1
            learner.load_state_dict(snapshot)
            learner.reset(state=True)
            forced += np.abs(learner.predict_batch(X[t0:t0 + horizon], advance=True) - y[t0:t0 + horizon])
            learner.load_state_dict(snapshot)
            learner.reset(state=True)
            x = X[t0].astype(np.float64).copy()
            for h in range(horizon):
                p = float(learner.predict_batch(x[None, :], advance=True)[0])
                free[h] += abs(p - y[t0 + h])
                x = np.r_[x[1:], p]
    finally:
        learner.load_state_dict(snapshot)
    n = max(used, 1)
    return {"h": list(range(1, horizon + 1)), "teacher_forced": (forced / n).tolist(),
            "free_running": (free / n).tolist(), "starts": used}
