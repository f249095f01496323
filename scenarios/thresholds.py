"""Regression thresholds: what psann_stream's default configuration must keep meeting on every
scenario (seed 0). ``short`` runs in CI (3,000 steps), ``full`` on demand (6,000 steps:
``PSANN_SCENARIOS=full pytest tests/test_scenario_thresholds.py``).

Per scenario and length: ``mae`` (cumulative prequential MAE at most this: the value measured on
2026-11-29 plus 10%), ``recovery`` (every change point's recovery time at most this many steps),
``never`` (change points allowed not to recover before the next one: measured), and ``beats`` (models
whose MAE psann_stream's must stay below; only fast ones in ``short``). Every run must also keep each
layer's |state| within ``max_abs`` and raise no monitor alert.
"""

from __future__ import annotations

__all__ = ["THRESHOLDS", "LENGTHS"]

LENGTHS = {"short": 3000, "full": 6000}

THRESHOLDS: dict[str, dict[str, dict]] = {
    "sine-switch": {
        "short": {"mae": 0.127, "recovery": 800, "never": 0, "beats": ["river LinearRegression"]},
        "full": {"mae": 0.081, "recovery": 1100, "never": 1, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)"]},
    },
    "ar-switch": {
        "short": {"mae": 0.338, "recovery": 100, "never": 0, "beats": []},
        "full": {"mae": 0.316, "recovery": 400, "never": 0, "beats": ["eager LSTM (Adam)"]},
    },
    "ramp": {
        "short": {"mae": 0.046, "recovery": 100, "never": 0, "beats": ["river LinearRegression"]},
        "full": {"mae": 0.039, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "river HATR", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "shock": {
        "short": {"mae": 0.046, "recovery": 100, "never": 0, "beats": ["river LinearRegression"]},
        "full": {"mae": 0.038, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)", "eager LSTM (Adam)"]},
    },
    "recurring": {
        "short": {"mae": 0.153, "recovery": 800, "never": 0, "beats": ["river LinearRegression"]},
        "full": {"mae": 0.095, "recovery": 1600, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)"]},
    },
    "keyed-switch": {
        "short": {"mae": 0.170, "recovery": 100, "never": 0, "beats": ["river LinearRegression"]},
        "full": {"mae": 0.151, "recovery": 100, "never": 0, "beats": ["river LinearRegression", "river HATR", "river ARF", "eager MLP (Adam)"]},
    },
    "friedman-drift": {
        "short": {"mae": 2.94, "recovery": 100, "never": 0, "beats": []},
        "full": {"mae": 2.61, "recovery": 100, "never": 0, "beats": ["river HATR"]},
    },
}
