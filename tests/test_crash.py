"""The crash test, small: a keyed run killed with SIGKILL at random points and resumed equals the
uninterrupted run (outputs and final learner state). The full 200,000-row, 20-trial version is
``python -m psann_stream.scenarios.crash_test``."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_killed_and_resumed_runs_equal_the_uninterrupted_run():
    proc = subprocess.run(
        [sys.executable, "-m", "psann_stream.scenarios.crash_test", "--rows", "30000", "--trials", "2", "--seed", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trial 1: identical (30000 rows)" in proc.stdout
    assert "every resumed run equals the uninterrupted one" in proc.stdout
