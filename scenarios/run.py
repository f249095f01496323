"""Run a named scenario through psann_stream and baselines in one harness; prequential metrics.

``python -m psann_stream.scenarios.run NAME [--steps N] [--seed S] [--models A,B] [--json out.json]
[--plot out.png]``, or ``psann-stream scenario run NAME ...``. Every model predicts each event before
learning it:

* ``psann_stream``: the recommended configuration, :data:`RECOMMENDED` (a 32x32 StatefulNet whose
  units are oscillatory pairs, learned with exact traces through the state by ObGD, its readout by
  recursive least squares; normalisers), in a :class:`~psann_stream.learner.Learner`, or a :class:`~psann_stream.keyed.KeyedLearner` (shared
  weights, a state per key) on keyed streams;
* ``psann_stream (truncated)``: the library's default settings (one fixed rate per layer, gradient
  truncated at the state): what ``psann_stream`` was before learned memory;
* ``psann_stream (8-window)``: the recommended configuration given the last 8 inputs, as the eager
  LSTM is (the like-for-like control);
* the baselines of :mod:`psann_stream.scenarios.baselines` (river LinearRegression, HATR, ARF; eager
  torch MLP and LSTM with Adam; an echo-state network with an RLS readout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from psann_stream import KeyedLearner, Learner, StateConfig, StatefulNet
from psann_stream.ensemble import default_ensemble
from psann_stream.errors import ConfigError

from .baselines import BASELINES, prequential
from .horizons import horizon_errors
from .metrics import faded_mae, summary
from .etth1 import etth1, etth1_keyed
from .streams import SCENARIOS, Scenario

__all__ = ["MODELS", "RECOMMENDED", "format_table", "main", "psann_default", "run_scenario", "windowed"]

TRACE_EVERY = 20  # events between state-norm samples of psann_stream
RECOMMENDED: dict = {"state": {"oscillatory": True}, "learner": {"state_grad": "traced", "readout": "rls"}}
"""The configuration the suite reports as ``psann_stream``: chosen by measurement over every scenario
(docs/scenarios.md, "Choosing the default"). ``state`` goes to :class:`StateConfig`, ``learner`` to
the learner."""


def psann_default(X: np.ndarray, y: np.ndarray, keys: np.ndarray | None, *, trace: dict | None = None,
                  state: dict | None = None, **learner_kwargs) -> np.ndarray:
    """psann_stream on the stream (state config ``state``, learner settings ``learner_kwargs``; the
    library defaults when both are empty); with ``trace`` (a dict), records every ``TRACE_EVERY``
    events the largest |state| of each layer (over keys), ``max_abs``, and the monitor's alerts.
    Learning in chunks changes nothing: exact mode is batch-size independent."""
    net = StatefulNet(X.shape[1], hidden=(32, 32), state=StateConfig.from_mapping({"mode": "trace", **(state or {})}), seed=0)
    keyed = keys is not None
    lrn = KeyedLearner(net, **learner_kwargs) if keyed else Learner(net, **learner_kwargs)
    widths = [layer.out_features for layer in net.layers]
    out, steps, norms = np.empty(len(y)), [], []
    for lo in range(0, len(y), TRACE_EVERY):
        hi = min(lo + TRACE_EVERY, len(y))
        out[lo:hi] = lrn.learn_batch(keys[lo:hi], X[lo:hi], y[lo:hi]) if keyed else lrn.learn_batch(X[lo:hi], y[lo:hi])
        if trace is not None:
            if keyed:
                s = np.abs(np.stack([lrn.state_of(k) for k in lrn.keys])).max(axis=0)
            else:
                s = np.abs(np.concatenate([t.reshape(-1).numpy() for t in lrn.model.held_state()]))
            steps.append(hi)
            norms.append([float(part.max()) for part in np.split(s, np.cumsum(widths)[:-1])])
    if trace is not None:
        trace.update(steps=steps, layer_max_abs_state=np.array(norms).T.tolist(), max_abs=net.state_config.max_abs,
                     alerts=[str(a) for a in lrn.alerts], learner=lrn)
    return out


HORIZON = 20


def _horizons(s: Scenario, learner, X: np.ndarray, y: np.ndarray) -> dict:
    """Teacher-forced vs free-running error after a state reset, from 10 starts in the last tenth of
    the stream (windows holding a deliberate outlier left out)."""
    n = len(y)
    starts = [int(t) for t in np.linspace(n - n // 10, n - HORIZON - 1, 10)]
    starts = [t for t in starts if not any(t <= o < t + HORIZON for o in s.outliers)]
    return horizon_errors(learner, X, y, starts, HORIZON)


def _baseline(factory):
    return lambda X, y, keys, column=None: prequential(factory(X.shape[1]), X, y, keys)


def persistence(X: np.ndarray, y: np.ndarray, keys: np.ndarray | None, column: int | None = None) -> np.ndarray:
    """The last known target value (input ``column``) as the prediction; NaN where the inputs do not
    carry it (the model is then left out of the scenario)."""
    return X[:, column].copy() if column is not None else np.full(len(y), np.nan)


def ensemble(X: np.ndarray, y: np.ndarray, keys: np.ndarray | None, column: int | None = None, *,
             trace: dict | None = None, target: str = "level") -> np.ndarray:
    """:func:`psann_stream.ensemble.default_ensemble` on the stream (persistence of ``column`` among its
    members where the inputs carry the last target; ``target="change"``: its members learn the change
    from it, NaN where there is none); with ``trace``, the mixture weights every ``TRACE_EVERY`` events."""
    if target == "change" and column is None:
        return np.full(len(y), np.nan)
    ens = default_ensemble(X.shape[1], keyed=keys is not None, persistence_column=column, target=target)
    out, steps, weights = np.empty(len(y)), [], []
    for lo in range(0, len(y), TRACE_EVERY):
        hi = min(lo + TRACE_EVERY, len(y))
        out[lo:hi] = ens.learn_batch(keys[lo:hi], X[lo:hi], y[lo:hi]) if keys is not None else ens.learn_batch(X[lo:hi], y[lo:hi])
        steps.append(hi)
        weights.append(list(ens.weights.values()))
    if trace is not None:
        trace.update(ensemble={"members": ens.names, "steps": steps, "weights": np.array(weights).T.tolist()})
    return out


def windowed(X: np.ndarray, keys: np.ndarray | None, window: int = 8) -> np.ndarray:
    """Each event's input followed by its stream's ``window - 1`` previous inputs (zeros before the
    stream's start; per key on keyed streams): ``[N, window * F]``, the information the LSTM gets."""
    N, F = X.shape
    out = np.zeros((N, window * F))
    ids = np.zeros(N, dtype=np.int64) if keys is None else np.unique(keys, return_inverse=True)[1].reshape(-1)
    for k in np.unique(ids):
        rows = np.flatnonzero(ids == k)
        for lag in range(window):
            out[rows[lag:], lag * F:(lag + 1) * F] = X[rows[: len(rows) - lag]]
    return out


def _recommended(X, y, keys, column=None, **kw):
    return psann_default(X, y, keys, state=RECOMMENDED["state"], **RECOMMENDED["learner"], **kw)


MODELS = {
    "psann_stream": _recommended,
    "psann_stream (ensemble)": ensemble,
    "psann_stream (change ensemble)": lambda X, y, keys, column=None, **kw: ensemble(X, y, keys, column, target="change", **kw),
    "psann_stream (truncated)": lambda X, y, keys, column=None: psann_default(X, y, keys),
    "psann_stream (8-window)": lambda X, y, keys, column=None: _recommended(windowed(X, keys), y, keys),
    **{name: _baseline(f) for name, f in BASELINES.items()},
    "persistence": persistence,
}


def build_scenario(name: str, n_steps: int | None, seed: int, data: str | None = None) -> Scenario:
    """Scenario ``name``: a synthetic one of ``n_steps`` events (default 6000) from ``seed``, or a
    real feed (``etth1``, ``etth1-keyed``) read from ``data`` (all its events, or its first
    ``n_steps`` hours)."""
    if name in REAL_FEEDS:
        if data is None:
            raise ConfigError(f"scenario {name} reads a file: pass --data PATH (../shared/data/ETT/ETTh1.csv here).")
        return REAL_FEEDS[name](data, n_steps)
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}, {', '.join(REAL_FEEDS)} "
                          "(with --data).")
    return SCENARIOS[name](6000 if n_steps is None else n_steps, seed)


