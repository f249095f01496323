"""Drift detection on the prediction error, per key, with resets at the event of detection.

:class:`DriftPolicy` attaches a Page-Hinkley test (river's ``drift.PageHinkley``, the same
recurrence and float operations, run inside the compiled per-event loop; tests hold the two to
identical detections) to every key's stream of absolute prediction errors divided by the target's
running standard deviation (scale-free: one threshold fits any target unit). When a key's test
fires, that key's state is reset to ``init`` and/or its optimiser restarted (ObGD traces; Adam's
bias correction; the intentional-SGD error scale) *before its next event*, so where a reset lands
does not depend on batch sizes, shard counts or where a run was resumed. The detector's numbers
are a per-key row of the learner's state, so they travel through checkpoints (``weights_only``),
eviction to the cold store and shard rescaling like every other per-key array.

Why not river's detector objects themselves: calling a Python object per event would cost more
than the whole compiled learning step, and their state only serialises by pickle, which checkpoints
refuse to load. ADWIN (a Cython object holding a variable-size bucket list) is not offered for the
same reasons.

The engine reports each detection through its ``on_drift(key, position, row)`` hook and each
batch's reset keys through ``on_reset(keys, what)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from .errors import ConfigError

__all__ = ["DriftPolicy", "fresh_detector"]

_MODES = {"up": 0.0, "down": 1.0, "both": 2.0}


@dataclass(frozen=True)
class DriftPolicy:
    """Page-Hinkley on each key's normalised absolute error, and what to reset on drift.

    Args:
        min_instances: events a key's test sees before it may fire (river's default 30).
        delta: tolerated change of the error's mean, in target standard deviations (0.005).
        threshold: how far the cumulative deviation must run before a drift is declared (river's
            default 50; the error here is in target standard deviations, so it fits any unit).
        alpha: forgetting of the cumulative sums (1 - 1e-4).
        mode: ``"up"`` (default: only rising error is drift; a model getting better is not),
            ``"down"`` or ``"both"``.
        reset_state: reset the key's state to ``init`` on drift (default True).
        reset_optimizer: restart the key's optimiser on drift (default False); with shared weights
            the optimiser is shared, so this restarts it for every key.
    """

    min_instances: int = 30
    delta: float = 0.005
    threshold: float = 50.0
    alpha: float = 1.0 - 1e-4
    mode: Literal["up", "down", "both"] = "up"
    reset_state: bool = True
    reset_optimizer: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.min_instances, bool) or not isinstance(self.min_instances, int) or self.min_instances < 1:
            raise ConfigError(f"DriftPolicy.min_instances = {self.min_instances!r} must be an integer >= 1.")
        if not (math.isfinite(self.delta) and self.delta >= 0):
            raise ConfigError(f"DriftPolicy.delta = {self.delta!r} must be finite and >= 0.")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ConfigError(f"DriftPolicy.threshold = {self.threshold!r} must be finite and > 0.")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"DriftPolicy.alpha = {self.alpha!r} must be in (0, 1].")
        if self.mode not in _MODES:
            raise ConfigError(f"DriftPolicy.mode = {self.mode!r} is not one of 'up', 'down', 'both'.")
        if not (self.reset_state or self.reset_optimizer):
            raise ConfigError("DriftPolicy resets nothing: set reset_state and/or reset_optimizer.")

    @cached_property
    def kernel_config(self) -> np.ndarray:
        """The ``pcfg`` vector of the compiled test: [min_instances, delta, threshold, alpha, mode]
        (built once; the kernel only reads it)."""
        return np.array([self.min_instances, self.delta, self.threshold, self.alpha, _MODES[self.mode]], dtype=np.float64)

    @property
    def resets(self) -> tuple[str, ...]:
        """What a drift resets: ``("state",)``, ``("optimizer",)`` or both."""
        return tuple(name for name, on in (("state", self.reset_state), ("optimizer", self.reset_optimizer)) if on)


def fresh_detector() -> np.ndarray:
    """A detector row with nothing seen: [n, mean, sum_inc, sum_dec, min_inc, max_dec] as river starts."""
    return np.array([0.0, 0.0, 0.0, 0.0, math.inf, -1.0])
