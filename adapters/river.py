"""psann_stream's stateful models as a river regressor.

``StatefulRegressor`` is a ``river.base.MiniBatchRegressor`` around a
:class:`~psann_stream.learner.Learner`: ``learn_one(x: dict, y)`` / ``predict_one(x) -> float`` and
``learn_many`` / ``predict_many`` on pandas DataFrames and pyarrow Tables or RecordBatches.

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
* **Normalisation.** Inputs go through river's ``preprocessing.StandardScaler`` (per-feature running
  statistics, so emerging features start fresh), updated after each event is learned; the target is
  normalised inside the Learner (``normalize_y``).
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
from river import base, preprocessing

from psann_stream.errors import ConfigError, NonFiniteInputError
from psann_stream.learner import Learner
from psann_stream.model import StatefulNet
from psann_stream.state import StateConfig

__all__ = ["StatefulRegressor"]


class StatefulRegressor(base.MiniBatchRegressor):
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
        self._learner: Learner | None = None
        self._scaler = preprocessing.StandardScaler()

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
            StatefulNet(n, hidden=tuple(self.hidden), state=self._config, seed=self.seed),
            optimizer=self.optimizer,
            optimizer_kwargs=kwargs,
            normalize_x=False,
            normalize_y=self.normalize_y,
            state_grad=self.state_grad,
            readout=self.readout,
        )

    def _admit(self, names: list[Hashable]) -> None:
        """Add unseen feature names (kept sorted) and widen the model, keeping what it learned."""
        new = [n for n in names if n not in set(self._features)]
        if not new:
            return
        merged = sorted(set(self._features) | set(new), key=str)
        if self._learner is None:
            self._features = merged
            self._learner = self._new_learner(len(merged))
            return
        # Widen: append the new inputs, then permute the first layer's columns into sorted order.
        learner = self._learner
        learner.grow_inputs(len(merged))
        order = self._features + new
        perm = [order.index(n) for n in merged]
        sd = learner.state_dict()
        w = sd["model"]["layers.0.linear.weight"]
        sd["model"]["layers.0.linear.weight"] = w[:, perm]
        offset = _param_offset(learner, "layers.0.linear.weight")
        h = w.shape[0]
        flats = [sd["optimizer"]["buf1"], sd["optimizer"]["buf2"]]
        n_params = flats[0].numel()
        flats += list(sd["traces"].reshape(-1, n_params)) if sd["traces"].numel() else []  # views: one per component
        for flat in flats:
            block = flat[offset : offset + w.numel()].reshape(h, -1)
            flat[offset : offset + w.numel()] = block[:, perm].reshape(-1)
        learner.load_state_dict(sd)
        self._features = merged

    def _vector(self, x: Mapping[Hashable, Any], *, where: str) -> np.ndarray:
        values = {}
        for k, v in x.items():
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: feature {k!r} = {v!r} is not a number.") from None
            if not math.isfinite(f):
                raise NonFiniteInputError(
                    f"{where}: feature {k!r} is {f!r}; nothing was learned. Drop the key to mark a missing value."
                )
            values[k] = f
        scaled = self._scaler.transform_one(values) if self.normalize_x else values
        vec = np.zeros(len(self._features))
        for i, name in enumerate(self._features):
            if name in scaled:
                vec[i] = scaled[name]
        return vec

    # ------------------------------------------------------------------ river API
    def learn_one(self, x: dict, y: float) -> None:
        self._admit(sorted(x, key=str))
        vec = self._vector(x, where="learn_one")
        self._learner.learn_one(vec, float(y))  # type: ignore[union-attr]
        if self.normalize_x:
            self._scaler.learn_one({k: float(v) for k, v in x.items()})

    def predict_one(self, x: dict) -> float:
        if self._learner is None:
            return 0.0
        known = {k: v for k, v in x.items() if k in set(self._features)}
        return self._learner.predict_one(self._vector(known, where="predict_one"))

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


def _param_offset(learner: Learner, name: str) -> int:
    off = 0
    for n, p in learner.model.named_parameters():
        if n == name:
            return off
        off += p.numel()
    raise KeyError(name)


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
