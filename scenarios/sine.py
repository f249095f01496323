"""A sine stream whose frequency and amplitude switch abruptly at known change points.

The next-value task on it needs memory: from the current value alone a model cannot tell whether the
sine is rising or falling, so a stateless model's error stays high while a model with a state can
learn the direction. This is the stream of the ``psann-stream demo`` job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["SineStream", "regime_switching_sine"]


@dataclass(frozen=True)
class SineStream:
    """One generated stream.

    Attributes:
        x: ``[T, 1]`` float32 inputs, the (noisy) value at step ``t``.
        y: ``[T, 1]`` float32 targets, the value at step ``t + 1``.
        change_points: steps at which a new regime starts (the first regime starts at 0).
        regimes: ``(period, amplitude)`` of each regime, in order.
    """

    x: np.ndarray
    y: np.ndarray
    change_points: tuple[int, ...]
    regimes: tuple[tuple[float, float], ...]

    def regime_at(self, t: int) -> int:
        """Index of the regime that step ``t`` belongs to."""
        return int(np.searchsorted(np.asarray(self.change_points), t, side="right")) - 1


def regime_switching_sine(
    n_steps: int = 6000,
    *,
    periods: Sequence[float] = (40.0, 15.0, 60.0, 25.0),
    amplitudes: Sequence[float] = (1.0, 0.6, 1.5, 1.0),
    noise: float = 0.02,
    seed: int = 0,
) -> SineStream:
    """A phase-continuous sine whose period and amplitude switch abruptly, in equal segments.

    Args:
        n_steps: number of (x, y) pairs ``T``.
        periods: period of each regime, in steps (> 0).
        amplitudes: amplitude of each regime (same length as ``periods``).
        noise: standard deviation of Gaussian noise added to every value.
        seed: seed of the noise.

    >>> s = regime_switching_sine(100, periods=(10, 20), amplitudes=(1, 2), noise=0.0)
    >>> s.x.shape, s.change_points, s.regime_at(75)
    ((100, 1), (0, 50), 1)
    >>> bool(np.allclose(s.x[1:], s.y[:-1]))
    True
    """
    if len(periods) != len(amplitudes) or not periods:
        raise ValueError(
            f"regime_switching_sine: got {len(periods)} period(s) and {len(amplitudes)} amplitude(s); "
            "give one amplitude per period (at least one)."
        )
    if n_steps < len(periods):
        raise ValueError(f"regime_switching_sine: n_steps = {n_steps} is fewer than the {len(periods)} regimes.")
    if any(p <= 0 for p in periods) or noise < 0:
        raise ValueError("regime_switching_sine: periods must be > 0 and noise >= 0.")
    k = len(periods)
    bounds = [round(i * (n_steps + 1) / k) for i in range(k + 1)]
    freq = np.empty(n_steps + 1)
    amp = np.empty(n_steps + 1)
    for i in range(k):
        freq[bounds[i] : bounds[i + 1]] = 2 * np.pi / periods[i]
        amp[bounds[i] : bounds[i + 1]] = amplitudes[i]
    values = amp * np.sin(np.cumsum(freq))
    values += noise * np.random.default_rng(seed).standard_normal(n_steps + 1)
    values = values.astype(np.float32)
    return SineStream(
        x=values[:-1, None].copy(),
        y=values[1:, None].copy(),
        change_points=tuple(bounds[:k]),
        regimes=tuple((float(p), float(a)) for p, a in zip(periods, amplitudes)),
    )
