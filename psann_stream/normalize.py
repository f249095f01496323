"""Online normalisers for inputs and targets: running mean and variance, cumulative or forgetting.

One recurrence covers both (Welford 1962; West 1979 for weights): with a forgetting factor
``lam`` (1 = cumulative) and weights ``w_t = lam * w_{t-1} + 1``::

    d = x - mean;   mean += d / w;   m2 = lam * m2 + d * (x - mean)

``lam = 1`` is Welford's algorithm (``var = m2 / (n - 1)``, numpy's ``ddof=1``). ``lam < 1`` is an
exponentially weighted mean and variance with the exact bias correction built in (the first value
has weight 1, not ``1 - lam``): ``mean`` and ``var = m2 / w`` equal numpy's weighted average and
weighted population variance with weights ``lam^(n-1-i)``. Accumulators are float64.

Merging (Chan, Golub & LeVeque 1983) concatenates in time: ``a.merge(b)`` is the statistics of
a's data followed by b's, so it is associative (and commutative when ``lam = 1``). With ``lam < 1``
a's weights first decay by ``lam ** b.count``.

Normalised values are ``(x - mean) / std`` with ``std = sqrt(var + eps * (1 + mean^2))``: a constant
feature maps to 0, and jitter below ``sqrt(eps)`` relative to the feature's magnitude is not
amplified. While fewer than 2 values have been seen, or every value seen is the same (``m2 = 0``: no
scale yet), ``var = 1``: a target that sat at a constant before its signal began would otherwise put
the signal's first values thousands of deviations out. The clip applies once a feature has a spread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ConfigError, NonFiniteInputError

__all__ = ["RunningStats"]


class RunningStats:
    """Per-feature running mean/variance with optional forgetting; mergeable; float64.

    Args:
        n_features: width ``F``; ``None`` adopts the width of the first update.
        forget: ``lam`` in ``(0, 1]``; 1 is cumulative (Welford), e.g. 0.999 forgets with a time
            constant of 1000 values.
        eps: relative variance floor (see the module doc), ``>= 0``.
        clip: if set, each value is limited to ``mean +- clip * std`` before it is folded in (once
            two different values were seen): a 1e6 outlier then moves the statistics like a ``clip``-sigma
            value instead of poisoning the scale for the rest of the stream. A genuine jump in scale
            is still followed, geometrically rather than at once.

    >>> rs = RunningStats(forget=1.0)
    >>> rs.update(np.array([[1.0], [2.0], [3.0], [4.0]]))
    >>> float(rs.mean[0]), float(rs.var[0])
    (2.5, 1.6666666666666667)
    >>> [round(float(v), 3) for v in rs.transform(np.array([2.5, 4.0]).reshape(2, 1))[:, 0]]
    [0.0, 1.162]
    """

    def __init__(
        self, n_features: int | None = None, *, forget: float = 1.0, eps: float = 1e-8, clip: float | None = None
    ) -> None:
        if not (isinstance(forget, (int, float)) and 0.0 < forget <= 1.0):
            raise ConfigError(f"RunningStats.forget = {forget!r} is out of range: need 0 < forget <= 1.")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0.0):
            raise ConfigError(f"RunningStats.eps = {eps!r} is out of range: need a finite eps >= 0.")
        if clip is not None and not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
            raise ConfigError(f"RunningStats.clip = {clip!r} is out of range: need None or a finite clip > 0.")
        self.n_features = n_features
        self.forget = float(forget)
        self.eps = float(eps)
        self.clip = None if clip is None else float(clip)
        self._mean = np.zeros(n_features or 0)
        self._m2 = np.zeros(n_features or 0)
        self._ws = np.zeros(2)  # [weight, count]: one array, so that the compiled loop can update it in place

    @property
    def weight(self) -> float:
        """The total weight ``w`` of the values folded in (their count when ``forget = 1``)."""
        return float(self._ws[0])

    @weight.setter
    def weight(self, value: float) -> None:
        self._ws[0] = value

    @property
    def count(self) -> int:
        """How many values were folded in."""
        return int(self._ws[1])

    @count.setter
    def count(self, value: int) -> None:
        self._ws[1] = value

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mean [F], m2 [F], [weight, count])``: the accumulators themselves (not copies), for the
        compiled loop, which updates them in place with the same recurrence
        (``_fastpath._stats_update``). Their identity is stable: :meth:`update` and
        :meth:`load_state_dict` write into them."""
        return self._mean, self._m2, self._ws

    def adopt(self, mean: np.ndarray, m2: np.ndarray, ws: np.ndarray) -> None:
        """Keep the accumulators in the given arrays from now on (shapes ``[F]``, ``[F]``, ``[2]``; our
        current values are copied into them): how a compiled learner packs them into its buffer."""
        mean[:], m2[:], ws[:] = self._mean, self._m2, self._ws
        self._mean, self._m2, self._ws = mean, m2, ws

    # ------------------------------------------------------------------ data
    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ConfigError(f"RunningStats expects [F] or [N, F] values, got shape {x.shape}.")
        if self.n_features is None:
            self.n_features = x.shape[1]
            self._mean = np.zeros(self.n_features)
            self._m2 = np.zeros(self.n_features)
        if x.shape[1] != self.n_features:
            raise ConfigError(
                f"RunningStats has {self.n_features} feature(s) but got values with {x.shape[1]}; "
                "feed the same columns every time."
            )
        return x

    def update(self, x: np.ndarray) -> None:
        """Fold values ``[F]`` or ``[N, F]`` in, in order. Non-finite values raise and change nothing."""
        x = self._check(x)
        if not np.isfinite(x).all():
            row, col = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise NonFiniteInputError(
                f"RunningStats.update: row {row}, column {col} is {float(x[row, col])!r}; the statistics were not changed."
            )
        lam = self.forget
        mean, m2, w, count = self._mean.copy(), self._m2.copy(), self.weight, self.count
        for row in x:
            if self.clip is not None and count >= 2:
                spread = m2 > 0.0  # a constant so far has no scale to limit the first other value to
                var = np.where(spread, m2 / (w - 1.0 if lam == 1.0 else w), 1.0)
                band = np.where(spread, self.clip * np.sqrt(var + self.eps * (1.0 + mean**2)), np.inf)
                row = np.clip(row, mean - band, mean + band)
            w = lam * w + 1.0
            d = row - mean
            mean += d / w
            m2 = lam * m2 + d * (row - mean)
            count += 1
        self._mean[:], self._m2[:], self._ws[:] = mean, m2, (w, count)

    # ------------------------------------------------------------------ statistics
    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def var(self) -> np.ndarray:
        """``m2 / (n - 1)`` (cumulative) or ``m2 / w`` (forgetting); 1 until two different values are
        seen (``m2 = 0``: no scale yet)."""
        if self.count < 2:
            return np.ones_like(self._mean)
        denom = self.weight - 1.0 if self.forget == 1.0 else self.weight
        return np.where(self._m2 > 0.0, self._m2 / denom, 1.0)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + self.eps * (1.0 + self._mean**2))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` for ``[F]`` or ``[N, F]`` values (does not update)."""
        return (np.asarray(x, dtype=np.float64) - self._mean) / self.std

    def inverse_transform(self, z: np.ndarray) -> np.ndarray:
        """``z * std + mean``: back from normalised units."""
        return np.asarray(z, dtype=np.float64) * self.std + self._mean

    # ------------------------------------------------------------------ merge and persistence
    def merge(self, later: RunningStats) -> RunningStats:
        """Statistics of this stream's values followed by ``later``'s (a new object)."""
        if later.forget != self.forget:
            raise ConfigError(f"cannot merge RunningStats with forget={self.forget} and forget={later.forget}.")
        if self.count and later.count and self.n_features != later.n_features:
            raise ConfigError(f"cannot merge RunningStats of {self.n_features} and {later.n_features} features.")
        out = RunningStats(self.n_features or later.n_features, forget=self.forget, eps=self.eps, clip=self.clip)
        if not later.count:
            out.load_state_dict(self.state_dict())
            return out
        if not self.count:
            out.load_state_dict(later.state_dict())
            return out
        decay = self.forget**later.count
        wa, wb = self.weight * decay, later.weight
        w = wa + wb
        d = later._mean - self._mean
        out._mean = self._mean + d * (wb / w)
        out._m2 = self._m2 * decay + later._m2 + d * d * (wa * wb / w)
        out.weight = w
        out.count = self.count + later.count
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "forget": self.forget,
            "eps": self.eps,
            "clip": self.clip,
            "count": self.count,
            "weight": self.weight,
            "mean": self._mean.copy(),
            "m2": self._m2.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.n_features = None if state["n_features"] is None else int(state["n_features"])
            self.forget = float(state["forget"])
            self.eps = float(state["eps"])
            self.clip = None if state.get("clip") is None else float(state["clip"])
            ws = (float(state["weight"]), int(state["count"]))
            mean = np.array(state["mean"], dtype=np.float64).reshape(-1)
            m2 = np.array(state["m2"], dtype=np.float64).reshape(-1)
            if mean.shape != m2.shape:
                raise ValueError(f"mean has {mean.shape[0]} values but m2 {m2.shape[0]}")
            if mean.shape == self._mean.shape:  # in place: whoever holds `arrays` keeps seeing them
                self._mean[:], self._m2[:] = mean, m2
            else:
                self._mean, self._m2 = mean, m2
            self._ws[:] = ws
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"RunningStats.load_state_dict: malformed state ({exc!r}); was it saved by RunningStats.state_dict()?") from None

    def __repr__(self) -> str:
        return f"RunningStats(n_features={self.n_features}, forget={self.forget}, count={self.count})"
