"""How the output layer (the readout) learns: by the learner's optimiser with the rest of the network
(``"gradient"``, the default), or by recursive least squares (``"rls"``), a second-order rule that
converges in tens of events where first-order steps need thousands.

RLS with forgetting ``lam`` (Haykin, *Adaptive Filter Theory*, ch. 10), on ``z = (h, 1)`` (the last
stateful layer's outputs and a constant) and the a-priori error ``e`` of the normalised target::

    a = P z,  d = lam + z . a,  w <- w + a e / d,  P <- (P - a a^T / d) / f,  f = max(lam, trace / cap)

``P`` starts at ``prior * I``; ``cap = prior * (h + 1)`` is the trace of that prior. The error it
learns is limited to ``rls_error_clip`` (default 10) times the RMS of the errors learned before (a
discounted mean, 0.999 per event; no limit while every error learned so far was 0, as on a stream
that starts with zero targets), so one absurd target cannot throw the readout across the space. With a target normaliser, the readout first learns at the event after the target statistics
hold ``RLS_WARMUP`` (10) values: a second-order step fits the targets it has seen at once, and
targets normalised by a mean and deviation from one or two values are off by their whole level (the
first ETTh1 temperatures came out 30 deviations high, and the readout that fitted them predicted
hundreds of degrees off for a hundred events); the optimiser learns the layers below meanwhile. The
update keeps
``P`` symmetric positive definite (Sherman-Morrison of ``P^-1 + z z^T / lam``), and ``f`` keeps its
trace at most ``cap`` whatever the inputs: without it, forgetting divides ``P`` by ``lam`` at every
event in the directions the inputs do not excite, and ``P`` grows without bound (wind-up). The layers
below keep the learner's optimiser; it no longer moves the readout.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .errors import ConfigError

__all__ = ["RLS_HINT", "RLS_WARMUP", "Readout", "READOUTS", "initial_readout_matrix", "readout_config"]

Readout = Literal["gradient", "rls"]
READOUTS: tuple[str, ...] = ("gradient", "rls")
# The end of a non-finite-update message when the readout is RLS: its gain is the other step that can fail.
RLS_WARMUP = 10  # target values the normaliser holds before the readout learns (module doc)
RLS_HINT = "; with readout='rls' the readout's gain can also overflow: lower rls_prior or scale the inputs down."


def readout_config(readout: object, forgetting: object, prior: object, error_clip: object, width: int,
                   owner: str) -> np.ndarray:
    """``[forgetting, cap, error clip, warm-up]`` for the compiled loop (``cap = prior * (width + 1)``,
    ``width`` the last layer's units; error clip 0 for none; warm-up ``RLS_WARMUP``), after checking
    every setting (``ConfigError``)."""
    if readout not in READOUTS:
        raise ConfigError(f"{owner}.readout = {readout!r} is not one of {', '.join(map(repr, READOUTS))}.")
    for name, v in (("rls_forgetting", forgetting), ("rls_prior", prior)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{owner}.{name} = {v!r} must be a finite number.")
    if not 0.0 < float(forgetting) <= 1.0:
        raise ConfigError(f"{owner}.rls_forgetting = {forgetting!r} is out of range: need 0 < forgetting <= 1 "
                          "(1 - 1/memory in events, e.g. 0.999).")
    if not float(prior) > 0.0:
        raise ConfigError(f"{owner}.rls_prior = {prior!r} is out of range: need prior > 0 (the initial P is prior * I).")
    if error_clip is not None and (isinstance(error_clip, bool) or not isinstance(error_clip, (int, float))
                                   or not math.isfinite(error_clip) or error_clip <= 0):
        raise ConfigError(f"{owner}.rls_error_clip = {error_clip!r} is out of range: need None or a finite value > 0.")
    return np.array([float(forgetting), float(prior) * (width + 1), 0.0 if error_clip is None else float(error_clip),
                     float(RLS_WARMUP)])


def initial_readout_matrix(readout: str, width: int, prior: float) -> np.ndarray:
    """The flat state a readout starts (and restarts) from: ``prior * I`` of size ``(width + 1)^2`` for
    RLS (``width`` = the last layer's units), then the two error statistics of the error clip (0, 0);
    empty for the gradient readout."""
    if readout != "rls":
        return np.zeros(0)
    return np.concatenate([(prior * np.eye(width + 1)).reshape(-1), np.zeros(2)])
