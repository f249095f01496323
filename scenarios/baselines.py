"""Baselines for the scenario harness: established online learners, run prequentially (predict each
event, then learn it) on the same arrays as psann_stream.

Every model is a function ``(X [N, F], y [N], keys [N] or None) -> predictions [N]``:

* ``river LinearRegression``: ``StandardScaler() | LinearRegression()``;
* ``river HATR``: ``tree.HoeffdingAdaptiveTreeRegressor(seed=0)`` (drift-adaptive Hoeffding tree);
* ``river ARF``: ``forest.ARFRegressor(seed=0)`` (adaptive random forest, 10 trees, ADWIN per tree);
* ``eager MLP (Adam)``: a F-32-32-1 ReLU MLP, one eager autograd step of ``torch.optim.Adam``
  (lr 1e-3) per event, inputs and target standardised online with psann_stream's normaliser: what
  deep-river's ``Regressor`` does behind a scaler;
* ``eager LSTM (Adam)``: an LSTM (32 units) over the last 8 inputs of the stream, one Adam step per
  event: deep-river's ``RollingRegressor``.

river models are kept one per key on keyed streams; the torch baselines share their weights across
keys (the LSTM keeps a window per key), as psann_stream's keyed scenarios share weights with a state
per key. deep-river itself (0.3.4) pins torch<2.6 and imports ``river.anomaly.base``, which river 0.26
no longer has; it cannot run beside this project, so the two torch baselines stand in for it.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np
import torch

from psann_stream.normalize import RunningStats

__all__ = ["BASELINES", "eager_lstm", "eager_mlp", "river_arf", "river_hatr", "river_lr"]

Model = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def _river(make: Callable[[], object]) -> Model:
    def run(X: np.ndarray, y: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
        models: dict = {}
        out = np.empty(len(y))
        for i, (row, target) in enumerate(zip(X, y)):
            k = keys[i] if keys is not None else None
            m = models.get(k)
            if m is None:
                m = models[k] = make()
            x = {j: float(v) for j, v in enumerate(row)}
            out[i] = m.predict_one(x)  # type: ignore[attr-defined]
            m.learn_one(x, float(target))  # type: ignore[attr-defined]
        return out

    return run


def _lr() -> object:
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LinearRegression()


def _hatr() -> object:
    from river import tree

    return tree.HoeffdingAdaptiveTreeRegressor(seed=0)


def _arf() -> object:
    from river import forest

    return forest.ARFRegressor(seed=0)


river_lr, river_hatr, river_arf = _river(_lr), _river(_hatr), _river(_arf)


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


def eager_mlp(X: np.ndarray, y: np.ndarray, keys: np.ndarray | None, *, seed: int = 0, lr: float = 1e-3) -> np.ndarray:
    """F-32-32-1 ReLU MLP, one eager Adam step per event (see module doc)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                              torch.nn.ReLU(), torch.nn.Linear(32, 1)).double()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sc = _Scaled(X.shape[1])
    out = np.empty(len(y))
    for i in range(len(y)):
        xt = torch.from_numpy(sc.x(X[i]))[None, :]
        mean, std = sc.y_scale()
        yh = net(xt)[0, 0]
        out[i] = float(yh.detach()) * std + mean
        loss = (yh - (y[i] - mean) / std) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sc.learn_y(float(y[i]))
    return out


def eager_lstm(X: np.ndarray, y: np.ndarray, keys: np.ndarray | None, *, seed: int = 0, lr: float = 1e-3,
               window: int = 8) -> np.ndarray:
    """An LSTM over each key's last ``window`` inputs, one eager Adam step per event (see module doc)."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(X.shape[1], 32, batch_first=True).double()
    head = torch.nn.Linear(32, 1).double()
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=lr)
    sc = _Scaled(X.shape[1])
    windows: dict = {}
    out = np.empty(len(y))
    for i in range(len(y)):
        k = keys[i] if keys is not None else None
        w = windows.setdefault(k, deque(maxlen=window))
        w.append(sc.x(X[i]))
        seq = torch.from_numpy(np.stack(w))[None, :, :]
        mean, std = sc.y_scale()
        h, _ = lstm(seq)
        yh = head(h[0, -1])[0]
        out[i] = float(yh.detach()) * std + mean
        loss = (yh - (y[i] - mean) / std) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sc.learn_y(float(y[i]))
    return out


BASELINES: dict[str, Model] = {
    "river LinearRegression": river_lr,
    "river HATR": river_hatr,
    "river ARF": river_arf,
    "eager MLP (Adam)": eager_mlp,
    "eager LSTM (Adam)": eager_lstm,
}
