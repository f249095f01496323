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
dormant        share of units with EMA ``|a|`` <= ``dormant_tau``   mean ``|a|`` of the layer
               x layer mean  >= ``dormant_share``
overshoot      EMA effective step >= 1 (warn) / max >= 2         ``lr * ||g||^2`` too large
=============  ==============================================  =====================================

Each alert is an :class:`Alert` record and a :class:`StabilityWarning`; the same alert (kind, layer,
key) is repeated at most once every ``cooldown`` events. Non-finite values are not alerts: the
learner raises :class:`~psann_stream.errors.NonFiniteStateError` at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from .layers import StateBounds
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
        lr: float,
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
                if share >= self.dormant_share:
                    found.append(Alert(
                        "dormant", layer, step, key, f"{share:.0%} of units are dormant",
                        f"their mean |a| is <= {self.dormant_tau:g} x the layer mean ({mean_a:.3g})",
                        "lower the learning rate or kappa-bound it (optimizer='obgd'); re-initialise the layer if it persists",
                        share))
        g = 2 * L + int(sum(widths))
        ema_eff, max_eff = float(stats[g + 2]), float(stats[g + 3])
        grad_norm = float(stats[g])
        if max_eff >= self.overshoot_diverge or ema_eff >= self.overshoot_warn:
            bad = max(max_eff, ema_eff)
            verb = "diverging" if max_eff >= self.overshoot_diverge else "overshooting"
            found.append(Alert(
                "overshoot", None, step, key,
                f"updates are {verb}: effective step {bad:.3g} (EMA {ema_eff:.3g})",
                f"an update removes {bad:.3g}x the error (>= 1 overshoots, >= 2 diverges); lr = {lr:g}, "
                f"EMA of ||grad y_hat|| = {grad_norm:.3g}",
                f"lower lr to <= {lr / max(bad, 1e-12) * 0.5:.3g}, or use optimizer='obgd' or 'intentional', "
                "whose steps are bounded",
                bad))
        return self._emit(found)

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
