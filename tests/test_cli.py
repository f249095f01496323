"""The ``psann-stream`` command line: the demo learns, and errors are one line."""

from __future__ import annotations

import re

import pytest

from psann_stream.cli import main


def test_demo_stateful_model_beats_the_same_network_without_state(capsys):
    """After warm-up, the faded prequential error of the stateful model is far below the same
    network with its state off and below persistence: the state carries the sine's direction."""
    assert main(["demo", "--steps", "8000", "--every", "2000"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+[0-9,]+$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [2000, 4000, 6000, 8000], out
    stateful, stateless, persistence = map(float, rows[-1][2:])
    assert stateful < 0.5 * stateless
    assert stateful < persistence
    assert re.search(r"cumulative MAE over 8000 steps: stateful [0-9.]+", out)
    assert re.search(r"layer 1: max \|state\| [0-9.]+ <= limit", out)
    assert "monitor: 0 alert(s)" in out


def test_demo_rejects_bad_arguments_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--steps", "0"])
    assert info.value.code == 2
    assert "--steps and --every must be >= 1" in capsys.readouterr().err
