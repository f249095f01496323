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

    @pytest.mark.parametrize("check", list(yield_checks(make_model)), ids=lambda c: c.name)
    def test_stability(check):
        check()

A module of one's own needs ``forward(x, state) -> (y, new_state)``, ``initial_state(n_streams)``
and ``in_features``; say what it claims (``max_abs``, ``contraction``) and the checks hold it to it:

>>> import torch
>>> from torch import nn
>>> class Leaky(nn.Module):
...     # s' = 0.7 s + 0.3 tanh(W x + b): a contraction at rate 0.7 with |s| <= 1
...     def __init__(self):
...         super().__init__()
...         torch.manual_seed(0)
...         self.in_features, self.inp, self.head = 3, nn.Linear(3, 4), nn.Linear(4, 1)
...     def initial_state(self, n):
...         return torch.zeros(n, 4)
...     def forward(self, x, s):
...         s = 0.7 * s + 0.3 * torch.tanh(self.inp(x))
...         return self.head(s), s
>>> found = run_checks(Leaky, max_abs=1.0, contraction=0.7, max_input=1e6)
>>> sorted(name for name, failure in found.items() if failure is None)  # doctest: +NORMALIZE_WHITESPACE
['bounded', 'checkpoint', 'contraction', 'fixed_point', 'no_collapse', 'nonfinite', 'reset',
 'streams_independent']
>>> print(run_checks(Leaky, max_abs=1.0, contraction=0.5, max_input=1e6)["contraction"])  # doctest: +ELLIPSIS
contraction: after 1 step(s) of the 'normal' stream, stream ...: the gap between two trajectories is ..., above the claimed 0.5 x its start ...

Needs hypothesis (``pip install 'psann-stream[testing]'``).
"""

from .checks import Check, StabilityViolation, run_checks, yield_checks
from .strategies import adversarial_stream, adversarial_streams, state_configs

__all__ = ["Check", "StabilityViolation", "adversarial_stream", "adversarial_streams", "run_checks", "state_configs",
           "yield_checks"]
