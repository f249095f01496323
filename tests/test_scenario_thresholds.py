"""Regression suite: psann_stream's default configuration meets every scenario's thresholds
(:mod:`psann_stream.scenarios.thresholds`): MAE, the MAE after each change, the models it must
beat, the state within max_abs, no monitor alert. Short versions by default; the full versions with
``PSANN_SCENARIOS=full``."""

from __future__ import annotations

import os

import pytest

from psann_stream.scenarios.run import run_scenario
from psann_stream.scenarios.streams import SCENARIOS
from psann_stream.scenarios.thresholds import LENGTHS, THRESHOLDS

LENGTH = os.environ.get("PSANN_SCENARIOS", "short")


def test_every_scenario_has_thresholds_for_both_lengths():
    assert set(THRESHOLDS) == set(SCENARIOS)
    assert all(set(t) == set(LENGTHS) for t in THRESHOLDS.values())


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_default_psann_stream_meets_the_scenario_thresholds(name):
    want = THRESHOLDS[name][LENGTH]
    result = run_scenario(name, LENGTHS[LENGTH], 0, ["psann_stream", *want["beats"]])
    ours = result["models"]["psann_stream"]
    assert ours["mae"] <= want["mae"]
    post = [c["post_change_mae"] for c in ours["changes"]]
    assert (want["post_change"] is None) == (not post)
    assert all(v <= want["post_change"] for v in post), post
    for other in want["beats"]:
        assert ours["mae"] < result["models"][other]["mae"], other
    state = result["psann_state"]
    assert max(max(layer) for layer in state["layer_max_abs_state"]) <= state["max_abs"]
    assert state["alerts"] == []
