"""Property-based stability testing for stateful models: the contract of docs/stability.md as
hypothesis strategies and a check suite any stateful module can run (docs/testing.md).

* :func:`yield_checks` / :func:`run_checks`: the named checks of the state contract for a
  :class:`~psann_stream.StatefulNet` or any module with ``forward(x, state) -> (y, new_state)`` and
  ``initial_state(n_streams)``.
* :mod:`psann_stream.testing.strategies`: hypothesis strategies for state configurations (to the
  validation boundaries of each dtype) and adversarial input streams.

One test runs them all::

    import pytest
    from psann_stream.testing import yield_checks

    @pytest.mark.parametrize("check", yield_checks(make_model), ids=lambda c: c.name)
    def test_stability(check):
        check()

Needs hypothesis (``pip install 'psann-stream[testing]'``).
"""

from .checks import Check, StabilityViolation, run_checks, yield_checks
from .strategies import adversarial_stream, adversarial_streams, state_configs

__all__ = ["Check", "StabilityViolation", "adversarial_stream", "adversarial_streams", "run_checks", "state_configs",
           "yield_checks"]