REAL_FEEDS = {"etth1": etth1, "etth1-keyed": etth1_keyed}  # scenarios read from a file (--data)
NEEDS_LAST_TARGET = ("persistence", "psann_stream (change ensemble)")  # models of streams whose inputs hold the last target
TRACED = ("psann_stream", "psann_stream (ensemble)")  # models that fill the state trace of a run


def run_scenario(name: str, n_steps: int | None = 6000, seed: int = 0, models: list[str] | None = None,
                 *, traces: dict | None = None, data: str | None = None) -> dict:
    """Metrics of the chosen models (default all) on scenario ``name`` (see
    :func:`scenarios.metrics.summary`), plus seconds, and psann_stream's state-norm trace and alerts.
    With ``traces`` (a dict), each model's faded MAE after every step is stored there (for plots).
    ``data``: the file of a real-feed scenario (:func:`build_scenario`)."""
    s = build_scenario(name, n_steps, seed, data)
    chosen = list(MODELS) if models is None else models
    if models is None and s.persistence_column is None:
        chosen = [m for m in chosen if m not in NEEDS_LAST_TARGET]
    unknown = [m for m in chosen if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}.")
    X, y, keys = s.arrays()
    scored = np.ones(len(y), dtype=bool)
    scored[list(s.outliers)] = False
    results, state = {}, {}
    for model in chosen:
        fn = MODELS[model]
        t = time.perf_counter()
        column = s.persistence_column
        pred = fn(X, y, keys, column, trace=state) if model in TRACED else fn(X, y, keys, column)
        seconds = time.perf_counter() - t
        # errors of outlier rows are replaced by 0 so change-point windows keep their time axis
        p = np.where(scored, pred, y)
        results[model] = {**summary(p, y, s.change_points, scored=scored), "seconds": seconds}
        if traces is not None:
            traces[model] = faded_mae(np.where(np.isfinite(p), np.abs(p - y), 0.0))
    learner = state.pop("learner", None)
    if learner is not None and s.autoregressive:
        state["horizons"] = _horizons(s, learner, X, y)
    return {"scenario": name, "description": s.description, "steps": len(y), "seed": seed,
            "change_points": list(s.change_points), "models": results, "psann_state": state}


