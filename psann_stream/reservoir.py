"""An echo-state network as an ensemble member: a fixed random reservoir of tanh units whose state
carries the stream's past, and a linear readout of that state learned online by the readout's
recursive least squares (:mod:`psann_stream.readout`, same code).

Per event, with the inputs standardised online (statistics before the event, as in the learners)::

    s' = (1 - leak) s + leak tanh(W_in x + W s + b)       (per stream: one state per key when keyed)
    y_hat = w . (s', 1)                                   (the readout; RLS learns w, one P)

``W`` is a dense Gaussian matrix scaled to spectral radius ``spectral_radius``; ``W_in`` and ``b``
are uniform in ``[-input_scaling, input_scaling]``; all three are drawn once from ``seed`` and never
learned. Bounds: ``|s| <= 1`` in every coordinate for any finite input (tanh, and ``0 < leak <= 1``
mixes values in ``[-1, 1]``), so the readout's regressors stay on one scale whatever the stream does.

What it adds to the learners: its recurrence mixes the units, so its state is a nonlinear function
of the past (an oscillatory pair's state is linear in it), and its readout sees few regressors, so it
settles in tens of events. On keyed sines whose period switches (keyed-switch, docs/scenarios.md)
that is what wins after a change.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from numba import njit

from . import _fastpath as fp
from .errors import CheckpointError, ConfigError
from .experts import after_loop, predict_learn
from .inputs import as_float64, predictions
from .normalize import RunningStats
from .stream_rows import RowExpert

__all__ = ["EchoState"]


@njit(cache=True, error_model="numpy", nogil=True)
def _echo_state_events(X, Y, rows, learn, advance, Win, Wr, bias, leak, S, theta, head, P, rcfg, xm, xm2, xws, xf, xe,
                       nclip, out, xn, pre, z, bits, a, D, sd):
    """Event ``n`` of stream row ``rows[n]``: advance that row's reservoir state ``S[rows[n]]`` (``U``
    units) on the standardised inputs into ``z`` (then 1), predict its ``T`` outputs (``out``, ``Y``:
    ``[N, T]``) with the weights ``theta`` (``head``: weights ``[T, U]`` then biases ``[T]``, the
    learners' readout layout; ``z[U] = 1`` carries the bias into the RLS step), then (``learn``)
    learn the errors ``D`` by the readout's RLS step (:func:`~psann_stream.experts.predict_learn`),
    and (``advance``) keep ``z`` as the row's state and fold ``x`` into the statistics. Inputs are
    zeros until the statistics have a spread, and nothing is learned before. Returns (events done,
    status): status 1 a non-finite prediction, 2 a non-finite gain; that event changed nothing."""
    F, U = X.shape[1], Wr.shape[0]
    for n in range(X.shape[0]):
        r = rows[n]
        fp._stds(xm, xm2, xws, xf, xe, sd)
        spread = xws[1] >= 2.0
        for j in range(F):
            xn[j] = (X[n, j] - xm[j]) / sd[j] if spread else 0.0
        for i in range(U):
            acc = bias[i]
            for j in range(F):
                acc += Win[i, j] * xn[j]
            for k in range(U):
                acc += Wr[i, k] * S[r, k]
            pre[i] = acc
        fp._tanh_pass(pre, z[:U], bits)
        for i in range(U):
            z[i] = (1.0 - leak) * S[r, i] + leak * z[i]
        z[U] = 1.0
        status = predict_learn(z, Y[n], out[n], theta, head, P, rcfg, a, D, learn and spread)
        if status:
            return n, status
        if advance:
            fp._stats_update(xm, xm2, xws, xf, nclip, X[n], sd)
            fp._copy(S[r], z[:U])
    return X.shape[0], 0


def _check(owner: str, name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or not ((low < value) if low_open else (low <= value)) or not value <= high:  # type: ignore[operator]
        raise ConfigError(f"{owner}.{name} = {value!r} is out of range: need {low} {'<' if low_open else '<='} "
                          f"{name} <= {high}.")
    return float(value)  # type: ignore[arg-type]


class EchoState(RowExpert):
    """An echo-state network (module doc): a fixed reservoir of ``units`` tanh units and an RLS
    readout of its state. ``keyed=True`` keeps a state per key (``learn_batch(keys, X, Y)``) and
    one readout, as a :class:`~psann_stream.keyed.KeyedLearner` keeps a state per key and shared
    weights; a key's state starts at 0 on its first event and is kept until :meth:`reset`
    (``units`` floats per key).

    Args:
        in_features: input width ``F``.
        n_outputs: targets per event ``T`` (``Y`` and predictions ``[N, T]`` when ``T > 1``).
        keyed: one reservoir state per key.
        units: reservoir size ``U`` (cost per event ~``U**2``: the recurrence and an RLS of ``U + 1``).
        spectral_radius: of the recurrent matrix, in ``(0, 1.5]`` (below 1: the state forgets its start).
        input_scaling: half-width of the uniform input weights and biases, ``> 0``.
        leak: ``0 < leak <= 1``, the share of the new activation in each step (1: no leak).
        seed: draws the reservoir.
        forgetting, prior, error_clip: the RLS readout's (:class:`~psann_stream.experts.LinearRLS`).
        normalize_clip: limit values folded into the input statistics to ``mean +- clip * std``.

    >>> esn = EchoState(1)
    >>> t = np.arange(3001.0)
    >>> x = np.sin(0.3 * t)
    >>> p = esn.learn_batch(x[:-1, None], x[1:])   # the next value of a sine from the current one
    >>> bool(np.abs(p[-500:] - x[-500:]).mean() < 0.01)
    True
    """

    FORMAT = "psann_stream.echo_state/1"

    def __init__(self, in_features: int, *, n_outputs: int = 1, keyed: bool = False, units: int = 50,
                 spectral_radius: float = 0.9, input_scaling: float = 0.5, leak: float = 1.0, seed: int = 0,
                 forgetting: float = 0.999, prior: float = 10.0, error_clip: float | None = 10.0,
                 normalize_clip: float | None = 10.0) -> None:
        self.in_features, self.n_outputs, self.units = self._counts("EchoState", in_features=in_features,
                                                                    n_outputs=n_outputs, units=units)
        self.keyed = bool(keyed)
        self.spectral_radius = _check("EchoState", "spectral_radius", spectral_radius, 0.0, 1.5, low_open=True)
        self.input_scaling = _check("EchoState", "input_scaling", input_scaling, 0.0, np.inf, low_open=True)
        self.leak = _check("EchoState", "leak", leak, 0.0, 1.0, low_open=True)
        self.seed = int(seed)
        U, F = self.units, self.in_features
        rng = np.random.default_rng(self.seed)
        self._Win = np.ascontiguousarray(rng.uniform(-1.0, 1.0, (U, F)) * self.input_scaling)
        self._bias = rng.uniform(-1.0, 1.0, U) * self.input_scaling
        Wr = rng.standard_normal((U, U))
        radius = float(np.abs(np.linalg.eigvals(Wr)).max())
        self._Wr = np.ascontiguousarray(Wr * (self.spectral_radius / radius)) if radius > 0 else Wr
        self._build(U, forgetting=forgetting, prior=prior, error_clip=error_clip, normalize_clip=normalize_clip)

    def state_of(self, key: Hashable | None = None) -> np.ndarray:
        """A copy of the reservoir state ``[units]`` of ``key`` (unkeyed: of the stream, no key)."""
        return self._rows.state_of(key, "EchoState")

    # ------------------------------------------------------------------ learning
    def _run(self, keys: Any, X: np.ndarray, Y: np.ndarray, learn: bool, advance: bool = True) -> np.ndarray:
        rows = self._rows.rows_of(keys, X.shape[0])
        xs, U = self.x_stats, self.units
        xws = np.array([xs.weight, xs.count])
        out = predictions(X.shape[0], self.n_outputs)
        done, status = _echo_state_events(X, Y.reshape(X.shape[0], -1), rows, learn, advance, self._Win, self._Wr,
                                          self._bias, self.leak, self._rows.array, self._w, self._head, self._P, self._rcfg,
                                          xs._mean, xs._m2, xws, xs.forget, xs.eps, xs.clip or 0.0,
                                          out.reshape(X.shape[0], -1), np.zeros(self.in_features), np.zeros(U),
                                          np.zeros(U + 1), np.zeros(U, dtype=np.int64), np.zeros(U + 1),
                                          np.zeros(self.n_outputs), np.zeros(self.in_features))
        after_loop("EchoState", xs, xws, done, status)
        return out

    def reset(self, keys: Sequence[Hashable] | None = None, *, state: bool = True, optimizer: bool = False) -> None:
        """``state=True``: the given keys' states (all of them by default; unkeyed: the one state) back
        to 0; ``optimizer=True``: forget the readout (weights and ``P``). The reservoir is never learned."""
        if state:
            self._rows.reset(keys, "EchoState")
        if optimizer:
            self._forget_readout()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The readout (``w``, ``P``), the input statistics, every stream's state (keyed: the keys in
        canonical order and their states) and the reservoir, so that a checkpoint is whole."""
        sd = self._saved_readout()
        states = sd.pop("rows")
        return {**sd, "states": torch.from_numpy(states),
                "reservoir": {"W_in": torch.from_numpy(self._Win.copy()), "W": torch.from_numpy(self._Wr.copy()),
                              "b": torch.from_numpy(self._bias.copy()), "leak": self.leak}}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into a network built with the same settings (the saved
        reservoir must be this one's: a checkpoint from other settings or another seed is refused)."""
        try:
            if sd.get("format") != self.FORMAT:
                raise CheckpointError(f"unknown echo-state state format {sd.get('format')!r}; expected {self.FORMAT!r}.")
            res = sd["reservoir"]
            same = all(np.array_equal(as_float64(res[k]).reshape(-1), mine.reshape(-1))
                       for k, mine in (("W_in", self._Win), ("W", self._Wr), ("b", self._bias))) \
                and float(res["leak"]) == self.leak
            if not same:
                raise CheckpointError("the saved echo-state network has another reservoir; build it with the same "
                                      "in_features, units, spectral_radius, input_scaling, leak and seed.")
            w, P = as_float64(sd["w"]), as_float64(sd["P"])
            if w.shape != self._w.shape or P.shape != self._P.shape:
                raise CheckpointError(f"the saved readout has {w.shape[0]} weights; this one has {self._w.shape[0]} "
                                      f"({self.n_outputs} output(s)): build it with the same n_outputs.")
            keys, states = self._rows.checked(sd["keys"], as_float64(sd["states"]), "EchoState")
            stats = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in sd["x_stats"].items()}
            RunningStats(self.in_features).load_state_dict(stats)  # refuses a foreign one before anything changes
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the echo-state network's state cannot be loaded: {exc}; was it saved by "
                                  "EchoState.state_dict()?") from None
        self.x_stats.load_state_dict(stats)
        self._w, self._P = w, P
        self._rows.load(keys, states)
