"""Regression thresholds: what psann_stream's recommended configuration (``run.RECOMMENDED``) must
keep meeting on every scenario (seed 0). ``short`` runs in CI (3,000 steps), ``full`` on demand (6,000 steps:
``PSANN_SCENARIOS=full pytest tests/test_scenario_thresholds.py``).

Per scenario and length: ``mae`` (cumulative prequential MAE at most this: the value measured on
2026-12-01 plus 10%), ``recovery`` (every change point's recovery time at most this many steps),
``never`` (change points allowed not to recover before the next one: measured), and ``beats`` (models
whose MAE psann_stream's must stay below; only fast ones in ``short``). Every run must also keep each
layer's |state| within ``max_abs`` and raise no monitor alert.
"""

from __future__ import annotations

__all__ = ["THRESHOLDS", "LENGTHS"]

LENGTHS = {"short": 3000, "full": 6000}


def _no_changes(short: float, full: float, beats: list[str]) -> dict:
    """Thresholds of a scenario without change points: the MAE of each length and the models to beat."""
    return {length: {"mae": mae, "recovery": 0, "never": 0, "beats": beats} for length, mae in (("short", short), ("full", full))}


# the memory scenarios: learned memory must beat the truncated state
MEMORY_BEATS = ["river LinearRegression", "psann_stream (truncated)"]


THRESHOLDS: dict[str, dict[str, dict]] = {
    "sine-switch": {
        "short": {"mae": 0.043, "recovery": 800, "never": 1, "beats": ["river LinearRegression", "psann_stream (truncated)"]},
        "full": {"mae": 0.037, "recovery": 1400, "never": 1, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "ar-switch": {
        "short": {"mae": 0.326, "recovery": 100, "never": 0, "beats": ["psann_stream (truncated)"]},
        "full": {"mae": 0.307, "recovery": 400, "never": 0, "beats": ["eager LSTM (Adam)"]},
    },
    "ramp": {
        "short": {"mae": 0.040, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "psann_stream (truncated)"]},
        "full": {"mae": 0.033, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "shock": {
        "short": {"mae": 0.038, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "psann_stream (truncated)"]},
        "full": {"mae": 0.031, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "recurring": {
        "short": {"mae": 0.040, "recovery": 800, "never": 0, "beats": ["river LinearRegression", "psann_stream (truncated)"]},
        "full": {"mae": 0.035, "recovery": 1600, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "keyed-switch": {
        "short": {"mae": 0.083, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "psann_stream (truncated)"]},
        "full": {"mae": 0.064, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "friedman-drift": {
        "short": {"mae": 3.16, "recovery": 100, "never": 0, "beats": []},
        "full": {"mae": 2.70, "recovery": 100, "never": 0, "beats": ["ESN + RLS"]},
    },
    "delayed-copy-1": _no_changes(0.342, 0.285, MEMORY_BEATS),
    "delayed-copy-2": _no_changes(0.380, 0.317, MEMORY_BEATS),
    "delayed-copy-4": _no_changes(0.400, 0.337, MEMORY_BEATS),
    "delayed-copy-8": _no_changes(0.513, 0.440, MEMORY_BEATS),
    "delayed-copy-16": _no_changes(0.739, 0.662, MEMORY_BEATS),
    "narma10": _no_changes(0.046, 0.040, MEMORY_BEATS),
    "mackey-glass-h1": _no_changes(0.0117, 0.0088, MEMORY_BEATS),
    "mackey-glass-h10": _no_changes(0.030, 0.022, MEMORY_BEATS),
}
