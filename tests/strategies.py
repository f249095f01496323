"""Hypothesis strategies that build valid objects directly (no filtering)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from psann_stream import StateConfig

MODES = ("trace", "gain", "psann_legacy")
CONTRACTIVE_MODES = ("trace", "gain")
BOUNDS = ("clip", "tanh", "ball")


@st.composite
def state_configs(draw, modes=MODES, bounds=BOUNDS, detach=None, rates=False, pairs=False):
    """``rates=True`` also draws learnable rates (outside legacy mode) with their memory range;
    ``pairs=True`` oscillatory pairs in trace mode (for layers of even width)."""
    mode = draw(st.sampled_from(modes))
    m = draw(st.floats(0.1, 10.0))
    bound = draw(st.sampled_from(bounds))
    # the initial state must satisfy the bound; the widest layer in the tests has 8 units
    m_init = m / 8**0.5 if bound == "ball" else m
    init_lo = 0.0 if mode == "gain" else -m_init
    gain_max = draw(st.floats(0.5, 8.0))
    learnable = draw(st.booleans())
    learn_rate = rates and mode != "psann_legacy" and draw(st.booleans())
    memory = sorted(draw(st.lists(st.floats(1.01, 1e4), min_size=2, max_size=2))) if learn_rate else (2.0, 500.0)
    return StateConfig(
        mode=mode,
        rho=draw(st.floats(0.0, 0.995)),
        beta=draw(st.floats(0.0, 4.0)),
        init=draw(st.floats(init_lo, m_init)),
        max_abs=m,
        bound=bound,
        detach=draw(st.booleans()) if detach is None else detach,
        gain=draw(st.floats(-0.99, 0.99)) * gain_max,
        learnable_gain=learnable,
        gain_max=gain_max,
        gain_eps=draw(st.floats(1e-3, 1.0)),
        learnable_rate=learn_rate,
        memory_min=memory[0],
        memory_max=memory[1],
        oscillatory=pairs and mode == "trace" and draw(st.booleans()),
    )


BIG = float(np.float32(1e30))  # +-1e30 as float32 represents it


def finite_f32(lo=-BIG, hi=BIG):
    """Finite float32 values, subnormals excluded, spanning the given range (default +-1e30)."""
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    return st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def f32_arrays(draw, shape, elements=None):
    """A float32 array of ``shape``: either a seeded normal draw scaled by a drawn magnitude, or
    explicit values (which reach the extremes, e.g. +-1e30, that shrinking likes)."""
    if draw(st.booleans()):
        seed = draw(st.integers(0, 2**32 - 1))
        scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 1e6, 1e30]))
        return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    n = int(np.prod(shape))
    vals = draw(st.lists(finite_f32() if elements is None else elements, min_size=n, max_size=n))
    return np.asarray(vals, dtype=np.float32).reshape(shape)
