"""Baselines for the scenario harness: established online learners, run prequentially (predict each
event, then learn it) on the same arrays as psann_stream.

Every baseline is a factory ``(n_features) -> model`` whose ``learn_one(x, y, key)`` predicts ``x``,
learns ``y`` and returns the prediction; :func:`prequential` runs one over a stream (optionally timing
every call, for ``psann-stream bench``):

* ``river LinearRegression``: ``StandardScaler() | LinearRegression()``;
* ``river HATR``: ``tree.HoeffdingAdaptiveTreeRegressor(seed=0)`` (drift-adaptive Hoeffding tree);
* ``river ARF``: ``forest.ARFRegressor(seed=0)`` (adaptive random forest, 10 trees, ADWIN per tree);
* ``eager MLP (Adam)``: a F-32-32-1 ReLU MLP, one eager autograd step of ``torch.optim.Adam``
  (lr 1e-3) per event, inputs and target standardised online with psann_stream's normaliser: what
  deep-river's ``Regressor`` does behind a scaler;
* ``eager LSTM (Adam)``: an LSTM (32 units) over the last 8 inputs of the stream, one Adam step per
  event: deep-river's ``RollingRegressor``;
* ``ESN + RLS``: an echo-state network (reservoirpy) whose linear readout is learned online by
  recursive least squares, the classic strong baseline on memory and chaotic streams.

river models are kept one per key on keyed streams; the torch baselines share their weights across
keys (the LSTM keeps a window per key), as psann_stream's keyed scenarios share weights with a state
per key. deep-river itself (0.3.4) pins torch<2.6 and imports ``river.anomaly.base``, which river 0.26
no longer has; it cannot run beside this project, so the two torch baselines stand in for it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Hashable

import numpy as np
import torch

from psann_stream.normalize import RunningStats

__all__ = ["BASELINES", "EagerLSTM", "EagerMLP", "EchoStateRLS", "RiverPerKey", "prequential"]


class RiverPerKey:
    """A river regressor per key (one for an unkeyed stream), made by ``make()`` on first sight."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make, self.models = make, {}

    def learn_one(self, x: np.ndarray, y: float, key: Hashable = None) -> float:
        m = self.models.get(key)
        if m is None:
            m = self.models[key] = self.make()
        row = {j: float(v) for j, v in enumerate(x)}
        pred = m.predict_one(row)
        m.learn_one(row, float(y))
        return float(pred)


def _lr() -> Any:
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LinearRegression()


def _hatr() -> Any:
    from river import tree

    return tree.HoeffdingAdaptiveTreeRegressor(seed=0)


def _arf() -> Any:
    from river import forest

    return forest.ARFRegressor(seed=0)


class _Scaled:
    """Online standardisation of inputs and target around an eager torch model: psann_stream's own
    normaliser with its defaults (outlier-limited at 10 std), so both sides see the same inputs."""

    def __init__(self, n_features: int) -> None:
        self.xs, self.ys = RunningStats(n_features, clip=10.0), RunningStats(1, clip=10.0)

    def x(self, row: np.ndarray) -> np.ndarray:
        self.xs.update(row)
        return self.xs.transform(row)

    def y_scale(self) -> tuple[float, float]:
        return float(self.ys.mean[0]), float(self.ys.std[0])

    def learn_y(self, target: float) -> None:
        self.ys.update(np.array([[target]]))


class _Eager:
    """One eager autograd Adam step per event on the squared error in standardised target units."""

    def __init__(self, n_features: int, params: list[torch.nn.Parameter], lr: float) -> None:
        self.sc = _Scaled(n_features)
        self.opt = torch.optim.Adam(params, lr=lr)

    def _step(self, yh: torch.Tensor, y: float) -> float:
        mean, std = self.sc.y_scale()
        pred = float(yh.detach()) * std + mean
        loss = (yh - (y - mean) / std) ** 2
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sc.learn_y(float(y))
        return pred


class EagerMLP(_Eager):
    """F-32-32-1 ReLU MLP, shared by all keys (see module doc)."""

    def __init__(self, n_features: int, *, seed: int = 0, lr: float = 1e-3) -> None:
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(n_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                       torch.nn.ReLU(), torch.nn.Linear(32, 1)).double()
        super().__init__(n_features, list(self.net.parameters()), lr)

    def learn_one(self, x: np.ndarray, y: float, key: Hashable = None) -> float:
        return self._step(self.net(torch.from_numpy(self.sc.x(x))[None, :])[0, 0], y)


