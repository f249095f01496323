"""Hypothesis strategies that build valid objects directly (no filtering)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from psann_stream.testing.strategies import BOUNDS, CONTRACTIVE_MODES, MODES  # noqa: F401  (re-exported)
from psann_stream.testing.strategies import state_configs as _state_configs

def state_configs(**kwargs):
    """psann_stream.testing's strategy (one owner), in the moderate ranges the learning tests need
    (``rho <= 0.995``, ``beta <= 4``, ``max_abs`` in ``[0.1, 10]``; whole runs stay well conditioned).
    The contract tests draw the whole validated range with ``extreme=True``."""
    return _state_configs(**{"extreme": False, **kwargs})


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
