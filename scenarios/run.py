"""Run a named scenario through psann_stream and baselines in one harness; prequential metrics.

``python -m psann_stream.scenarios.run NAME [--steps N] [--seed S] [--json out.json]``, or
``psann-stream scenario run NAME``. Models (all learn every event after predicting it):

* ``psann_stream``: the default :class:`~psann_stream.learner.Learner` (32x32 StatefulNet, ObGD,
  normalisers), or a :class:`~psann_stream.keyed.KeyedLearner` (shared weights, a state per key) on
  keyed streams;
* ``river LinearRegression``: ``StandardScaler() | LinearRegression()`` (one per key on keyed streams).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from psann_stream import KeyedLearner, Learner, StatefulNet

from .metrics import summary
from .streams import SCENARIOS, Scenario

__all__ = ["run_scenario", "main"]


def _psann(s: Scenario, X: np.ndarray, y: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
    net = StatefulNet(X.shape[1], hidden=(32, 32), seed=0)
    if keys is not None:
        return KeyedLearner(net).learn_batch(keys, X, y)  # shared weights: every key teaches the model
    return Learner(net).learn_batch(X, y)


def _river_lr(s: Scenario, X: np.ndarray, y: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
    from river import linear_model, preprocessing

    models: dict = {}
    out = np.empty(len(y))
    for i, (row, target) in enumerate(zip(X, y)):
        k = keys[i] if keys is not None else None
        m = models.get(k)
        if m is None:
            m = models[k] = preprocessing.StandardScaler() | linear_model.LinearRegression()
        x = {j: float(v) for j, v in enumerate(row)}
        out[i] = m.predict_one(x)
        m.learn_one(x, float(target))
    return out


MODELS = {"psann_stream": _psann, "river LinearRegression": _river_lr}


def run_scenario(name: str, n_steps: int = 6000, seed: int = 0) -> dict:
    """Metrics of every model on scenario ``name`` (see :func:`scenarios.metrics.summary`), plus seconds."""
    if name not in SCENARIOS:
        from psann_stream.errors import ConfigError

        raise ConfigError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}.")
    s = SCENARIOS[name](n_steps, seed)
    X, y, keys = s.arrays()
    scored = np.ones(len(y), dtype=bool)
    scored[list(s.outliers)] = False
    results = {}
    for model, fn in MODELS.items():
        t = time.perf_counter()
        pred = fn(s, X, y, keys)
        seconds = time.perf_counter() - t
        # errors of outlier rows are replaced by 0 so change-point windows keep their time axis
        p = np.where(scored, pred, y)
        results[model] = {**summary(p, y, s.change_points), "seconds": seconds}
    return {"scenario": name, "description": s.description, "steps": len(y), "seed": seed,
            "change_points": list(s.change_points), "models": results}


def format_table(result: dict) -> str:
    lines = [f"{result['scenario']}: {result['description']} ({result['steps']} steps, change points "
             f"{result['change_points'][:6]}{' ...' if len(result['change_points']) > 6 else ''})",
             f"{'model':<26} {'MAE':>9} {'RMSE':>9} {'faded MAE':>10} {'mean recovery':>14} {'seconds':>8}"]
    for model, r in result["models"].items():
        rec = [c["recovery_steps"] for c in r["changes"] if c["recovery_steps"] is not None]
        never = sum(c["recovery_steps"] is None for c in r["changes"])
        rec_s = (f"{np.mean(rec):.0f}" if rec else "-") + (f" ({never} never)" if never else "")
        lines.append(f"{model:<26} {r['mae']:9.4f} {r['rmse']:9.4f} {r['faded_mae']:10.4f} {rec_s:>14} {r['seconds']:8.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(SCENARIOS)} (omit to list)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the metrics to this JSON file")
    a = p.parse_args(argv)
    if a.name is None:
        for name, fn in SCENARIOS.items():
            print(f"{name:<16} {fn(200, 0).description}")
        return 0
    result = run_scenario(a.name, a.steps, a.seed)
    print(format_table(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
