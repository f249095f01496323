"""The river adapter against river's linear model and a deep-river-style eager MLP, on FriedmanDrift.

Run: ``python -m psann_stream.scenarios.bench_river``. Prequential MAE (``evaluate.progressive_val_score``:
predict each sample, then learn it) on ``FriedmanDrift(drift_type="gra", position=(3500, 7000), seed=42)``,
10,000 samples, every model measured in the same run:

* ``StandardScaler | StatefulRegressor()`` — psann_stream with its defaults;
* ``StandardScaler | LinearRegression()`` — river;
* ``StandardScaler | eager MLP`` — a 10-32-32-1 ReLU network of the same size, one eager autograd
  step of ``torch.optim.Adam(lr=1e-3)`` per sample (deep-river's Regressor), with and without
  river's ``TargetStandardScaler`` (deep-river does not scale targets by default).
"""

from __future__ import annotations

import time

import torch
from river import base, evaluate, linear_model, metrics, preprocessing
from river.datasets import synth

from psann_stream.adapters.river import StatefulRegressor


class EagerMLP(base.Regressor):
    """Same-size MLP trained per sample with eager autograd and Adam (the deep-river approach).

    Parameters
    ----------
    lr
        Adam's learning rate.
    seed
        Seed of the initialisation.
    """

    def __init__(self, lr: float = 1e-3, seed: int = 0) -> None:
        self.lr = lr
        self.seed = seed
        torch.manual_seed(seed)
        self._net = torch.nn.Sequential(
            torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
        )
        self._opt = torch.optim.Adam(self._net.parameters(), lr=lr)

    def _x(self, x: dict) -> torch.Tensor:
        return torch.tensor([[float(x.get(i, 0.0)) for i in range(10)]])

    def learn_one(self, x: dict, y: float) -> None:
        loss = torch.nn.functional.mse_loss(self._net(self._x(x)), torch.tensor([[float(y)]]))
        self._opt.zero_grad()
        loss.backward()
        self._opt.step()

    def predict_one(self, x: dict) -> float:
        with torch.no_grad():
            return float(self._net(self._x(x)))


def _data():
    return synth.FriedmanDrift(drift_type="gra", position=(3500, 7000), seed=42).take(10_000)


def main() -> None:
    torch.set_num_threads(1)
    models = {
        "StandardScaler | StatefulRegressor()": preprocessing.StandardScaler() | StatefulRegressor(),
        "StandardScaler | LinearRegression()": preprocessing.StandardScaler() | linear_model.LinearRegression(),
        "StandardScaler | eager MLP (Adam 1e-3)": preprocessing.StandardScaler() | EagerMLP(),
        "StandardScaler | TargetStandardScaler(eager MLP)": preprocessing.StandardScaler()
        | preprocessing.TargetStandardScaler(EagerMLP()),
    }
    print(f"{'model':<50} {'MAE':>7} {'seconds':>8}")
    for name, model in models.items():
        t = time.perf_counter()
        mae = evaluate.progressive_val_score(_data(), model, metrics.MAE()).get()
        print(f"{name:<50} {mae:7.3f} {time.perf_counter() - t:8.1f}", flush=True)
    print("FriedmanDrift(drift_type='gra', position=(3500, 7000), seed=42), 10,000 samples, prequential MAE")


if __name__ == "__main__":
    main()
