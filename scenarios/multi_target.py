"""Several targets per event on a real feed: all seven ETTh1 readings one hour ahead from the seven
current ones, prequential, every model on the same events.

``python -m psann_stream.scenarios.multi_target --data PATH [--seeds 0,1] [--models A,B] [--steps N]
[--json out.json]``. Models:

* ``psann_stream (joint)``: one model with seven outputs (:data:`~psann_stream.scenarios.run.RECOMMENDED`
  configuration: 32x32 oscillatory pairs, traced, RLS readout shared by the outputs);
* ``psann_stream (joint, change)``: the same model learning each reading's change from its current
  value (:class:`~psann_stream.experts.Change` with a column per target);
* ``ensemble (joint, change)`` and ``ensemble (joint)``: :func:`~psann_stream.ensemble.default_ensemble`
  with seven outputs (every member one model of seven outputs, persistence of each reading among
  them, one mixture per target), its members learning the changes or the levels;
* every single-target model of :data:`~psann_stream.scenarios.run.MODELS` as **one model per
  target** (``per target: NAME``): seven learners, seven times the cost; persistence is one of them
  (each reading's next hour = its current value).

Metrics per model: the MAE of each target, their mean (``mae``: the readings share a scale of a few
units) and the mean of each target's MAE over persistence's (``vs persistence``: below 1 beats it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from psann_stream import Learner, StateConfig, StatefulNet
from psann_stream.ensemble import default_ensemble
from psann_stream.experts import Change

from .etth1 import COLUMNS, etth1_readings
from .run import MODELS, RECOMMENDED

__all__ = ["JOINT", "PER_TARGET_DEFAULT", "main", "run_multi_target"]


def _joint_learner(F: int, T: int, seed: int) -> Learner:
    state = StateConfig.from_mapping({"mode": "trace", **RECOMMENDED["state"]})
    return Learner(StatefulNet(F, T, hidden=(32, 32), state=state, seed=seed), **RECOMMENDED["learner"])


def _joint(change: bool) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    def run(X: np.ndarray, Y: np.ndarray, seed: int) -> np.ndarray:
        lrn = _joint_learner(X.shape[1], Y.shape[1], seed)
        model = Change(lrn, column=list(range(Y.shape[1]))) if change else lrn
        return model.learn_batch(X, Y)
    return run


def _joint_ensemble(target: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    def run(X: np.ndarray, Y: np.ndarray, seed: int) -> np.ndarray:
        ens = default_ensemble(X.shape[1], persistence_column=list(range(Y.shape[1])), target=target, seed=seed)
        return np.concatenate([ens.learn_batch(X[lo:lo + 1000], Y[lo:lo + 1000]) for lo in range(0, len(Y), 1000)])
    return run


JOINT = {"psann_stream (joint)": _joint(False), "psann_stream (joint, change)": _joint(True),
         "ensemble (joint, change)": _joint_ensemble("change"), "ensemble (joint)": _joint_ensemble("level")}
PER_TARGET_DEFAULT = ("persistence", "psann_stream", "psann_stream (change ensemble)", "river LinearRegression",
                      "eager MLP (Adam)", "ESN + RLS")


def _per_target(name: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    """Model ``name`` of the single-target suite, one per target (target ``k``'s last value is input ``k``)."""
    def run(X: np.ndarray, Y: np.ndarray, seed: int) -> np.ndarray:
        return np.stack([MODELS[name](X, Y[:, k], None, k) for k in range(Y.shape[1])], axis=1)
    return run


def run_multi_target(path: str | Path, *, seeds: tuple[int, ...] = (0, 1), models: list[str] | None = None,
                     n: int | None = None) -> dict:
    """Per model and seed: each target's MAE, their mean and the mean ratio to persistence."""
    X, Y = etth1_readings(path, n)
    names = list(JOINT) + [f"per target: {m}" for m in PER_TARGET_DEFAULT] if models is None else models
    runs = {**JOINT, **{f"per target: {m}": _per_target(m) for m in MODELS}}
    unknown = [m for m in names if m not in runs]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(runs)}")
    base = np.abs(X - Y).mean(axis=0)  # persistence: each reading's next hour = its value now
    out: dict = {"targets": list(COLUMNS), "events": len(Y), "persistence_mae": base.tolist(), "models": {}}
    for name in names:
        per_seed = {}
        for seed in seeds:
            t = time.perf_counter()
            mae = np.abs(runs[name](X, Y, seed) - Y).mean(axis=0)
            per_seed[seed] = {"mae_per_target": mae.tolist(), "mae": float(mae.mean()),
                              "vs_persistence": float((mae / base).mean()), "seconds": time.perf_counter() - t}
        out["models"][name] = per_seed
    return out


def format_table(result: dict) -> str:
    seeds = sorted({s for r in result["models"].values() for s in r})
    lines = [f"ETTh1, all seven readings one hour ahead ({result['events']} events); mean MAE over targets "
             f"(vs persistence), seeds {', '.join(map(str, seeds))}",
             f"{'model':<48} " + " ".join(f"{'seed ' + str(s):>22}" for s in seeds) + f" {'seconds':>8}"]
    for name, r in result["models"].items():
        cells = " ".join(f"{r[s]['mae']:>12.4f} ({r[s]['vs_persistence']:.3f})" for s in seeds)
        lines.append(f"{name:<48} {cells} {np.mean([r[s]['seconds'] for s in seeds]):8.1f}")
    return "\n".join(lines)


def _names(given: str) -> list[str]:
    """``--models``: names split at the commas outside parentheses (``psann_stream (joint, change)`` is one)."""
    return [m.strip() for m in re.split(r",(?![^()]*\))", given)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="ETTh1.csv (../shared/data/ETT/ETTh1.csv here)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--models", help="comma-separated: the joint models and 'per target: NAME' for NAME in the suite's models")
    p.add_argument("--steps", type=int, help="the first N events (default all)")
    p.add_argument("--json", help="also write the result to this JSON file")
    a = p.parse_args(argv)
    result = run_multi_target(a.data, seeds=tuple(int(s) for s in a.seeds.split(",")),
                              models=_names(a.models) if a.models else None, n=a.steps)
    print(format_table(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
