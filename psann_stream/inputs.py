"""What every learner checks before an event reaches its state: the shape and numbers of its input,
their finiteness (C12), and the settings all learners share. One place, so that Learner,
KeyedLearner and Ensemble say the same thing about the same mistake."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .drift import DriftPolicy
from .errors import ConfigError, NonFiniteInputError

__all__ = ["NOT_LEARNED", "as_float64", "as_rows", "as_targets", "check_common", "nonfinite_rows", "predictions"]

NOT_LEARNED = "nothing was learned from it or after it"
# Largest input checked by a dot product. Above it numpy's BLAS may run the product on its own
# threads, which keep spinning after it returns and take the cores from the compiled loop's threads:
# a KeyedLearner with 2 threads on 4,096-event batches ran at 150k instead of 420k events/s (measured).
_DOT_MAX = 1024


def check_common(owner: str, *, on_nonfinite: object, check_every: object, forget: object, normalize_clip: object,
                 drift: object) -> None:
    """The settings every learner takes, checked the same way (:class:`ConfigError` naming ``owner``)."""
    if on_nonfinite not in ("raise", "skip"):
        raise ConfigError(f"{owner}.on_nonfinite = {on_nonfinite!r} is not one of 'raise', 'skip'.")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ConfigError(f"{owner}.check_every = {check_every!r} is out of range: need an integer >= 1.")
    if isinstance(forget, bool) or not isinstance(forget, (int, float)) or not 0.0 < forget <= 1.0:
        raise ConfigError(f"{owner}.forget = {forget!r} is out of range: need 0 < forget <= 1.")
    if normalize_clip is not None and (isinstance(normalize_clip, bool) or not isinstance(normalize_clip, (int, float))
                                       or not math.isfinite(normalize_clip) or not normalize_clip > 0):
        raise ConfigError(f"{owner}.normalize_clip = {normalize_clip!r} is out of range: need None or a finite "
                          "value > 0.")
    if drift is not None and not isinstance(drift, DriftPolicy):
        raise ConfigError(f"{owner}.drift must be a DriftPolicy or None, got {type(drift).__name__}.")


def as_float64(v: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().numpy().copy()
    return np.array(v, dtype=np.float64)


def as_rows(name: str, x: Any, width: int, *, one_event: bool) -> np.ndarray:
    """Inputs as a C-contiguous float64 ``[N, width]`` array. A 1-D input is one event
    (``one_event``) or, for a one-feature model, a column of events."""
    try:
        a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} cannot be read as numbers ({exc}).") from None
    if a.ndim == 1:
        a = a[None, :] if one_event or width > 1 else a[:, None]
    if a.ndim != 2 or a.shape[1] != width:
        raise ConfigError(f"{name} has shape {np.shape(x)}; need rows of {width} value(s).")
    return np.ascontiguousarray(a)


def as_targets(owner: str, y: Any, n: int, outputs: int) -> np.ndarray:
    """The targets ``Y`` of ``n`` events (the rows of ``X``) as a C-contiguous float64 array: ``[n]`` for
    one output (any shape with ``n`` values), ``[n, outputs]`` for several (a 1-D input of ``outputs``
    values is one event's). A wrong count or shape is a :class:`ConfigError` naming ``owner``."""
    try:
        if y is None:  # numpy reads None as NaN
            raise TypeError("None")
        a = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        what = f"the target y = {y!r} is not a number" if np.ndim(y) == 0 else f"Y cannot be read as numbers ({exc})"
        raise ConfigError(f"{owner}: {what}; nothing was learned.") from None
    if outputs == 1:
        a = a.reshape(-1)
        if a.shape[0] != n:
            raise ConfigError(f"{owner}: X has {n} row(s) but Y has {a.shape[0]}.")
        return np.ascontiguousarray(a)
    if a.ndim == 1 and n == 1:
        a = a[None, :]
    if a.shape != (n, outputs):
        raise ConfigError(f"{owner}: Y has shape {np.shape(y)}; this learner has {outputs} outputs, so it needs "
                          f"[{n}, {outputs}] targets (one row per event of X).")
    return np.ascontiguousarray(a)


def predictions(n: int, outputs: int) -> np.ndarray:
    """An empty prediction array for ``n`` events: ``[n]`` for one output, ``[n, outputs]`` for
    several (the shape every learner returns)."""
    return np.empty(n if outputs == 1 else (n, outputs))


def nonfinite_rows(X: np.ndarray, Y: np.ndarray | None, on_nonfinite: str, learned: int, consequence: str, *,
                   keys: Any = None) -> np.ndarray:
    """The ``[N]`` mask of events whose ``x`` row or target ``y`` (``[N]``, or ``[N, T]``: any of its
    values) holds NaN or inf. Under
    ``on_nonfinite="raise"`` the first such event raises :class:`NonFiniteInputError` naming the event
    (and its key, given ``keys``), the column and its value, ``learned`` (events learned so far) and
    ``consequence`` (what was not learned)."""
    flat = X.reshape(-1)
    if flat.shape[0] <= _DOT_MAX:
        # a finite sum of squares means every value is finite (any NaN or inf makes it NaN or inf); one
        # that overflows from finite values only takes the exact path below. A dot product, not
        # X.sum(): ~0.5 us instead of ~1.7 us for one event, which learn_one pays every call
        yf = None if Y is None else Y.reshape(-1)
        finite = math.isfinite(float(flat.dot(flat)) + (0.0 if yf is None else float(yf.dot(yf))))
    else:  # no BLAS on large batches: its threads spin on beside the compiled loop's (module doc)
        finite = bool(np.isfinite(flat).all()) and (Y is None or bool(np.isfinite(Y).all()))
    if finite:
        return np.zeros(X.shape[0], dtype=np.bool_)
    bad = ~np.isfinite(X).all(axis=1)
    if Y is not None:
        bad |= ~np.isfinite(Y) if Y.ndim == 1 else ~np.isfinite(Y).all(axis=1)
    if bad.any() and on_nonfinite == "raise":
        n = int(np.argmax(bad))
        if not np.isfinite(X[n]).all():
            col = int(np.argmax(~np.isfinite(X[n])))
            what = f"x column {col} is {float(X[n, col])!r}"
        elif Y.ndim == 1:  # type: ignore[union-attr]
            what = f"y is {float(Y[n])!r}"  # type: ignore[index]
        else:
            col = int(np.argmax(~np.isfinite(Y[n])))  # type: ignore[index]
            what = f"y column {col} is {float(Y[n, col])!r}"  # type: ignore[index]
        key = "" if keys is None else f" (key {keys[n]!r})"
        raise NonFiniteInputError(
            f"event {n} of this batch{key} (learned events so far: {learned}): {what}; {consequence}. Clean the "
            "data, or use on_nonfinite='skip' to leave such events out."
        )
    return bad


def checked_pending(snapshots: Any, Y: Any, width: int, outputs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``learn_pending``'s arguments as float64 arrays ``[N, width]`` and ``[N]`` (``[N, outputs]`` for
    several outputs), or an error that says what is wrong (shape, count, a non-finite value); nothing
    is learned on an error."""
    S = np.ascontiguousarray(np.asarray(snapshots, dtype=np.float64))
    if S.ndim != 2 or S.shape[1] != width:
        raise ConfigError(f"learn_pending: snapshots have shape {S.shape}; this learner's are [N, {width}] "
                          "(from its predict_pending).")
    if outputs == 1:
        Y = np.ascontiguousarray(np.asarray(Y, dtype=np.float64).reshape(-1))
        if Y.shape[0] != S.shape[0]:
            raise ConfigError(f"learn_pending: {S.shape[0]} snapshot(s) but {Y.shape[0]} target(s).")
    else:
        Y = as_targets("learn_pending", Y, S.shape[0], outputs)
    if not (np.isfinite(S).all() and np.isfinite(Y).all()):
        raise NonFiniteInputError("learn_pending: a snapshot or target is not finite; nothing was learned.")
    return S, Y
