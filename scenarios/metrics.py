"""Prequential evaluation (Gama, Sebastião & Rodrigues 2013) and drift metrics.

Given the absolute errors ``e_t`` of predictions made before learning each event:

* cumulative MAE and RMSE;
* faded MAE ``S_t / N_t`` with ``S_t = e_t + alpha S_{t-1}``, ``N_t = 1 + alpha N_{t-1}`` (alpha = 0.999);
* per change point ``tau``: the **post-change MAE**, the mean absolute error of the ``POST_CHANGE``
  (500) events from ``tau`` (the criterion: absolute, so a model is not punished for having been good
  before the change); and, as information, with the pre-change level ``p`` = the faded MAE at
  ``tau - 1`` and a window running to the next change: the maximum faded MAE in the window, the
  recovery time (steps from ``tau`` until the faded MAE, after its peak, is back within ``1.1 p``; 0
  if it never left that band, ``None`` if it never came back), and the excess-loss area
  ``sum (faded_t - p)^+`` over the window.

>>> import numpy as np
>>> err = np.r_[np.full(100, 0.1), np.full(20, 1.0), np.full(200, 0.1)]
>>> r = change_report(err, [100], alpha=0.9)
>>> r[0].recovery_steps > 20 and round(r[0].pre_level, 3) == 0.1
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["POST_CHANGE", "ChangeReport", "change_report", "faded_mae", "post_change_mae", "summary"]

POST_CHANGE = 500  # events after a change point whose MAE is its post-change MAE


def faded_mae(errors: np.ndarray, alpha: float = 0.999) -> np.ndarray:
    """The faded mean absolute error after every step (float64)."""
    e = np.abs(np.asarray(errors, dtype=np.float64))
    s = np.empty_like(e)
    num = den = 0.0
    for i, v in enumerate(e):
        num = v + alpha * num
        den = 1.0 + alpha * den
        s[i] = num / den
    return s


@dataclass(frozen=True)
class ChangeReport:
    """Drift metrics around one change point (see module doc)."""

    change_point: int
    post_change_mae: float
    pre_level: float
    max_after: float
    recovery_steps: int | None
    excess_area: float


def post_change_mae(errors: np.ndarray, change_points: Sequence[int], scored: np.ndarray | None = None) -> list[float]:
    """The MAE of the ``POST_CHANGE`` events from each change point (``scored``: a mask of the events
    that count, e.g. without deliberate outliers; all by default)."""
    e = np.abs(np.asarray(errors, dtype=np.float64))
    keep = np.ones(len(e), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    return [float(e[c:c + POST_CHANGE][keep[c:c + POST_CHANGE]].mean()) for c in change_points]


def change_report(errors: np.ndarray, change_points: Sequence[int], *, alpha: float = 0.999,
                  tolerance: float = 1.1, scored: np.ndarray | None = None) -> list[ChangeReport]:
    """One :class:`ChangeReport` per change point (after the first step); each window ends at the next
    change; ``scored`` masks the events the post-change MAE counts."""
    faded = faded_mae(errors, alpha)
    points = [int(c) for c in change_points if 0 < int(c) < len(faded)]
    post = post_change_mae(errors, points, scored)
    out = []
    for i, tau in enumerate(points):
        end = points[i + 1] if i + 1 < len(points) else len(faded)
        pre = float(faded[tau - 1])
        window = faded[tau:end]
        peak = int(np.argmax(window))
        if window[peak] <= tolerance * pre:
            recovery: int | None = 0  # the change never lifted the error out of the band
        else:
            back = np.flatnonzero(window[peak:] <= tolerance * pre)
            recovery = peak + int(back[0]) if len(back) else None
        out.append(ChangeReport(
            change_point=tau,
            post_change_mae=post[i],
            pre_level=pre,
            max_after=float(window[peak]),
            recovery_steps=recovery,
            excess_area=float(np.clip(window - pre, 0.0, None).sum()),
        ))
    return out


def summary(predictions: np.ndarray, targets: np.ndarray, change_points: Sequence[int], *,
            alpha: float = 0.999, scored: np.ndarray | None = None) -> dict:
    """Cumulative MAE/RMSE, final faded MAE and the change reports, as plain values (JSON-ready);
    ``scored`` masks the events the post-change MAE counts."""
    err = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    ok = np.isfinite(err)
    e = np.abs(err[ok])
    reports = change_report(np.where(ok, np.abs(err), 0.0), change_points, alpha=alpha,
                            scored=ok if scored is None else ok & scored)
    return {
        "mae": float(e.mean()) if len(e) else float("nan"),
        "rmse": float(np.sqrt((e * e).mean())) if len(e) else float("nan"),
        "faded_mae": float(faded_mae(e, alpha)[-1]) if len(e) else float("nan"),
        "changes": [asdict(r) for r in reports],
    }
