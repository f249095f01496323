"""Simple experts for an :class:`~psann_stream.ensemble.Ensemble`: the forecasts a user would try first,
with the learner protocol (``learn_batch``, ``predict_batch``, ``state_dict``), so that a mixture that
holds them is never worse than them for long.

* :class:`Persistence`: the prediction is one input column, e.g. the current reading when the target
  is the same reading one step ahead ("tomorrow = today"), the baseline every forecast must beat;
* :class:`LinearRLS`: a linear model of the online-standardised inputs, learned by recursive least
  squares with forgetting (the readout rule of :mod:`psann_stream.readout`, same code); with
  ``lags``, of the inputs of the last events too (an ARX model);
* :class:`Change`: any learner, taught the change of the target from the last known value (an input
  column) instead of its level: on slow real series the level is mostly the last value, and what is
  left to learn is the change (ETTh1, docs/scenarios.md).

``Persistence`` and an unkeyed ``LinearRLS`` are key-agnostic (``keyed = False``): in a keyed
ensemble they see every key's events as one stream, as the keyed learner's shared weights do. A
lagged ``LinearRLS`` built with ``keyed=True`` keeps a window per key (its weights stay shared), as a
:class:`~psann_stream.keyed.KeyedLearner` keeps a state per key.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from numba import njit

from . import _fastpath as fp
from .errors import CheckpointError, ConfigError, NonFiniteStateError
from .inputs import as_float64, as_targets, predictions
from .normalize import RunningStats
from .stream_rows import RowExpert

__all__ = ["Change", "LinearRLS", "Persistence"]


def _rows(X: Any, width: int, owner: str) -> np.ndarray:
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    if X.ndim != 2 or X.shape[1] != width:
        raise ConfigError(f"{owner}: X must have shape [N, {width}], got {X.shape}.")
    return X


def _columns(owner: str, column: object, width: int, outputs: int | None) -> int | list[int]:
    """``column`` checked: one input column index (one target) or a sequence of them, one per target
    (``outputs`` of them; ``None``: any number >= 1). Returns an int for one target (also given as a
    one-element sequence), else a list of ints."""
    one = not isinstance(column, (list, tuple))
    cols = [column] if one else list(column)  # type: ignore[arg-type]
    count = 1 if one else len(cols)
    if (outputs is not None and count != outputs) or not cols or any(
            isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < width for c in cols):
        need = ("the column" if outputs == 1 else f"a list of {outputs} columns, one per target,") if outputs is not None \
            else "the column (a list of columns, one per target, for several targets)"
        raise ConfigError(f"{owner}.column = {column!r} is out of range for {width} input column(s)"
                          f"{'' if outputs is None else f' and {outputs} target(s)'}: name {need} that holds the "
                          "last known value of the target.")
    return int(cols[0]) if count == 1 else [int(c) for c in cols]


def after_loop(owner: str, xs: RunningStats, xws: np.ndarray, done: int, status: int) -> None:
    """After a compiled expert's loop: the input statistics' counters (``xws``) back into ``xs``, and a
    failed event (status 1: a non-finite prediction, 2: a non-finite gain; the loop stopped there)
    raised, naming it."""
    xs.weight, xs.count = float(xws[0]), int(xws[1])
    if status:
        raise NonFiniteStateError(f"{owner}: event {done} of this batch: the {'prediction' if status == 1 else 'gain'} "
                                  "became non-finite; the events before it were learned, it and those after it were "
                                  "not. Check the inputs for non-finite values (an Ensemble skips them), or lower prior.")


class Persistence:
    """Predicts input column ``column``: ``y_hat = x[column]``. Learns nothing; has no state. For
    several targets, ``column`` is a sequence of ``T`` columns (target ``k``'s last value in
    ``column[k]``) and predictions are ``[N, T]``.

    >>> Persistence(2, column=1).learn_batch(np.array([[0.5, 3.0]]), np.array([3.5])).tolist()
    [3.0]
    >>> Persistence(2, column=[1, 0]).predict_batch(np.array([[0.5, 3.0]])).tolist()
    [[3.0, 0.5]]
    """

    keyed = False
    FORMAT = "psann_stream.persistence/1"

    def __init__(self, in_features: int, *, column: int | Sequence[int]) -> None:
        if isinstance(in_features, bool) or not isinstance(in_features, (int, np.integer)):
            raise ConfigError(f"Persistence.in_features = {in_features!r} must be an integer.")
        self.in_features = int(in_features)
        self.column: int | list[int] = _columns("Persistence", column, self.in_features, None)
        self.n_outputs = 1 if isinstance(self.column, int) else len(self.column)

    @property
    def alerts(self) -> list:
        return []

    def learn_batch(self, X: Any, Y: Any) -> np.ndarray:
        return _rows(X, self.in_features, "Persistence.learn_batch")[:, self.column].copy()

    def predict_batch(self, X: Any, *, advance: bool = True) -> np.ndarray:
        return _rows(X, self.in_features, "Persistence.predict_batch")[:, self.column].copy()

    def learn_one(self, x: Any, y: Any) -> float | np.ndarray:
        return self.predict_one(x)

    def predict_one(self, x: Any) -> float | np.ndarray:
        """``x[column]``: a float (several targets: ``[T]``)."""
        p = _rows(np.reshape(x, (1, -1)), self.in_features, "Persistence.predict_one")[0, self.column]
        return float(p) if self.n_outputs == 1 else p.copy()

    def reset(self, *, state: bool = True, optimizer: bool = False) -> None:
        """Nothing to reset (the learner protocol's hook)."""

    def state_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, "column": self.column}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("format") != self.FORMAT or sd.get("column") != self.column:
            raise CheckpointError(f"the saved expert is {dict(sd)!r}, not persistence of column {self.column}; "
                                  "build the ensemble with the same members.")


