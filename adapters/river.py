"""psann_stream's stateful models as a river regressor.

``StatefulRegressor`` is a ``river.base.MiniBatchRegressor`` around a
:class:`~psann_stream.learner.Learner`: ``learn_one(x: dict, y)`` / ``predict_one(x) -> float`` and
``learn_many`` / ``predict_many`` on pandas DataFrames and pyarrow Tables or RecordBatches.
``StatefulMultiTargetRegressor`` is its ``river.base.MultiTargetRegressor`` twin for several targets
per event (``y`` and predictions are dicts), one model with that many outputs.

Semantics:

* **State.** The model's state advances with every ``learn_one`` (and every row of ``learn_many``),
  in stream order. ``predict_one`` is pure: it predicts from the current weights and state and
  changes nothing, so calling it any number of times is safe; ``predict_many`` predicts every row
  from that same state (rows are not treated as a sequence).
* **Features** are ordered by sorted name (their ``str``), so the order of a dict's keys never
  matters. A feature seen for the first time widens the input layer with zero weights
  (:meth:`Learner.grow_inputs`): nothing learned is lost. A missing feature is zero-filled after
  normalisation, i.e. it contributes its running mean. In ``learn_many`` / ``predict_many`` a NaN
  cell means "missing" (pandas' convention); in ``learn_one`` / ``predict_one`` a NaN or inf value
  raises ``NonFiniteInputError``.
* **Normalisation.** Each input is standardised by its own running mean and variance, the arithmetic
  of river's ``preprocessing.StandardScaler`` (population variance; a feature with no variance maps to
  0) in arrays aligned with the features, so an emerging feature starts fresh; the statistics are
  updated after each event is learned. The target is normalised inside the Learner (``normalize_y``).
* **Speed.** A dict with the same keys in the same order as the previous call takes a cached
  feature order and preallocated arrays to the Learner (no per-key Python work beyond reading the
  values); any other dict takes the general path.
* ``x`` is never mutated nor kept; pickling keeps weights, optimiser, normalisers and state;
  ``clone()`` gives a fresh, unfitted model with the same parameters.

>>> from river import evaluate, metrics, preprocessing
>>> from river.datasets import synth
>>> model = preprocessing.StandardScaler() | StatefulRegressor(hidden=(16, 16), seed=1)
>>> metric = evaluate.progressive_val_score(synth.Friedman(seed=1).take(300), model, metrics.MAE())
>>> metric.get() < 5.0
True
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Mapping

import numpy as np
from numba import njit
from river import base

from psann_stream.errors import ConfigError, NonFiniteInputError
from psann_stream.learner import Learner
from psann_stream.model import StatefulNet
from psann_stream.state import StateConfig

__all__ = ["StatefulMultiTargetRegressor", "StatefulRegressor"]


# The one input of a model whose first events carry no feature at all (a dict with every feature missing):
# always 0, i.e. missing; real features join it later as for any model.
_NO_FEATURE = "\0no feature"


class _DictInputs:
    """What both river estimators share: their parameters (documented on :class:`StatefulRegressor`)
    and the features of dicts turned into a Learner's input row by the module doc's rules."""

    _outputs = 1  # targets per event (StatefulMultiTargetRegressor: as many as its first target dict names)

    def __init__(
        self,
        hidden: tuple[int, ...] = (32, 32),
        state: Mapping[str, Any] | StateConfig | None = None,
        optimizer: str = "adam",
        lr: float | None = 0.005,
        normalize_x: bool = True,
        normalize_y: bool = True,
        seed: int = 0,
        state_grad: str = "truncated",
        readout: str = "gradient",
    ) -> None:
        self.hidden = hidden
        self.state = state
        self.optimizer = optimizer
        self.lr = lr
        self.normalize_x = normalize_x
        self.normalize_y = normalize_y
        self.seed = seed
        self.state_grad = state_grad
        self.readout = readout
        self._config = StateConfig() if state is None else StateConfig.from_mapping(state)
        self._features: list[Hashable] = []
        self._position: dict[Hashable, int] = {}  # feature -> column
        self._learner: Learner | None = None
        # the input scaler, per column: values seen, mean, population variance (river's StandardScaler)
        self._count, self._mean, self._var = np.zeros(0), np.zeros(0), np.zeros(0)
        self._last_keys: tuple[Hashable, ...] = ()  # the keys of the last dict, in its order ...
        self._last_columns = np.zeros(0, dtype=np.int64)  # ... and their columns
        self._row = np.zeros(0)  # the input row handed to the learner (it copies it)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": (8, 8), "seed": 1}
        yield {"hidden": (6,), "optimizer": "intentional", "state": {"mode": "gain", "init": 0.5}, "seed": 2}
        yield {"hidden": (6,), "optimizer": "obgd", "state": {"mode": "trace", "oscillatory": True}, "seed": 3,
               "state_grad": "traced", "readout": "rls"}

    # ------------------------------------------------------------------ features
    def _new_learner(self, n: int) -> Learner:
        kwargs = {} if self.lr is None else {"lr": float(self.lr)}
        return Learner(
            StatefulNet(n, self._outputs, hidden=tuple(self.hidden), state=self._config, seed=self.seed),
            optimizer=self.optimizer,
            optimizer_kwargs=kwargs,
            normalize_x=False,
            normalize_y=self.normalize_y,
            state_grad=self.state_grad,
            readout=self.readout,
        )

    def _learn_row(self, x: dict, target: Any) -> None:
        """Learn ``x`` (admitting its new features) with ``target`` (a float, or ``T`` values)."""
        keys = tuple(x)
        if self._learner is None and not keys:
            self._admit([_NO_FEATURE])
        elif keys != self._last_keys:
            self._admit(sorted(x, key=str))
        values, columns = self._values(x, keys, where="learn_one")
        self._learner.learn_one(self._vector(values, columns), target)  # type: ignore[union-attr]
        if self.normalize_x:
            _learn_scaler(values, columns, self._count, self._mean, self._var)

    def _predict_row(self, x: dict) -> Any:
        """The learner's prediction for ``x`` (unknown features left out); the learner must exist."""
        keys = tuple(x)
        if keys != self._last_keys and any(k not in self._position for k in keys):
            x = {k: v for k, v in x.items() if k in self._position}
            keys = tuple(x)
        values, columns = self._values(x, keys, where="predict_one")
        return self._learner.predict_one(self._vector(values, columns))  # type: ignore[union-attr]

    def _admit(self, names: list[Hashable]) -> None:
        """Add unseen feature names (kept sorted) and widen the model, keeping what it learned."""
        new = [n for n in names if n not in self._position]
        if not new:
            return
        merged = sorted(set(self._features) | set(new), key=str)
        moved = np.array([merged.index(n) for n in self._features], dtype=np.int64)  # old column -> new
        for name in ("_count", "_mean", "_var"):
            grown = np.zeros(len(merged))
            grown[moved] = getattr(self, name)
            setattr(self, name, grown)
        self._last_keys = ()
        if self._learner is None:
            self._features, self._position = merged, {n: i for i, n in enumerate(merged)}
            self._learner = self._new_learner(len(merged))
            return
        # Widen: append the new inputs, then put them in sorted order.
        order = self._features + new
        self._learner.grow_inputs(len(merged))
        self._learner.permute_inputs([order.index(n) for n in merged])
        self._features, self._position = merged, {n: i for i, n in enumerate(merged)}

    def _values(self, x: Mapping[Hashable, Any], keys: tuple[Hashable, ...], *, where: str) -> tuple[np.ndarray, np.ndarray]:
        """``x``'s values as float64 and the column of each (``keys``: ``tuple(x)``, every one a known
        feature)."""
        if keys == self._last_keys:
            columns = self._last_columns
        else:
            columns = np.array([self._position[k] for k in keys], dtype=np.int64)
            self._last_keys, self._last_columns = keys, columns
        try:
            values = np.fromiter(x.values(), dtype=np.float64, count=len(keys))
        except (TypeError, ValueError):
            values = None
        if values is None or not math.isfinite(float(values.dot(values))):
            for k, v in x.items():  # find the culprit, with a message that names it
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}: feature {k!r} = {v!r} is not a number.") from None
                if not math.isfinite(f):
                    raise NonFiniteInputError(
                        f"{where}: feature {k!r} is {f!r}; nothing was learned. Drop the key to mark a missing value."
                    )
            values = np.fromiter((float(v) for v in x.values()), dtype=np.float64, count=len(keys))
        return values, columns

    def _vector(self, values: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The input row: each present feature scaled, absent ones 0 (their running mean)."""
        vec = self._row
        if vec.shape[0] != len(self._features):
            vec = self._row = np.empty(len(self._features))
        _scaled_row(values, columns, self._mean, self._var, self.normalize_x, vec)
        return vec


class StatefulRegressor(_DictInputs, base.MiniBatchRegressor):
    """A stateful PSANN network learning online, as a river regressor (see the module doc).

    Parameters
    ----------
    hidden
        Widths of the stateful sine layers.
    state
        The state configuration: ``None`` (the default StateConfig), a mapping accepted by
        ``StateConfig.from_mapping`` (psann dicts included) or a StateConfig.
    optimizer
        ``"adam"`` (default here), ``"obgd"`` or ``"intentional"``.
    lr
        Step size of the optimiser; ``None`` keeps the optimiser's own default (ObGD 1.0,
        intentional 0.5, Adam 1e-3). The default, Adam with 0.005, was the best of the settings tried
        on river's FriedmanDrift (docs/river.md); the Learner's own default, ObGD, does better on
        the signal streams of the demo.
    normalize_x
        Standardise each feature online (river's StandardScaler).
    normalize_y
        Standardise the target online inside the learner.
    seed
        Seed of the network's initialisation.
    state_grad
        ``"truncated"`` (default) or ``"traced"``: learn through the state with eligibility traces
        (``Learner(state_grad=...)``; recommended with ``state={"oscillatory": True}``).
    readout
        ``"gradient"`` (default) or ``"rls"``: learn the output layer by recursive least squares
        (``Learner(readout=...)``).
    """

    # ------------------------------------------------------------------ river API
    def learn_one(self, x: dict, y: float) -> None:
        self._learn_row(x, float(y))

    def predict_one(self, x: dict) -> float:
        return 0.0 if self._learner is None else self._predict_row(x)

    def learn_many(self, X: Any, y: Any) -> None:
        rows, targets = _rows(X), _targets(y)
        if len(rows) != len(targets):
            raise ConfigError(f"learn_many: {len(rows)} row(s) but {len(targets)} target(s).")
        for x, t in zip(rows, targets):
            self.learn_one(x, t)

    def predict_many(self, X: Any) -> Any:
        rows = _rows(X)
        preds = [self.predict_one(x) for x in rows]
        index = getattr(X, "index", None)
        try:
            import pandas as pd

            return pd.Series(preds, index=index, dtype=float)
        except ImportError:  # pragma: no cover - pandas is optional for Arrow users
            return np.asarray(preds)


class StatefulMultiTargetRegressor(_DictInputs, base.MultiTargetRegressor):
    """Several targets per event, one model with that many outputs: ``learn_one(x: dict, y: dict)``,
    ``predict_one(x) -> dict``, as a river multi-target regressor. The first ``y`` names the targets
    (sorted by their ``str``); every later ``y`` must hold the same names (a missing or new name is a
    ``ConfigError``; nothing is learned). Features, state, normalisation, parameters and speed are
    those of :class:`StatefulRegressor` (the module doc); ``predict_one`` before any learning returns
    ``{}``. Parameters: those of :class:`StatefulRegressor`.

    >>> model = StatefulMultiTargetRegressor(hidden=(8,), seed=0)
    >>> for t in range(50):
    ...     model.learn_one({"a": float(t % 5)}, {"double": 2.0 * (t % 5), "neg": -float(t % 5)})
    >>> sorted(model.predict_one({"a": 1.0}))
    ['double', 'neg']
    """

    _targets: tuple[Hashable, ...] = ()  # the target names, from the first y (set per instance then)

    def _target_row(self, y: Mapping[Hashable, Any]) -> np.ndarray:
        if not self._targets:
            if not isinstance(y, Mapping) or not y:
                raise ConfigError(f"learn_one: y must be a dict of target name -> number, got {y!r}.")
            self._targets = tuple(sorted(y, key=str))
            self._outputs = len(self._targets)
        if not isinstance(y, Mapping) or len(y) != self._outputs or any(t not in y for t in self._targets):
            names = sorted(y, key=str) if isinstance(y, Mapping) else y
            raise ConfigError(f"learn_one: the targets are {list(self._targets)} (from the first y); this y has "
                              f"{names}. Nothing was learned.")
        try:
            return np.array([float(y[t]) for t in self._targets])
        except (TypeError, ValueError):
            raise ConfigError(f"learn_one: a target of {dict(y)!r} is not a number; nothing was learned.") from None

    def learn_one(self, x: dict, y: dict) -> None:  # type: ignore[override]
        self._learn_row(x, self._target_row(y))

    def predict_one(self, x: dict) -> dict:  # type: ignore[override]
        if self._learner is None:
            return {}
        return dict(zip(self._targets, np.atleast_1d(self._predict_row(x)).tolist()))


@njit(cache=True)
def _scaled_row(values: np.ndarray, columns: np.ndarray, mean: np.ndarray, var: np.ndarray, scale: bool,
                row: np.ndarray) -> None:
    """``row[columns[i]] = (values[i] - mean) / sqrt(var)`` of that column (0 where its variance is 0;
    ``values[i]`` itself without ``scale``); the other columns 0."""
    row[:] = 0.0
    for i in range(columns.shape[0]):
        c = columns[i]
        if not scale:
            row[c] = values[i]
        elif var[c] != 0.0:
            row[c] = (values[i] - mean[c]) / math.sqrt(var[c])


@njit(cache=True)
def _learn_scaler(values: np.ndarray, columns: np.ndarray, count: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
    """Welford's update of the present columns, in river's StandardScaler's order of operations."""
    for i in range(columns.shape[0]):
        c, v = columns[i], values[i]
        n = count[c] + 1.0
        old = mean[c]
        mean[c] = old + (v - old) / n
        var[c] = var[c] + ((v - old) * (v - mean[c]) - var[c]) / n
        count[c] = n


def _rows(X: Any) -> list[dict]:
    """Rows of a pandas DataFrame or a pyarrow Table/RecordBatch as dicts; NaN cells are missing."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover
        pa = None
    if pa is not None and isinstance(X, (pa.Table, pa.RecordBatch)):
        cols = {name: X.column(i).to_numpy(zero_copy_only=False).astype(np.float64) for i, name in enumerate(X.schema.names)}
    elif hasattr(X, "columns") and hasattr(X, "to_numpy"):
        cols = {name: X[name].to_numpy(dtype=np.float64) for name in X.columns}
    else:
        raise ConfigError(f"expected a pandas DataFrame or a pyarrow Table/RecordBatch, got {type(X).__name__}.")
    names = list(cols)
    matrix = np.column_stack([cols[n] for n in names]) if names else np.empty((0, 0))
    n_rows = X.num_rows if pa is not None and isinstance(X, (pa.Table, pa.RecordBatch)) else len(X)
    out = []
    for r in range(n_rows):
        row = matrix[r] if names else []
        out.append({n: float(v) for n, v in zip(names, row) if not math.isnan(v)})
    return out


def _targets(y: Any) -> list[float]:
    if hasattr(y, "to_numpy"):
        return [float(v) for v in y.to_numpy()]
    return [float(v) for v in np.asarray(y, dtype=np.float64).reshape(-1)]
