"""The long-run guarantees of the default configuration, over 100,000 steps."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

from psann_stream import StatefulNet, predict_sequence

STEPS = 100_000
pytestmark = pytest.mark.slow


def test_default_state_stays_within_max_abs_for_100k_steps_of_extreme_input():
    net = StatefulNet(3, hidden=(8, 8), seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():  # arbitrary, large raw parameters
            p.copy_(torch.randn(p.shape, generator=g) * 100)
    m = net.state_config.max_abs
    streams = 16
    choices = torch.tensor([1e30, -1e30, 3e38, -3e38, 0.0, 1.0, -1.0, 1e-30])
    state = net.initial_state(streams)
    worst = 0.0
    with torch.no_grad():
        for t in range(STEPS):
            if t % 1000 == 0:
                block = choices[torch.randint(0, len(choices), (1000, streams, 3), generator=g)]
                block *= torch.rand(block.shape, generator=g)
            _, state = net(block[t % 1000], state)
            worst = max(worst, max(float(s.abs().max()) for s in state))
            if not all(bool(torch.isfinite(s).all()) for s in state):
                raise AssertionError(f"non-finite state at step {t}")
    assert worst <= m


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() pokes deprecated torch.distributed aliases
        warnings.simplefilter("ignore", FutureWarning)
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_detached_rollout_memory_is_flat_over_100k_steps():
    """Autograd on, predictions discarded chunk by chunk: the held state carries no graph and the
    number of live tensors does not grow between 10,000 and 100,000 steps."""
    net = StatefulNet(3, hidden=(8,), seed=0)
    x = torch.randn(1000, 1, 3, generator=torch.Generator().manual_seed(1))
    predict_sequence(net, x)
    counts = {}
    for chunk in range(1, STEPS // 1000):
        predict_sequence(net, x, reset=False)
        assert all(s.grad_fn is None for s in net.held_state())
        if chunk in (10, STEPS // 1000 - 1):
            counts[chunk] = _live_tensors()
    assert counts[10] == counts[STEPS // 1000 - 1]
