"""Throughput of the streaming learner, as ratios against baselines measured in the same run.

Run: ``python -m psann_stream.scenarios.bench_learner [--events N] [--keys K]``.

Every rate is events per second of exact per-event prequential learning (predict each event with
the model as it was, then learn it) on one synthetic 10-feature stream:

* ``Learner.learn_batch``: psann_stream's compiled loop, 10-32-32-1 StatefulNet, ObGD, input and
  target normalisers and the monitor on (the defaults: gradient truncated at the state), in
  1,000-event calls;
* ``Learner.learn_one``: the same, one numpy row per call (what a per-event caller pays);
* ``StatefulRegressor``: the river adapter, ``predict_one`` then ``learn_one`` on dicts (its default
  optimiser, Adam, and ObGD);
* ``Learner, traced``: the same with exact traces through the state (``state_grad="traced"``), and
  with oscillatory pairs as well (the recommended configuration for memory);
* ``Learner, 7 outputs``: the default learner with a head of seven outputs learning seven targets
  (``StatefulNet(10, 7)``; the targets: the stream's and six shifted copies);
* ``Ensemble``: :func:`~psann_stream.ensemble.default_ensemble`, its members side by side and their
  mixture, in 1,000-event calls, and one event per call (``predict_one`` then ``learn_one``, as a
  river pipeline calls it);
* ``eager torch Adam``: the same network, one eager autograd forward/backward and one
  ``torch.optim.Adam`` step per event (what deep-river and psann do);
* ``river LinearRegression``: ``river.linear_model.LinearRegression`` predict_one/learn_one on dicts,
  bare and behind ``preprocessing.StandardScaler``;
* ``KeyedLearner``: K keys with their own weights, state, optimiser and normalisers, threads = cores,
  4,096-event calls; and K keys with shared weights and a state each (the library's default keyed
  learner);
* ``Ensemble, keyed``: ``default_ensemble(keyed=True)`` on the same K keys, 4,096-event calls.

Machines are shared and noisy: each rate is the best of a few repeats, and only ratios measured
in one run are meaningful.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import numpy as np
import torch

from psann_stream import KeyedLearner, Learner, StateConfig, StatefulNet
from psann_stream.ensemble import default_ensemble


ENSEMBLE_ROW = "Ensemble (default_ensemble), learn_batch"
KEYED_LEARNER_ROW = "KeyedLearner (shared weights), learn_batch"
KEYED_ENSEMBLE_ROW = "Ensemble, keyed, learn_batch"


def _stream(n: int, f: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f))
    y = np.sin(X[:, 0] + 0.5 * X[:, 1]) + 0.3 * X[:, 2] * X[:, 3] + 0.05 * rng.standard_normal(n)
    return X, y


def _best_rate(run: Callable[[], int], repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        n = run()
        best = max(best, n / (time.perf_counter() - t))
    return best


def _rate_in_calls(learn_batch: Callable[..., object], arrays: tuple[np.ndarray, ...], batch: int, repeats: int) -> float:
    """Best events/s of ``learn_batch`` over ``arrays`` (one row per event) in ``batch``-event calls."""
    n = len(arrays[0])

    def run() -> int:
        for lo in range(0, n, batch):
            learn_batch(*(a[lo:lo + batch] for a in arrays))
        return n

    return _best_rate(run, repeats)


def learner_rate(X: np.ndarray, y: np.ndarray, repeats: int, state: StateConfig = StateConfig(), batch: int = 1000,
                 **kwargs) -> float:
    """``Learner.learn_batch`` in ``batch``-event calls; ``y [N, T]`` learns ``T`` outputs."""
    outputs = 1 if y.ndim == 1 else y.shape[1]
    lrn = Learner(StatefulNet(X.shape[1], outputs, hidden=(32, 32), state=state, seed=0), **kwargs)
    lrn.learn_batch(X[:500], y[:500])  # compile
    return _rate_in_calls(lrn.learn_batch, (X, y), batch, repeats)


def learn_one_rate(X: np.ndarray, y: np.ndarray, repeats: int) -> float:
    """``Learner.learn_one(x_row, y)`` per event (numpy float64 rows, Python float targets)."""
    lrn = Learner(StatefulNet(X.shape[1], hidden=(32, 32), seed=0))
    rows, targets = list(X), [float(t) for t in y]
    lrn.learn_batch(X[:500], y[:500])  # compile

    def run() -> int:
        for x, t in zip(rows, targets):
            lrn.learn_one(x, t)
        return len(rows)

    return _best_rate(run, repeats)


def _dict_rows(X: np.ndarray) -> list[dict[str, float]]:
    return [{f"x{j}": float(v) for j, v in enumerate(r)} for r in X]  # converted outside the timing


def _river_rate(make: Callable[[], object], X: np.ndarray, y: np.ndarray, repeats: int, warm: int = 0) -> float:
    """``predict_one`` then ``learn_one`` per event on dicts, for a fresh model from ``make()``
    (after ``warm`` events outside the timing)."""
    rows, targets = _dict_rows(X), [float(t) for t in y]

    def run() -> int:
        model = make()
        for x, t in zip(rows[:warm], targets[:warm]):
            model.predict_one(x)
            model.learn_one(x, t)
        start = time.perf_counter()
        for x, t in zip(rows[warm:], targets[warm:]):
            model.predict_one(x)
            model.learn_one(x, t)
        run.seconds = time.perf_counter() - start  # type: ignore[attr-defined]
        return len(rows) - warm

    best = 0.0
    for _ in range(repeats):
        n = run()
        best = max(best, n / run.seconds)  # type: ignore[attr-defined]
    return best


def ensemble_rate(X: np.ndarray, y: np.ndarray, repeats: int, batch: int = 1000) -> float:
    """:func:`~psann_stream.ensemble.default_ensemble` (no persistence column) in
    ``batch``-event calls."""
    ens = default_ensemble(X.shape[1])
    ens.learn_batch(X[:500], y[:500])  # compile
    return _rate_in_calls(ens.learn_batch, (X, y), batch, repeats)


def ensemble_one_rate(X: np.ndarray, y: np.ndarray, repeats: int) -> float:
    """:func:`~psann_stream.ensemble.default_ensemble`'s ``predict_one`` then ``learn_one`` per event."""
    ens = default_ensemble(X.shape[1])
    rows, targets = list(X), [float(t) for t in y]
    ens.learn_batch(X[:500], y[:500])  # compile

    def run() -> int:
        for x, t in zip(rows, targets):
            ens.predict_one(x)
            ens.learn_one(x, t)
        return len(rows)

    return _best_rate(run, repeats)


