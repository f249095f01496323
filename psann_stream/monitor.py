"""Stability diagnostics that say what happened, where, why, and which configuration change fixes it.

The learner folds, after every learned event, exponential moving averages (decay 0.99) of: per
layer the largest ``|s| / max_abs`` and the share of units at the bound (``|s| >= 0.99 max_abs``);
per unit ``|a|`` (for the dormant share, Sokar et al. 2023); the norm of the prediction's gradient;
the update ratio ``||d theta||_1 / ||theta||_1``; and the effective step (the fraction of the error
one update removes; NLMS / Autostep). :meth:`Monitor.check` reads them and raises alerts:

=============  ==============================================  =====================================
alert          condition (after ``min_events`` events)          cause it names
=============  ==============================================  =====================================
saturation     share at the bound >= ``saturated_share``        ``beta*G`` vs ``max_abs``, or legacy growth
vanishing      EMA of max ``|s|/max_abs`` < ``vanish_ratio``    legacy decay, or a silent layer
dormant        share of units with EMA ``|a|`` <= ``dormant_tau``   mean ``|a|`` of the layer; the
               x layer mean  >= ``dormant_share``, or the          optimiser's step setting
               layer mean ``|a|`` < ``silent_level``
overshoot      EMA of the effective step >= 1 (>= 2: diverging)  ``lr * ||g||^2`` too large
=============  ==============================================  =====================================

Each alert is an :class:`Alert` record and a :class:`StabilityWarning`; the same alert (kind, layer,
key) is repeated at most once every ``cooldown`` events. Non-finite values are not alerts: the
learner raises :class:`~psann_stream.errors.NonFiniteStateError` at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from .state import StateBounds
from .state import StateConfig

__all__ = ["Alert", "Monitor", "StabilityWarning", "monitor_size"]


class StabilityWarning(RuntimeWarning):
    """A state or optimisation statistic left its healthy range; the message says why and what to change."""


@dataclass(frozen=True)
class Alert:
    """One diagnostic: ``kind`` at ``layer`` (None: the whole model), learned event ``step``, stream
    ``key``; ``what`` happened, ``why`` (with the numbers), and the ``fix``."""

    kind: str
    layer: int | None
    step: int
    key: Hashable | None
    what: str
    why: str
    fix: str
    value: float

    def __str__(self) -> str:
        where = f"layer {self.layer}" if self.layer is not None else "model"
        key = f", key {self.key!r}" if self.key is not None else ""
        return f"[{self.kind}] {where}, step {self.step}{key}: {self.what}. Why: {self.why}. Fix: {self.fix}."


def _step_setting(optimizer: str, settings: Mapping[str, Any]) -> str:
    if optimizer == "obgd":
        return f"optimizer='obgd' with kappa = {settings.get('kappa'):g} (moves up to 1/kappa per event)"
    return f"optimizer={optimizer!r} with lr = {settings.get('lr'):g}"


def _step_fix(optimizer: str, settings: Mapping[str, Any], factor: float) -> str:
    """The configuration change that makes steps ``factor`` times smaller."""
    factor = max(factor, 2.0)
    if optimizer == "obgd":
        return f"raise kappa to >= {settings['kappa'] * factor:.3g} (optimizer_kwargs={{'kappa': ...}})"
    if optimizer == "intentional":
        return f"lower lr to <= {settings['lr'] / factor:.3g} (the fraction of the error one step removes)"
    return f"lower lr to <= {settings['lr'] / factor:.3g}, or use optimizer='obgd', whose steps are bounded"


def monitor_size(widths: Sequence[int]) -> int:
    """Length of the statistics vector for layers of the given widths."""
    return 2 * len(widths) + int(sum(widths)) + 4


@dataclass
class Monitor:
    """Reads the learner's statistics and turns unhealthy ones into alerts (see module doc)."""

    saturated_share: float = 0.25
    vanish_ratio: float = 1e-6
    dormant_tau: float = 0.025
    dormant_share: float = 0.5
    silent_level: float = 0.01
    overshoot_warn: float = 1.0
    overshoot_diverge: float = 2.0
    min_events: int = 200
    cooldown: int = 5000
    emit_warnings: bool = True
    alerts: list[Alert] = field(default_factory=list)
    _last: dict[tuple[str, int | None, Any], int] = field(default_factory=dict, repr=False)

    def check(
        self,
        stats: np.ndarray,
        *,
        config: StateConfig,
        bounds: Sequence[StateBounds],
        widths: Sequence[int],
        optimizer: str,
        settings: Mapping[str, Any],
        step: int,
        key: Hashable | None = None,
    ) -> list[Alert]:
        """Alerts for the statistics ``stats`` (layout: :func:`monitor_size`) after ``step`` events."""
        if step < self.min_events:
            return []
        found: list[Alert] = []
        L = len(widths)
        m = config.max_abs
        offset = 2 * L
        for layer, (b, h) in enumerate(zip(bounds, widths)):
            ratio, sat = float(stats[2 * layer]), float(stats[2 * layer + 1])
            units = stats[offset : offset + h]
            offset += h
            limit = config.beta * b.drive_bound
            if sat >= self.saturated_share:
                if config.mode == "psann_legacy":
                    g = config.rho + (1 - config.rho) * config.beta * b.drive_bound
                    why = (f"psann_legacy feeds the state into its own drive; growth factor "
                           f"rho + (1-rho)*beta*G = {g:.3g} > 1 pushes states to max_abs = {m:g}")
                    fix = "use mode='gain' (StateConfig.from_mapping maps psann dicts to it)"
                else:
                    why = f"beta*G = {config.beta:g}*{b.drive_bound:.3g} = {limit:.3g} vs max_abs = {m:g}"
                    fix = (f"raise max_abs to >= {2 * limit:.3g} (2*beta*G) or lower beta to <= {m / (2 * b.drive_bound):.3g}"
                           if limit > 0.5 * m else "the activations are large: keep normalize_x=True or lower the learning rate")
                found.append(Alert("saturation", layer, step, key, f"{sat:.0%} of units at |s| >= 0.99*max_abs", why, fix, sat))
            if ratio < self.vanish_ratio:
                mean_a = float(np.mean(units)) if h else 0.0
                if config.mode == "psann_legacy":
                    g = config.rho + (1 - config.rho) * config.beta * mean_a
                    why = f"psann_legacy growth factor rho + (1-rho)*beta*mean|a| = {g:.3g} < 1 decays the state to 0"
                    fix = "use mode='gain'; the legacy update has an absorbing state at 0"
                else:
                    why = f"the layer's activations are ~0 (mean |a| = {mean_a:.3g}), so its state has nothing to track"
                    fix = "check the inputs (normalize_x=True) and lower the learning rate; the layer has gone silent"
                found.append(Alert("vanishing", layer, step, key, f"state norm fell to {ratio:.2g}*max_abs", why, fix, ratio))
            if h:
                mean_a = float(np.mean(units))
                share = float(np.mean(units <= self.dormant_tau * mean_a)) if mean_a > 0 else 1.0
                if mean_a < self.silent_level and ratio >= self.vanish_ratio:
                    found.append(Alert(
                        "dormant", layer, step, key, "the whole layer is silent",
                        f"mean |a| = {mean_a:.3g} (amplitude bound G = {b.drive_bound:.3g}): steps too large for the "
                        f"network ({_step_setting(optimizer, settings)}) drove the amplitudes to 0 or the "
                        "pre-activations so far out that exp(-d|z|) ~ 0; or the inputs are on the wrong scale",
                        f"{_step_fix(optimizer, settings, 10.0)}; keep normalize_x=True", mean_a))
                elif share >= self.dormant_share:
                    found.append(Alert(
                        "dormant", layer, step, key, f"{share:.0%} of units are dormant",
                        f"their mean |a| is <= {self.dormant_tau:g} x the layer mean ({mean_a:.3g})",
                        f"{_step_fix(optimizer, settings, 2.0)}; re-initialise the layer if it persists",
                        share))
        g = 2 * L + int(sum(widths))
        ema_eff, max_eff = float(stats[g + 2]), float(stats[g + 3])
        grad_norm = float(stats[g])
        if ema_eff >= self.overshoot_warn:
            verb = "diverging" if ema_eff >= self.overshoot_diverge else "overshooting"
            found.append(Alert(
                "overshoot", None, step, key,
                f"updates are {verb}: effective step {ema_eff:.3g} on average (largest since the last check {max_eff:.3g})",
                f"an update removes {ema_eff:.3g}x the error (>= 1 overshoots, >= 2 diverges); "
                f"{_step_setting(optimizer, settings)}, EMA of ||grad y_hat|| = {grad_norm:.3g}",
                _step_fix(optimizer, settings, 2.0 * ema_eff),
                ema_eff))
        return self._emit(found)

    def flag_rows(self, stats: np.ndarray, widths: Sequence[int], events: np.ndarray) -> np.ndarray:
        """Rows of a ``[keys, monitor_size]`` statistics matrix that :meth:`check` may alert on,
        found with array operations (so many keys cost no Python loop when all are healthy)."""
        L = len(widths)
        ready = events >= self.min_events
        ratio, sat = stats[:, 0 : 2 * L : 2], stats[:, 1 : 2 * L : 2]
        bad = (sat >= self.saturated_share).any(axis=1) | (ratio < self.vanish_ratio).any(axis=1)
        g = 2 * L + int(sum(widths))
        bad |= stats[:, g + 2] >= self.overshoot_warn
        off = 2 * L
        for h in widths:
            units = stats[:, off : off + h]
            mean = units.mean(axis=1, keepdims=True)
            share = np.where(mean[:, 0] > 0, (units <= self.dormant_tau * mean).mean(axis=1), 1.0)
            bad |= share >= self.dormant_share
            off += h
        return np.nonzero(bad & ready)[0]

    def _emit(self, found: list[Alert]) -> list[Alert]:
        out = []
        for a in found:
            k = (a.kind, a.layer, a.key)
            last = self._last.get(k)
            if last is not None and a.step - last < self.cooldown:
                continue
            self._last[k] = a.step
            self.alerts.append(a)
            out.append(a)
            if self.emit_warnings:
                warnings.warn(StabilityWarning(str(a)), stacklevel=3)
        return out