class EagerLSTM(_Eager):
    """An LSTM (32 units) over each key's last ``window`` inputs, weights shared (see module doc)."""

    def __init__(self, n_features: int, *, seed: int = 0, lr: float = 1e-3, window: int = 8) -> None:
        torch.manual_seed(seed)
        self.lstm = torch.nn.LSTM(n_features, 32, batch_first=True).double()
        self.head = torch.nn.Linear(32, 1).double()
        self.window, self.windows = window, {}
        super().__init__(n_features, [*self.lstm.parameters(), *self.head.parameters()], lr)

    def learn_one(self, x: np.ndarray, y: float, key: Hashable = None) -> float:
        w = self.windows.setdefault(key, deque(maxlen=self.window))
        w.append(self.sc.x(x))
        h, _ = self.lstm(torch.from_numpy(np.stack(w))[None, :, :])
        return self._step(self.head(h[0, -1])[0], y)


class EchoStateRLS:
    """An echo-state network (reservoirpy ``Reservoir``: 200 tanh units, spectral radius 0.9, leak
    ``leak``, input scaling 0.5) whose linear readout is learned online by recursive least squares
    (reservoirpy ``RLS``, forgetting 0.9995), on inputs standardised online like the torch baselines.
    Each event: the reservoir advances with the input, the readout predicts with its current weights
    (prequential), then learns the target. Keyed streams keep a reservoir state per key and share the
    readout. Needs ``reservoirpy`` (the ``scenarios`` extra)."""

    def __init__(self, n_features: int, *, seed: int = 0, units: int = 200, sr: float = 0.9, leak: float = 1.0,
                 input_scaling: float = 0.5, forgetting: float = 0.9995) -> None:
        from reservoirpy.nodes import RLS, Reservoir

        self.sc = _Scaled(n_features)
        self.reservoir = Reservoir(units=units, sr=sr, lr=leak, input_scaling=input_scaling, seed=seed, input_dim=n_features)
        self.reservoir.initialize(np.zeros((1, n_features)))
        self.readout = RLS(forgetting=forgetting, input_dim=units, output_dim=1)
        self.readout.initialize(np.zeros((1, units)), np.zeros((1, 1)))
        self.states: dict[Hashable, dict] = {}
        self.fresh = {k: v.copy() for k, v in self.reservoir.state.items()}

    def learn_one(self, x: np.ndarray, y: float, key: Hashable = None) -> float:
        self.reservoir.state = self.states.get(key) or {k: v.copy() for k, v in self.fresh.items()}
        r = self.reservoir.step(self.sc.x(x))
        self.states[key] = self.reservoir.state
        pred = float(self.readout.step(r)[0])  # before learning this event
        self.readout.partial_fit(r[None, :], np.array([[y]]))
        return pred


def prequential(model: Any, X: np.ndarray, y: np.ndarray, keys: np.ndarray | None,
                latencies: np.ndarray | None = None) -> np.ndarray:
    """Predict-then-learn every event with ``model.learn_one(x, y, key)``; with ``latencies`` (an
    ``[N]`` array), the seconds of each call are stored there."""
    out = np.empty(len(y))
    clock = time.perf_counter
    for i in range(len(y)):
        k = None if keys is None else keys[i]
        if latencies is None:
            out[i] = model.learn_one(X[i], float(y[i]), k)
        else:
            t = clock()
            out[i] = model.learn_one(X[i], float(y[i]), k)
            latencies[i] = clock() - t
    return out


# name -> factory(n_features) of a model with learn_one(x, y, key) -> prediction
BASELINES: dict[str, Callable[[int], Any]] = {
    "river LinearRegression": lambda f: RiverPerKey(_lr),
    "river HATR": lambda f: RiverPerKey(_hatr),
    "river ARF": lambda f: RiverPerKey(_arf),
    "eager MLP (Adam)": EagerMLP,
    "eager LSTM (Adam)": EagerLSTM,
    "ESN + RLS": EchoStateRLS,
}
