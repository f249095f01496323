"""Memory streams: targets that depend on inputs seen several events ago, the input being the current
value only. A learner scores well here only if its state carries the past (see docs/scenarios.md).

* ``delayed-copy-K``: white noise ``x_t ~ N(0, 1)``, target ``x_{t-K}`` (K = 1, 2, 4, 8, 16);
* ``narma10``: the NARMA system of order 10 (Atiya & Parlos 2000), input ``u_t ~ U[0, 0.5]``,
  target ``y_{t+1} = 0.3 y_t + 0.05 y_t sum_{i<10} y_{t-i} + 1.5 u_{t-9} u_t + 0.1``;
* ``mackey-glass-hH``: the Mackey-Glass delay equation (tau = 17, sampled every time unit), input the
  current value, target the value ``H`` = 1 or 10 steps ahead.

>>> s = MEMORY_SCENARIOS["delayed-copy-4"](100, 0)
>>> X, y, _ = s.arrays()
>>> bool(np.allclose(X[:-4, 0], y[4:], atol=1e-6))
True
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .scenario import Scenario, table

__all__ = ["LAGS", "MEMORY_SCENARIOS", "mackey_glass_series", "narma10_series"]

LAGS = (1, 2, 4, 8, 16)


def delayed_copy(lag: int) -> Callable[[int, int], Scenario]:
    def build(n: int, seed: int) -> Scenario:
        x = np.random.default_rng(seed).standard_normal(n + lag)
        # x is stored as float32: the target is the stored input, so a perfect memory has zero error
        x = x.astype(np.float32).astype(np.float64)
        return Scenario(f"delayed-copy-{lag}", f"white noise; target: the input {lag} event(s) ago; input: the current value only",
                        table(x[lag:, None], x[:n]), ())
    return build


def narma10_series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u [n], y [n + 1])``: the NARMA10 input and output, after a 200-step burn-in."""
    burn = 200
    u = np.random.default_rng(seed).uniform(0.0, 0.5, n + burn)
    y = np.zeros(n + burn + 1)
    for t in range(9, n + burn):
        y[t + 1] = 0.3 * y[t] + 0.05 * y[t] * y[t - 9 : t + 1].sum() + 1.5 * u[t - 9] * u[t] + 0.1
    return u[burn:], y[burn:]


def narma10(n: int, seed: int) -> Scenario:
    u, y = narma10_series(n, seed)
    return Scenario("narma10", "NARMA order 10; target: y[t+1]; input: u[t] only (needs >= 10 events of memory)",
                    table(u[:, None], y[1:]), ())


def mackey_glass_series(n: int, seed: int, tau: float = 17.0, dt: float = 0.1) -> np.ndarray:
    """``n`` samples, one per time unit, of ``dx/dt = 0.2 x(t - tau) / (1 + x(t - tau)**10) - 0.1 x(t)``
    (4th-order Runge-Kutta with the delayed term held over a step), from a seeded start near 1.2, after
    a burn-in of 500 time units."""
    per = int(round(1.0 / dt))
    lag = int(round(tau / dt))
    burn = 500 * per
    total = burn + n * per
    x = np.empty(total + lag + 1)
    x[: lag + 1] = 1.2 + 0.1 * np.random.default_rng(seed).uniform(-1.0, 1.0)
    f = lambda v, d: 0.2 * d / (1.0 + d**10) - 0.1 * v  # noqa: E731
    for i in range(lag, total + lag):
        d = x[i - lag]
        k1 = f(x[i], d)
        k2 = f(x[i] + 0.5 * dt * k1, d)
        k3 = f(x[i] + 0.5 * dt * k2, d)
        k4 = f(x[i] + dt * k3, d)
        x[i + 1] = x[i] + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[lag + burn :: per][:n]


def mackey_glass(horizon: int) -> Callable[[int, int], Scenario]:
    def build(n: int, seed: int) -> Scenario:
        v = mackey_glass_series(n + horizon, seed)
        return Scenario(f"mackey-glass-h{horizon}", f"Mackey-Glass (tau 17); target: {horizon} step(s) ahead; "
                        "input: the current value only", table(v[:n, None], v[horizon:]), ())
    return build


MEMORY_SCENARIOS: dict[str, Callable[[int, int], Scenario]] = {
    **{f"delayed-copy-{k}": delayed_copy(k) for k in LAGS},
    "narma10": narma10,
    "mackey-glass-h1": mackey_glass(1),
    "mackey-glass-h10": mackey_glass(10),
}
