"""Delayed labels: the same streams learned with labels inline and with labels that arrive 1 to
``max_delay`` events late (uniformly), a fraction never arriving.

Run: ``python -m psann_stream.scenarios.delayed [--data PATH/ETTh1.csv] [--seeds 0 1]``. Prints, per stream and
learner, the cumulative prequential MAE (every event's prediction against its true target, whether
or not its label ever arrived) with inline labels (``learn_batch``) and with delayed labels
(:class:`~psann_stream.delayed.DelayedLabels`, horizon = ``max_delay``), and their ratio.

Each event is predicted first; the labels due at that point (those of events ``max_delay`` or fewer
before it) arrive after it, in the order of their arrival times, and are learned from the snapshots
kept at prediction time.
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np

from psann_stream import Learner, StateConfig, StatefulNet
from psann_stream.delayed import DelayedLabels

from .etth1 import etth1
from .run import RECOMMENDED
from .streams import SCENARIOS

LEARNERS: dict[str, Callable[[int, int], Learner]] = {
    "recommended": lambda f, seed: Learner(
        StatefulNet(f, hidden=(32, 32), state=StateConfig.from_mapping({"mode": "trace", **RECOMMENDED["state"]}),
                    seed=seed), **RECOMMENDED["learner"]),
    "truncated": lambda f, seed: Learner(StatefulNet(f, hidden=(32, 32), seed=seed)),
}


def arrival_schedule(n: int, *, max_delay: int, missing: float, seed: int) -> dict[int, list[int]]:
    """``{t: events whose labels arrive right after event t is predicted}``: event ``i``'s label
    after event ``i + d``, ``d`` uniform in ``1..max_delay``; a fraction ``missing`` never arrives."""
    rng = np.random.default_rng([seed, 7])
    delay = rng.integers(1, max_delay + 1, n)
    lost = rng.random(n) < missing
    due: dict[int, list[int]] = {}
    for i in np.flatnonzero(~lost):
        due.setdefault(int(i + delay[i]), []).append(int(i))
    return due


def delayed_predictions(learner: Learner, X: np.ndarray, y: np.ndarray, *, max_delay: int = 100,
                        missing: float = 0.05, seed: int = 0) -> tuple[np.ndarray, DelayedLabels]:
    """Every event's prediction with labels arriving as :func:`arrival_schedule` says."""
    due = arrival_schedule(len(y), max_delay=max_delay, missing=missing, seed=seed)
    dl = DelayedLabels(learner, horizon=max_delay)
    preds = np.empty(len(y))
    for t in range(len(y)):
        preds[t] = dl.predict([t], X[t:t + 1])[0]
        arrived = due.pop(t, None)
        if arrived:
            dl.label(arrived, y[arrived])
    return preds, dl


def compare(X: np.ndarray, y: np.ndarray, make: Callable[[], Learner], *, max_delay: int = 100,
            missing: float = 0.05, seed: int = 0) -> dict[str, float]:
    """MAE inline and delayed (same learner settings, same events), and the delayed run's counts."""
    inline = make().learn_batch(X, y)
    late, dl = delayed_predictions(make(), X, y, max_delay=max_delay, missing=missing, seed=seed)
    return {"inline": float(np.mean(np.abs(inline - y))), "delayed": float(np.mean(np.abs(late - y))),
            "learned": dl.n_learned, "expired": dl.n_expired, "pending": dl.n_pending}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="ETTh1.csv (the real stream is skipped without it)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--max-delay", type=int, default=100)
    ap.add_argument("--missing", type=float, default=0.05)
    a = ap.parse_args(argv)
    print("| stream | learner | seed | MAE inline | MAE delayed | ratio | learned | expired |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for seed in a.seeds:
        streams = {"sine-switch": SCENARIOS["sine-switch"](a.steps, seed).arrays()[:2]}
        if a.data:
            streams["etth1"] = etth1(a.data).arrays()[:2]
        for name, (X, y) in streams.items():
            for lname, build in LEARNERS.items():
                r = compare(X, y, lambda: build(X.shape[1], seed), max_delay=a.max_delay, missing=a.missing, seed=seed)
                print(f"| {name} | {lname} | {seed} | {r['inline']:.4g} | {r['delayed']:.4g} | "
                      f"{r['delayed'] / r['inline']:.3f} | {r['learned']} | {r['expired']} |", flush=True)


if __name__ == "__main__":
    main()