@njit(cache=True, inline="always")
def predict_learn(z, y, out, theta, head, P, rcfg, a, D, learn):
    """One event of a compiled expert with an RLS readout: its ``T`` predictions ``w_k . z[:W] + b_k``
    (``head``: weights ``[T, W]`` then biases ``[T]``, the learners' readout layout; ``z [W + 1]`` ends
    with 1) into ``out [T]``, then (``learn``) the readout's RLS step on the errors ``y - out``
    (one ``P``). Returns 0, or 1 (a non-finite prediction) / 2 (a non-finite gain) with nothing learned."""
    T, W = head[3], head[2]
    for k in range(T):
        yh = 0.0
        for j in range(W):
            yh += theta[k * W + j] * z[j]
        yh += theta[head[1] + k]
        out[k] = yh
        if not np.isfinite(yh):
            return 1
        D[k] = y[k] - yh
    if learn:
        d = fp._rls_gain(P, z, a, rcfg[0])
        if not (np.isfinite(d) and d > 0.0):
            return 2
        fp._rls_head(P, theta, head, a, d, D, rcfg[0], rcfg[1], rcfg[2])
    return 0


@njit(cache=True, error_model="numpy", nogil=True)
def _linear_rls_events(X, Y, rows, learn, advance, theta, head, P, rcfg, xm, xm2, xws, xf, xe, nclip, out, Z, zn, a, D,
                       sd):
    """Predict each event's ``T`` outputs (``Y``, ``out``: ``[N, T]``) with the weights ``theta``
    (``head``: weights ``[T, W]`` then biases ``[T]``, the learners' readout layout) on its
    regressors ``zn``, then (``learn``) learn its errors ``D [T]`` by the readout's RLS step (one ``P``
    for every output), and (``advance``) fold ``x`` into the statistics and keep ``zn[:W]`` as the
    window of event ``n``'s stream, ``Z[rows[n]]``. The regressors are the window (``W = lags * F``
    values) of the standardised inputs ``(x - mean) / std`` of the stream's last ``lags`` events,
    this one first (statistics before each event, as in the learner's loop; zeros for events seen
    before the statistics had a spread), then 1: ``Z`` carries each stream's window from event to
    event and from call to call. Returns (events done, status): status 1 a non-finite prediction, 2 a
    non-finite gain; that event changed nothing (``Z`` included)."""
    F, W = X.shape[1], head[2]
    for n in range(X.shape[0]):
        r = rows[n]
        fp._stds(xm, xm2, xws, xf, xe, sd)
        spread = xws[1] >= 2.0
        for j in range(F):
            zn[j] = (X[n, j] - xm[j]) / sd[j] if spread else 0.0
        for j in range(F, W):  # the stream's earlier events, one event further back
            zn[j] = Z[r, j - F]
        zn[W] = 1.0
        # before two inputs were seen, z is not yet on the standard scale: nothing is learned
        status = predict_learn(zn, Y[n], out[n], theta, head, P, rcfg, a, D, learn and spread)
        if status:
            return n, status
        if advance:
            fp._stats_update(xm, xm2, xws, xf, nclip, X[n], sd)
            fp._copy(Z[r], zn)  # its first W values: the window
    return X.shape[0], 0


