"""Every model on every scenario, seeds 0 and 1: the evidence behind the recommended configuration
(docs/scenarios.md). ``python -m psann_stream.scenarios.suite [--json out.json] [--scenarios a,b]
[--models m,n] [--seeds 0,1]``.

Per scenario, model and seed: the cumulative prequential MAE, the normalised MSE over the last 20% of
the stream (1.0 = no better than the target's mean; the delayed-copy criterion) and the NRMSE over
its last quarter, and the MAE over the 500 events after each abrupt change. Stream lengths: 20,000
events for NARMA10 (the length its criterion is stated for), 10,000 for the delayed copies (the
adaptive random forest needs ~10 ms per event on them; psann_stream's 30,000-event delayed-copy
numbers are in docs/learner.md), 6,000 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from .metrics import post_change_mae
from .run import MODELS, NEEDS_LAST_TARGET
from .keyed_copies import keyed_copies
from .streams import SCENARIOS

__all__ = ["LENGTH", "main", "markdown", "run_suite", "tail_scores"]

LENGTH = {**{name: 10_000 for name in SCENARIOS if name.startswith("delayed-copy")}, "narma10": 20_000}


def tail_scores(pred: np.ndarray, y: np.ndarray, change_points: list[int], scored: np.ndarray) -> dict:
    """MAE, normalised MSE over the last 20%, NRMSE over the last quarter, and the MAE of the
    ``metrics.POST_CHANGE`` events after each change point (``scored`` masks deliberate outliers)."""
    err = np.where(scored, pred - y, 0.0)
    n = len(y)
    t20, t25 = slice(int(0.8 * n), n), slice(int(0.75 * n), n)
    var20, var25 = np.var(y[t20][scored[t20]]), np.var(y[t25][scored[t25]])
    return {
        "mae": float(np.abs(err[scored]).mean()),
        "nmse_last20": float(np.mean(err[t20][scored[t20]] ** 2) / var20) if var20 > 0 else float("nan"),
        "nrmse_last25": float(np.sqrt(np.mean(err[t25][scored[t25]] ** 2) / var25)) if var25 > 0 else float("nan"),
        "post_change_mae": post_change_mae(err, change_points, scored),
    }


def run_suite(scenarios: list[str], models: list[str], seeds: list[int], log=print, copies: int = 1) -> dict:
    """Every model on every scenario and seed; with ``copies >= 2``, each unkeyed scenario as that many
    interleaved keyed copies of the same total length (:func:`~.keyed_copies.keyed_copies`), under
    the copies' name."""
    out: dict = {}
    for base in scenarios:
        for seed in seeds:
            n = LENGTH.get(base, 6000)
            s = SCENARIOS[base](n, seed)
            if copies >= 2 and not s.keyed:
                s = keyed_copies(base, n, seed, copies)
            name = s.name
            X, y, keys = s.arrays()
            scored = np.ones(len(y), dtype=bool)
            scored[list(s.outliers)] = False
            for model in models:
                if model in NEEDS_LAST_TARGET and s.persistence_column is None:
                    continue  # the inputs do not carry the last target
                t = time.perf_counter()
                pred = MODELS[model](X, y, keys, s.persistence_column)
                r = tail_scores(pred, y, list(s.change_points), scored) | {"seconds": time.perf_counter() - t}
                out.setdefault(name, {}).setdefault(model, {})[str(seed)] = r
                log(f"{name:<18} seed {seed} {model:<26} MAE {r['mae']:.4f} NMSE(last 20%) {r['nmse_last20']:.3f} "
                    f"({r['seconds']:.1f} s)")
    return out


def markdown(result: dict, metric: str = "mae") -> str:
    """A table of ``metric`` (mean over seeds) per scenario and model, the lowest per row in bold."""
    models = list(dict.fromkeys(m for per_model in result.values() for m in per_model))
    lines = ["| scenario | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for name, per_model in result.items():
        vals = [float(np.mean([r[metric] for r in per_model[m].values()])) if m in per_model else math.nan for m in models]
        best = np.nanmin(vals)
        cells = ["-" if math.isnan(v) else f"**{v:.4g}**" if v == best else f"{v:.4g}" for v in vals]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--keys", type=int, default=1,
                   help="run each unkeyed scenario as this many interleaved keyed copies (a keyed feed)")
    p.add_argument("--json")
    p.add_argument("--markdown", help="print tables of an earlier --json result instead of running")
    a = p.parse_args(argv)
    if a.markdown:
        with open(a.markdown) as f:
            result = json.load(f)
        for metric in ("mae", "nmse_last20", "nrmse_last25"):
            print(f"\n{metric}\n\n{markdown(result, metric)}")
        return 0
    result = run_suite(a.scenarios.split(","), a.models.split(","), [int(v) for v in a.seeds.split(",")],
                       log=lambda m: print(m, flush=True), copies=a.keys)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