def format_table(result: dict) -> str:
    lines = [f"{result['scenario']}: {result['description']} ({result['steps']} steps, change points "
             f"{result['change_points'][:6]}{' ...' if len(result['change_points']) > 6 else ''})",
             f"{'model':<31} {'MAE':>9} {'RMSE':>9} {'faded MAE':>10} {'post-change MAE':>16} {'mean recovery':>14} "
             f"{'seconds':>8}"]
    for model, r in result["models"].items():
        rec = [c["recovery_steps"] for c in r["changes"] if c["recovery_steps"] is not None]
        never = sum(c["recovery_steps"] is None for c in r["changes"])
        rec_s = (f"{np.mean(rec):.0f}" if rec else "-") + (f" ({never} never)" if never else "")
        post = [c["post_change_mae"] for c in r["changes"]]
        post_s = f"{np.mean(post):.4f}" if post else "-"
        lines.append(f"{model:<31} {r['mae']:9.4f} {r['rmse']:9.4f} {r['faded_mae']:10.4f} {post_s:>16} {rec_s:>14} "
                     f"{r['seconds']:8.2f}")
    hz = result.get("psann_state", {}).get("horizons")
    if hz:
        at = [h for h in (1, 5, 10, 20) if h <= len(hz["h"])]
        fmt = lambda v: " / ".join(f"{v[h - 1]:.4f}" for h in at)  # noqa: E731
        lines.append(f"psann_stream after a state reset, MAE at h = {' / '.join(map(str, at))} ({hz['starts']} starts): "
                     f"teacher-forced {fmt(hz['teacher_forced'])}; free-running {fmt(hz['free_running'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(SCENARIOS)} (omit to list)")
    p.add_argument("--steps", type=int, help="events (default 6000; a real feed: all of its file)")
    p.add_argument("--data", help="the file of a real-feed scenario (etth1, etth1-keyed: ETTh1.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--models", help=f"comma-separated subset of: {', '.join(MODELS)} (default all)")
    p.add_argument("--plot", help="also draw faded error and state norms to this PNG (needs matplotlib)")
    a = p.parse_args(argv)
    if a.name is None:
        for name, fn in SCENARIOS.items():
            print(f"{name:<16} {fn(200, 0).description}")
        print(f"{'etth1':<16} (real data, --data PATH) ETTh1 oil temperature one hour ahead from the seven current readings")
        print(f"{'etth1-keyed':<16} (real data, --data PATH) ETTh1's seven readings as seven keys, each one hour ahead")
        return 0
    traces: dict = {}
    result = run_scenario(a.name, a.steps, a.seed, a.models.split(",") if a.models else None, traces=traces, data=a.data)
    print(format_table(result))
    if a.plot:
        from .plots import plot_scenario

        plot_scenario(result, traces, a.plot)
        print(f"plot: {a.plot}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
