"""Hypothesis profiles: ``ci`` (default; derandomized, ~100 examples) and ``thorough`` (1000+).

Select with ``HYPOTHESIS_PROFILE=thorough pytest`` or ``pytest --hypothesis-profile=thorough``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=100,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=1000,
    stateful_step_count=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One thread: bit-identical results between runs and processes, and no oversubscription on 2 cores.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--data", default=None,
                     help="path of ETTh1.csv for the real-feed tests (CI: ../shared/data/ETT/ETTh1.csv); skipped without it")


@pytest.fixture
def etth1_path(request):
    """The path given by ``--data``. Without ``--data`` the real-feed tests are skipped: ETTh1.csv is
    licensed CC BY-ND 4.0 and the project does not ship it. A ``--data`` path that is not a file
    fails the test (a typo must not pass as a skip)."""
    path = request.config.getoption("--data")
    if path is None:
        pytest.skip("needs ETTh1.csv, which the project does not ship (CC BY-ND 4.0): run pytest "
                    "--data=PATH/ETTh1.csv (../shared/data/ETT/ETTh1.csv in this workspace)")
    if not Path(path).is_file():
        pytest.fail(f"--data={path}: no such file; give the path of ETTh1.csv (or leave --data out to skip these tests).")
    return path
