"""The ``psann-stream`` command line.

``psann-stream demo`` learns a regime-switching sine stream online with the default
:class:`~psann_stream.learner.Learner` (compiled loop, ObGD, online normalisers, monitor),
prequentially (each value is predicted before it is learned), and prints the error as it goes: the
stateful model against the same network with its state switched off and against persistence
(predict the last value).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np

from .errors import PsannStreamError
from .learner import Learner
from .model import StatefulNet
from .state import StateConfig

__all__ = ["main"]


def _faded(errors: np.ndarray, alpha: float, s: float, n: float) -> tuple[float, float]:
    """Fold ``errors`` into a faded sum (Gama et al. 2013): ``S = e + alpha S``, ``N = 1 + alpha N``."""
    for e in errors:
        s = float(e) + alpha * s
        n = 1.0 + alpha * n
    return s, n


def _demo(args: argparse.Namespace) -> int:
    from psann_stream.scenarios import regime_switching_sine

    stream = regime_switching_sine(args.steps, seed=args.seed)
    x, y = stream.x.astype(np.float64), stream.y[:, 0].astype(np.float64)
    learners = {
        "stateful": Learner(StatefulNet(1, hidden=(32, 32), state=StateConfig(), seed=args.seed)),
        "no state": Learner(
            StatefulNet(1, hidden=(32, 32), state=StateConfig(gain=0.0, learnable_gain=False), seed=args.seed)
        ),
    }
    faded = {k: (0.0, 0.0) for k in (*learners, "persistence")}
    total = {k: 0.0 for k in faded}
    print(
        f"psann-stream demo: {args.steps} steps of a sine whose period/amplitude switch at steps "
        f"{', '.join(map(str, stream.change_points[1:]))}; next-value prediction from the current value only."
    )
    print("prequential MAE (faded, alpha=0.99) -- each value is predicted before it is learned")
    print(f"{'step':>6} {'regime':>6} {'stateful':>9} {'no state':>9} {'persist.':>9} {'events/s':>9}")
    started = time.perf_counter()
    for lo in range(0, args.steps, args.every):
        hi = min(lo + args.every, args.steps)
        t0 = time.perf_counter()
        errs = {k: np.abs(lrn.learn_batch(x[lo:hi], y[lo:hi]) - y[lo:hi]) for k, lrn in learners.items()}
        rate = (hi - lo) * len(learners) / (time.perf_counter() - t0)
        errs["persistence"] = np.abs(x[lo:hi, 0] - y[lo:hi])
        for k, e in errs.items():
            faded[k] = _faded(e, 0.99, *faded[k])
            total[k] += float(e.sum())
        row = " ".join(f"{faded[k][0] / faded[k][1]:9.4f}" for k in ("stateful", "no state", "persistence"))
        print(f"{hi:6d} {stream.regime_at(hi - 1):6d} {row} {rate:9,.0f}", flush=True)
    n = args.steps
    print(
        f"cumulative MAE over {n} steps: stateful {total['stateful'] / n:.4f}, no state "
        f"{total['no state'] / n:.4f}, persistence {total['persistence'] / n:.4f} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    model = learners["stateful"].model
    for i, (b, s) in enumerate(zip(model.state_bounds(), model.held_state())):
        print(
            f"layer {i}: max |state| {float(s.abs().max()):.3f} <= limit {b.steady_state_limit:.3f} <= max_abs "
            f"{b.max_abs}; contraction L = {b.contraction}"
        )
    alerts = learners["stateful"].alerts
    print(f"monitor: {len(alerts)} alert(s)" + "".join(f"\n  {a}" for a in alerts))
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psann-stream", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="learn a regime-switching sine stream online and print prequential error")
    demo.add_argument("--steps", type=int, default=20000, help="stream length (default 20000)")
    demo.add_argument("--every", type=int, default=2000, help="print a line every N steps (default 2000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the stream and the models (default 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``psann-stream`` console script; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "steps", 1) < 1 or getattr(args, "every", 1) < 1:
        parser.error("--steps and --every must be >= 1")
    try:
        return int(args.func(args))
    except (PsannStreamError, ValueError) as exc:
        if args.debug:
            raise
        print(f"psann-stream: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