def eager_adam_rate(X: np.ndarray, y: np.ndarray, repeats: int) -> float:
    net = StatefulNet(X.shape[1], hidden=(32, 32), seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(X).float(), torch.from_numpy(y).float()

    def run() -> int:
        state = net.initial_state(1)
        for i in range(len(xt)):
            pred, new = net(xt[i : i + 1], state)
            loss = torch.nn.functional.mse_loss(pred[:, 0], yt[i : i + 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state = tuple(s.detach() for s in new)
        return len(xt)

    return _best_rate(run, repeats)


def river_linear_rate(X: np.ndarray, y: np.ndarray, repeats: int, scaled: bool = False) -> float:
    from river import linear_model, preprocessing

    make = ((lambda: preprocessing.StandardScaler() | linear_model.LinearRegression()) if scaled
            else linear_model.LinearRegression)
    return _river_rate(make, X, y, repeats)


def adapter_rate(X: np.ndarray, y: np.ndarray, repeats: int, **kwargs) -> float:
    """The river adapter on dicts; its first events (creating the learner, compiling) are outside the timing."""
    from psann_stream.adapters.river import StatefulRegressor

    return _river_rate(lambda: StatefulRegressor(**kwargs), X, y, repeats, warm=200)


def keyed_rate(X: np.ndarray, y: np.ndarray, keys: int, repeats: int, batch: int = 4096, kind: str = "own weights") -> float:
    """``keys`` keys drawn at random per event: a KeyedLearner with per-key weights (``kind="own
    weights"``) or shared weights (``"shared weights"``), or the keyed default ensemble (``"ensemble"``)."""
    k = np.random.default_rng(1).integers(0, keys, len(X))
    net = StatefulNet(X.shape[1], hidden=(32, 32), seed=0)
    model = (default_ensemble(X.shape[1], keyed=True) if kind == "ensemble" else
             KeyedLearner(net, per_key_weights=True, threads=os.cpu_count()) if kind == "own weights" else KeyedLearner(net))
    model.learn_batch(k[:5000], X[:5000], y[:5000])  # compile, create the keys
    return _rate_in_calls(model.learn_batch, (k, X, y), batch, repeats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=50_000, help="events for the compiled learners (default 50,000)")
    p.add_argument("--eager-events", type=int, default=2_000, help="events for the eager torch loop (default 2,000)")
    p.add_argument("--keys", type=int, default=1000, help="keys for KeyedLearner (default 1,000)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    X, y = _stream(max(a.events, a.eager_events, 200_000))
    n_one = a.events // 5
    rates = {
        "Learner (compiled, ObGD), learn_batch": learner_rate(X[: a.events], y[: a.events], a.repeats),
        "Learner (compiled, ObGD), learn_one": learn_one_rate(X[:n_one], y[:n_one], a.repeats),
        "Learner, traced": learner_rate(X[: a.events], y[: a.events], a.repeats, state_grad="traced"),
        "Learner, traced, oscillatory pairs": learner_rate(X[: a.events], y[: a.events], a.repeats,
                                                           StateConfig(oscillatory=True), state_grad="traced"),
        "Learner, 7 outputs": learner_rate(X[: a.events], np.stack([np.roll(y[: a.events], k) for k in range(7)], axis=1),
                                           a.repeats),
        ENSEMBLE_ROW: ensemble_rate(X[: a.events // 5], y[: a.events // 5], a.repeats),
        "Ensemble, predict_one + learn_one": ensemble_one_rate(X[: a.events // 50], y[: a.events // 50], a.repeats),
        "StatefulRegressor (river adapter, Adam)": adapter_rate(X[:n_one], y[:n_one], a.repeats),
        "StatefulRegressor (river adapter, ObGD)": adapter_rate(X[:n_one], y[:n_one], a.repeats, optimizer="obgd",
                                                                lr=None),
        "eager torch Adam": eager_adam_rate(X[: a.eager_events], y[: a.eager_events], a.repeats),
        "river LinearRegression": river_linear_rate(X[:n_one], y[:n_one], a.repeats),
        "river StandardScaler | LinearRegression": river_linear_rate(X[:n_one], y[:n_one], a.repeats, scaled=True),
        f"KeyedLearner ({a.keys} keys, own weights)": keyed_rate(X[:200_000], y[:200_000], a.keys, a.repeats),
        KEYED_LEARNER_ROW: keyed_rate(X[: a.events], y[: a.events], a.keys, a.repeats, kind="shared weights"),
        KEYED_ENSEMBLE_ROW: keyed_rate(X[: a.events // 5], y[: a.events // 5], a.keys, a.repeats, kind="ensemble"),
    }
    base, lr = rates["eager torch Adam"], rates["river LinearRegression"]
    print(f"{'learner':<42} {'events/s':>12} {'x eager Adam':>13} {'x river LR':>11}")
    for name, r in rates.items():
        print(f"{name:<42} {r:12,.0f} {r / base:13.1f} {r / lr:11.2f}")
    print(f"cores: {os.cpu_count()}; 10 features, 32x32 StatefulNet, exact per-event prequential order")
    batch = rates["Learner (compiled, ObGD), learn_batch"]
    print(f"traced learning costs {batch / rates['Learner, traced']:.2f}x the truncated path per event "
          f"({batch / rates['Learner, traced, oscillatory pairs']:.2f}x with oscillatory pairs); the default "
          f"ensemble {batch / rates[ENSEMBLE_ROW]:.2f}x; seven outputs "
          f"{batch / rates['Learner, 7 outputs']:.2f}x (seven learners would cost 7x)")
    print(f"keyed ({a.keys} keys): the keyed default ensemble costs "
          f"{rates[KEYED_LEARNER_ROW] / rates[KEYED_ENSEMBLE_ROW]:.2f}x a shared-weights KeyedLearner per event")
    scaled = rates["river StandardScaler | LinearRegression"]
    print(f"the default ensemble per event: predict_one + learn_one at "
          f"{rates['Ensemble, predict_one + learn_one'] / lr:.3f}x river LinearRegression's predict_one + learn_one")
    print(f"per-event overhead: learn_one costs {batch / rates['Learner (compiled, ObGD), learn_one']:.2f}x a learn_batch event; "
          f"the adapter (ObGD) runs at {rates['StatefulRegressor (river adapter, ObGD)'] / scaled:.2f}x "
          f"(Adam {rates['StatefulRegressor (river adapter, Adam)'] / scaled:.2f}x) river's StandardScaler | LinearRegression")


if __name__ == "__main__":
    main()