class LinearRLS(RowExpert):
    """A linear model ``y_hat = W ((x - mean_x) / std_x) + b`` learned online by recursive least
    squares with forgetting (:mod:`psann_stream.readout`: the rule, its bounds and the error clip;
    several outputs share one ``P``, as a learner's readout does).

    The inputs are standardised online (statistics before each event; values limited to
    ``normalize_clip`` std when folded in), which keeps ``P`` well conditioned whatever their units;
    the target is not: least squares is equivariant to the target's scale and offset, and a moving
    target normalisation would make every past target stale. Learning starts at the third event,
    once the input statistics have a spread (the first two would be learned on the raw scale).

    With ``lags = L > 1`` it is an autoregressive (ARX) model: its inputs are the standardised inputs
    of this event and the ``L - 1`` before it (``L * F`` values, this event's first; zeros before the
    stream has that many), which it carries from call to call as its state: a memory of ``L - 1``
    events back, learned in tens of events (delayed copies; docs/scenarios.md). ``keyed=True`` keeps
    that window per key (``learn_batch(keys, X, Y)``; ``L * F`` floats per key, kept until the
    expert is rebuilt) and one set of weights and input statistics for all keys.

    Args:
        in_features: input width ``F``.
        n_outputs: targets per event ``T`` (``Y`` and predictions ``[N, T]`` when ``T > 1``).
        lags: events of inputs it regresses on, this one included (1: the current event only). Cost
            per event grows as ``(lags * F + 1) ** 2``.
        keyed: a window of past inputs per key (needs ``lags >= 2``: the current event alone is no
            state).
        forgetting: RLS forgetting factor in ``(0, 1]`` (memory ``1 / (1 - forgetting)`` events).
        prior: the initial ``P = prior * I``, which also caps ``trace(P)``.
        error_clip: limit the learned error to this many RMS of the past ones (``None``: no limit).
        normalize_clip: limit values folded into the statistics to ``mean +- clip * std``.

    >>> lin = LinearRLS(2)
    >>> X = np.random.default_rng(0).standard_normal((3000, 2))
    >>> p = lin.learn_batch(X, 3 * X[:, 0] - X[:, 1] + 5)
    >>> bool(np.abs(p[-100:] - (3 * X[-100:, 0] - X[-100:, 1] + 5)).max() < 0.1)
    True
    """

    FORMAT = "psann_stream.linear_rls/1"

    def __init__(self, in_features: int, *, n_outputs: int = 1, lags: int = 1, keyed: bool = False,
                 forgetting: float = 0.999, prior: float = 10.0, error_clip: float | None = 10.0,
                 normalize_clip: float | None = 10.0) -> None:
        self.in_features, self.n_outputs, self.lags = self._counts("LinearRLS", in_features=in_features,
                                                                  n_outputs=n_outputs, lags=lags)
        self.keyed = bool(keyed)
        if self.keyed and self.lags < 2:
            raise ConfigError("LinearRLS(keyed=True) keeps a window of past inputs per key: give lags >= 2, or "
                              "leave keyed False (with lags = 1 it has no state, and serves every key as it is).")
        # a row: the stream's last lags events' standardised inputs (the loop's Z)
        self._build(self.lags * self.in_features, forgetting=forgetting, prior=prior, error_clip=error_clip,
                    normalize_clip=normalize_clip)

    @property
    def weights(self) -> np.ndarray:
        """``[lags * F + 1]`` (``[T, lags * F + 1]`` for several outputs): the weights of the
        standardised inputs (this event's ``F`` first, then each earlier event's), then the bias
        (target units)."""
        W, T = self.lags * self.in_features, self.n_outputs
        M = np.concatenate([self._w[: T * W].reshape(T, W), self._w[T * W:, None]], axis=1)
        return M[0] if T == 1 else M

    def window_of(self, key: Any = None) -> np.ndarray:
        """A copy of the window ``[lags * F]`` of ``key`` (unkeyed: of the stream, no key): the
        standardised inputs of its last ``lags`` events, the latest first."""
        return self._rows.state_of(key, "LinearRLS")

    def _run(self, keys: Any, X: np.ndarray, Y: np.ndarray, learn: bool, advance: bool = True) -> np.ndarray:
        rows = self._rows.rows_of(keys, X.shape[0])
        xs = self.x_stats
        xws = np.array([xs.weight, xs.count])
        out = predictions(X.shape[0], self.n_outputs)
        width = self._rows.width + 1
        done, status = _linear_rls_events(X, Y.reshape(X.shape[0], -1), rows, learn, advance, self._w, self._head,
                                          self._P, self._rcfg, xs._mean, xs._m2, xws, xs.forget, xs.eps, xs.clip or 0.0,
                                          out.reshape(X.shape[0], -1), self._rows.array, np.zeros(width),
                                          np.zeros(width), np.zeros(self.n_outputs), np.zeros(self.in_features))
        after_loop("LinearRLS", xs, xws, done, status)
        return out

    def reset(self, keys: Sequence[Any] | None = None, *, state: bool = True, optimizer: bool = False) -> None:
        """``state=True`` empties the windows of past inputs (the given keys', every one by default;
        ``lags > 1``: the current event's inputs need none); ``optimizer=True`` forgets what was
        learned (weights and ``P``)."""
        if state:
            self._rows.reset(keys, "LinearRLS")
        if optimizer:
            self._forget_readout()

    def state_dict(self) -> dict[str, Any]:
        sd = self._saved_readout()
        windows = sd.pop("rows")
        return {**sd, "window": torch.from_numpy(windows if self.keyed else windows.reshape(-1))}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        try:
            if sd.get("format") != self.FORMAT:
                raise CheckpointError(f"unknown linear expert state format {sd.get('format')!r}; expected {self.FORMAT!r}.")
            w, P = as_float64(sd["w"]), as_float64(sd["P"])
            # saved before lags existed: no window, and the current event's inputs need none
            window = as_float64(sd["window"]) if "window" in sd else np.zeros(self.in_features)
            W = self._rows.width
            if w.shape != self._w.shape or P.shape != self._P.shape or window.shape[-1:] != (W,):
                raise CheckpointError(f"the saved linear expert has {w.shape[0]} weights, a {P.shape[0]}-entry P and a "
                                      f"{window.shape[-1]}-value window; this one has {self._w.shape[0]}, "
                                      f"{self._P.shape[0]} and {W} ({self.in_features} input(s), "
                                      f"{self.n_outputs} output(s), lags = {self.lags}). Build it with the same "
                                      "in_features, n_outputs and lags.")
            keys, windows = self._rows.checked(sd.get("keys", []), window, "LinearRLS")
            self.x_stats.load_state_dict({k: (v.numpy() if isinstance(v, torch.Tensor) else v)
                                          for k, v in sd["x_stats"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"the linear expert's state cannot be loaded: {exc}; was it saved by "
                                  "LinearRLS.state_dict()?") from None
        self._w, self._P = w, P
        self._rows.load(keys, windows)


class Change:
    """``member`` learns ``y - x[column]`` (the change from the last known value); the prediction is
    ``x[column]`` plus the member's prediction. With several targets (a member with ``n_outputs = T``)
    ``column`` is a sequence of ``T`` input columns, target ``k``'s last known value in ``column[k]``.
    Keyed when ``member`` is (then ``learn_batch(keys, X, Y)``); checkpoints hold the member's state.

    >>> c = Change(LinearRLS(1), column=0)
    >>> X = np.arange(3000.0)[:, None]
    >>> p = c.learn_batch(X, X[:, 0] + 0.5)  # a ramp: the level runs away, the change is constant
    >>> bool(abs(p[-1] - 2999.5) < 1e-3)
    True
    """

    FORMAT = "psann_stream.change/1"

    def __init__(self, member: Any, *, column: int | Sequence[int]) -> None:
        width = getattr(member, "in_features", None)
        if width is None or not hasattr(member, "learn_batch"):
            raise ConfigError(f"Change needs a learner (Learner, KeyedLearner, an expert), got {type(member).__name__}.")
        outputs = int(getattr(member, "n_outputs", 1))
        self.column: int | list[int] = _columns("Change", column, int(width), outputs)
        self.member = member
        self.n_outputs = outputs
        self.keyed = bool(getattr(member, "keyed", False))
        self.in_features = int(width)

    @property
    def alerts(self) -> list:
        return self.member.alerts

    def _last(self, X: Any) -> np.ndarray:
        return _rows(X, self.in_features, "Change")[:, self.column]

    def learn_batch(self, *args: Any) -> np.ndarray:
        """``(X, Y)``, or ``(keys, X, Y)`` for a keyed member: prequential predictions of the level."""
        *head, X, Y = args
        last = self._last(X)
        return self.member.learn_batch(*head, X, np.asarray(Y, dtype=np.float64).reshape(last.shape) - last) + last

    def predict_batch(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.member.predict_batch(*args, **kwargs) + self._last(args[-1])

    def learn_one(self, *args: Any) -> float | np.ndarray:
        """``(x, y)``, or ``(key, x, y)`` for a keyed member: one event through the member's
        ``learn_one``; returns the prediction of the level."""
        *head, x, y = args
        last = self._last(np.reshape(x, (1, -1)))[0]
        change = as_targets("Change.learn_one", y, 1, self.n_outputs)[0] - last
        p = self.member.learn_one(*head, x, float(change) if self.n_outputs == 1 else change) + last
        return float(p) if self.n_outputs == 1 else p

    def predict_one(self, *args: Any) -> float | np.ndarray:
        """``(x)`` (or the member's own arguments): the member's ``predict_one`` plus the last value."""
        p = self.member.predict_one(*args) + self._last(np.reshape(args[-1], (1, -1)))[0]
        return float(p) if self.n_outputs == 1 else p

    def reset(self, *args: Any, **kwargs: Any) -> None:
        self.member.reset(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"format": self.FORMAT, "column": self.column, "member": self.member.state_dict()}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        if sd.get("format") != self.FORMAT or sd.get("column") != self.column:
            raise CheckpointError(f"the saved state is not a Change of column {self.column} (format {sd.get('format')!r}, "
                                  f"column {sd.get('column')!r}); build it with the same column.")
        self.member.load_state_dict(sd["member"])
