"""Plots of a scenario run (matplotlib, an optional extra: ``pip install 'psann-stream[plots]'``):
faded prequential error of every model over time with the change points and their post-change
windows (the events the post-change MAE counts) marked, psann_stream's largest |state| per layer
against ``max_abs``, and, when the ensemble ran, its mixture weights over time."""

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
    from .metrics import POST_CHANGE

    st = result.get("psann_state") or {}
    mix = st.get("ensemble")
    fig, axes = plt.subplots(3 if mix else 2, 1, figsize=(10, 9 if mix else 7), sharex=True,
                             height_ratios=(3, 2, 2) if mix else (3, 2))
    err_ax, state_ax = axes[0], axes[1]
    for model, faded in traces.items():
        err_ax.plot(np.arange(1, len(faded) + 1), faded, label=model, linewidth=1.2 if model == "psann_stream" else 0.8)
    for i, c in enumerate(result["change_points"]):
        for ax in axes:
            ax.axvline(c, color="grey", linestyle=":", linewidth=0.8)
        err_ax.axvspan(c, c + POST_CHANGE, color="grey", alpha=0.12,
                       label=f"post-change windows ({POST_CHANGE} events)" if i == 0 else None)
    err_ax.set_yscale("log")
    err_ax.set_ylabel("faded MAE (alpha 0.999)")
    err_ax.set_title(f"{result['scenario']}: {result['description']}", fontsize=9)
    err_ax.legend(fontsize=7)
    for i, norms in enumerate(st.get("layer_max_abs_state", [])):
        state_ax.plot(st["steps"], norms, label=f"psann layer {i} max |state|")
    if "max_abs" in st:
        state_ax.axhline(st["max_abs"], color="red", linestyle="--", linewidth=1, label="max_abs")
    state_ax.set_ylabel("|state|")
    state_ax.legend(fontsize=7)
    if mix:
        axes[2].stackplot(mix["steps"], mix["weights"], labels=mix["members"])
        axes[2].set_ylabel("ensemble weights")
        axes[2].set_ylim(0, 1)
        axes[2].legend(fontsize=7, loc="upper left", ncol=3)
    axes[-1].set_xlabel("event")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
