"""Plots of a scenario run (matplotlib, an optional extra: ``pip install 'psann-stream[plots]'``):
faded prequential error of every model over time with the change points marked, and psann_stream's
largest |state| per layer against ``max_abs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from psann_stream.errors import ConfigError

__all__ = ["plot_scenario"]


def plot_scenario(result: dict, traces: dict[str, np.ndarray], path: str | Path | None = None) -> Any:
    """Draw ``result`` (from :func:`~psann_stream.scenarios.run.run_scenario`) with the faded-MAE
    ``traces`` it filled; saves a PNG to ``path`` if given; returns the matplotlib Figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'psann-stream[plots]' (or pip install matplotlib).") from None
    fig, (err_ax, state_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=(3, 2))
    for model, faded in traces.items():
        err_ax.plot(np.arange(1, len(faded) + 1), faded, label=model, linewidth=1.2 if model == "psann_stream" else 0.8)
    for c in result["change_points"]:
        for ax in (err_ax, state_ax):
            ax.axvline(c, color="grey", linestyle=":", linewidth=0.8)
    err_ax.set_yscale("log")
    err_ax.set_ylabel("faded MAE (alpha 0.999)")
    err_ax.set_title(f"{result['scenario']}: {result['description']}", fontsize=9)
    err_ax.legend(fontsize=7)
    st = result.get("psann_state") or {}
    for i, norms in enumerate(st.get("layer_max_abs_state", [])):
        state_ax.plot(st["steps"], norms, label=f"psann layer {i} max |state|")
    if "max_abs" in st:
        state_ax.axhline(st["max_abs"], color="red", linestyle="--", linewidth=1, label="max_abs")
    state_ax.set_ylabel("|state|")
    state_ax.set_xlabel("event")
    state_ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
