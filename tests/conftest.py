"""Hypothesis profiles: ``ci`` (default; derandomized, ~100 examples) and ``thorough`` (1000+).

Select with ``HYPOTHESIS_PROFILE=thorough pytest`` or ``pytest --hypothesis-profile=thorough``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
