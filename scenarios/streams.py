"""Named drift scenarios: seeded streams with known change points, as Arrow tables.

Every scenario is a table with a ``x`` column (``fixed_size_list<float32>[F]``), a ``y`` column
(float64) and, for keyed scenarios, a ``key`` column, plus its change points (row indices where a
new regime starts). ``SCENARIOS[name](n_steps, seed)`` builds one.

>>> s = SCENARIOS["ar-switch"](600, 0)
>>> s.table.num_rows, s.change_points
(600, (300,))
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .memory import MEMORY_SCENARIOS
from .scenario import Scenario, table
from .sine import regime_switching_sine

__all__ = ["SCENARIOS", "Scenario"]


def _lags(series: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs: the last ``k`` values; target: the next one."""
    n = len(series) - k
    x = np.stack([series[i : i + n] for i in range(k)], axis=1)
    return x, series[k:]


def sine_switch(n: int, seed: int) -> Scenario:
    s = regime_switching_sine(n, seed=seed)
    return Scenario("sine-switch", "sine whose period/amplitude switch abruptly; input: the current value only",
                    table(s.x, s.y[:, 0]), s.change_points[1:], autoregressive=True)


def ar_switch(n: int, seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    coefs = [(1.6, -0.8), (-0.5, 0.3)]
    v = np.zeros(n + 3)
    for t in range(2, n + 3):
        a1, a2 = coefs[0] if t < n // 2 + 3 else coefs[1]
        v[t] = a1 * v[t - 1] + a2 * v[t - 2] + rng.standard_normal() * 0.3
    x, y = _lags(v[1:], 2)
    return Scenario("ar-switch", "AR(2) whose coefficients switch abruptly at the middle; input: 2 lags",
                    table(x[:n], y[:n]), (n // 2,), autoregressive=True)


def ramp(n: int, seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    t = np.arange(n + 4)
    start, end = n // 3, 2 * n // 3
    w = np.interp(t, [start, end], [2 * np.pi / 40, 2 * np.pi / 12])
    v = np.sin(np.cumsum(w)) + 0.02 * rng.standard_normal(n + 4)
    x, y = _lags(v, 4)
    return Scenario("ramp", "gradual drift: the frequency ramps from period 40 to 12; input: 4 lags",
                    table(x[:n], y[:n]), (start,), autoregressive=True)


def shock(n: int, seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    v = np.sin(np.arange(n + 4) * 2 * np.pi / 30) + 0.02 * rng.standard_normal(n + 4)
    at = n // 2
    v[at] *= 10.0  # a one-step scale shock
    x, y = _lags(v, 4)
    y = y[:n].copy()
    outliers = tuple(sorted(int(i) for i in rng.choice(np.arange(n // 4, n), size=3, replace=False)))
    for i in outliers:
        y[i] = 1e6 * np.sign(rng.standard_normal())  # impulse outliers in the target
    return Scenario("shock", "sine with a 10x one-step shock and three 1e6 target outliers; input: 4 lags",
                    table(x[:n], y), (at,), outliers=outliers, autoregressive=True)


def recurring(n: int, seed: int) -> Scenario:
    s = regime_switching_sine(n, periods=(30.0, 12.0, 30.0, 12.0), amplitudes=(1.0, 1.0, 1.0, 1.0), seed=seed)
    return Scenario("recurring", "two sine regimes that recur (A, B, A, B); input: the current value only",
                    table(s.x, s.y[:, 0]), s.change_points[1:], autoregressive=True)


def keyed_switch(n: int, seed: int, keys: int = 20) -> Scenario:
    rng = np.random.default_rng(seed)
    per = n // keys
    xs, ys, ks, cps = [], [], [], []
    for k in range(keys):
        at = int(rng.integers(per // 4, 3 * per // 4))
        p1, p2 = rng.uniform(10, 50, 2)
        w = np.where(np.arange(per + 1) < at, 2 * np.pi / p1, 2 * np.pi / p2)
        v = np.sin(np.cumsum(w) + rng.uniform(0, 6)) + 0.02 * rng.standard_normal(per + 1)
        xs.append(v[:-1, None])
        ys.append(v[1:])
        ks.append(np.full(per, k))
        cps.append(at)
    order = np.argsort(np.concatenate([np.arange(per)] * keys), kind="stable")  # interleave the keys in time
    x, y, key = np.concatenate(xs)[order], np.concatenate(ys)[order], np.concatenate(ks)[order]
    change = tuple(sorted(int(np.flatnonzero((key == k))[cp]) for k, cp in enumerate(cps)))
    return Scenario("keyed-switch", f"{keys} keyed sines, each switching period at its own time; input: the current value",
                    table(x, y, [f"k{i}" for i in key]), change, keyed=True)


def friedman_drift(n: int, seed: int) -> Scenario:
    from river.datasets import synth

    rows = list(synth.FriedmanDrift(drift_type="gra", position=(n // 3, 2 * n // 3), seed=seed).take(n))
    x = np.array([[r[0][i] for i in range(10)] for r in rows])
    y = np.array([r[1] for r in rows])
    return Scenario("friedman-drift", "river's FriedmanDrift, global recurring abrupt drift; 10 features",
                    table(x, y), (n // 3, 2 * n // 3))


SCENARIOS: dict[str, Callable[[int, int], Scenario]] = {
    "sine-switch": sine_switch,
    "ar-switch": ar_switch,
    "ramp": ramp,
    "shock": shock,
    "recurring": recurring,
    "keyed-switch": keyed_switch,
    "friedman-drift": friedman_drift,
    **MEMORY_SCENARIOS,
}
