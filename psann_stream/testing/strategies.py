"""Hypothesis strategies for state configurations and adversarial input streams.

Every strategy builds valid objects directly (no filtering), reaching the validation boundaries of
the dtype it is asked for: ``rho`` up to ``1 - eps``, ``beta`` and ``max_abs`` across their whole
range (up to the dtype's largest finite value, a quarter of it for ``max_abs``; ``max_abs`` and
``gain_eps`` down to its smallest normal one), inputs up to ``+-1e300`` (float64) or ``+-3e38``
(float32).

>>> from hypothesis import given, settings
>>> @settings(max_examples=20, derandomize=True, database=None)
... @given(state_configs(dtype=torch.float32))
... def test_rates_stay_below_one_in_float32(cfg):
...     assert float(torch.tensor(cfg.rho, dtype=torch.float32)) < 1.0
>>> test_rates_stay_below_one_in_float32()
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from ..state import StateConfig

__all__ = [
    "ADVERSARIAL_KINDS", "BOUNDS", "CONTRACTIVE_MODES", "MODES", "adversarial_stream", "adversarial_streams", "dtypes",
    "largest_rate", "state_configs",
]

MODES = ("trace", "gain", "psann_legacy")
CONTRACTIVE_MODES = ("trace", "gain")
BOUNDS = ("clip", "tanh", "ball")


def dtypes() -> st.SearchStrategy[torch.dtype]:
    """The dtypes the state runs in: float32 (``StatefulNet``'s default) and float64 (the kernel's)."""
    return st.sampled_from([torch.float32, torch.float64])


def largest_rate(dtype: torch.dtype) -> float:
    """The largest ``rho`` valid in ``dtype``: ``1 - eps`` (float32: ``1 - 2**-23``; float64:
    ``1 - 2**-52``), the last rate at which ``rho * s`` still rounds below ``s``
    (:func:`psann_stream.state.check_dtype`)."""
    return 1.0 - torch.finfo(dtype).eps


def _positive(dtype: torch.dtype, typical: tuple[float, float], extreme: bool,
              top: float | None = None) -> st.SearchStrategy[float]:
    """Mostly typical values; with ``extreme``, also log-uniform ones across the dtype's normal range
    up to ``top`` (default: its largest value), and both ends."""
    lo, hi = typical
    plain = st.floats(lo, hi)
    if not extreme:
        return plain
    info = torch.finfo(dtype)
    top = info.max if top is None else top
    wide = st.floats(math.log10(info.tiny), math.floor(math.log10(top))).map(lambda e: min(max(10.0**e, info.tiny), top))
    return st.one_of(plain, plain, wide, st.sampled_from([info.tiny, top]))


@st.composite
def state_configs(draw, *, dtype: torch.dtype = torch.float64, modes=MODES, bounds=BOUNDS, extreme: bool = True,
                  detach: bool | None = None, rates: bool = False, pairs: bool = False, units: int = 8) -> StateConfig:
    """Valid :class:`StateConfig` for ``dtype``.

    Args:
        dtype: the dtype the state will run in; every drawn value survives it
            (:func:`psann_stream.state.check_dtype` passes).
        modes, bounds: the modes and bounds to draw from.
        extreme: also draw ``rho`` near the dtype's last value below 1 and ``beta``, ``max_abs``,
            ``gain_eps`` across the dtype's whole range (``False``: ``rho <= 0.995``, ``beta <= 4``,
            ``max_abs`` in ``[0.1, 10]``, ranges in which whole learning runs stay well conditioned).
        detach: fixed ``detach`` value (``None``: drawn).
        rates: also draw learnable rates (outside legacy mode) and their memory range.
        pairs: also draw oscillatory pairs (trace mode; layers of even width).
        units: the widest layer the config will serve: ``bound="ball"`` needs
            ``|init| sqrt(units) <= max_abs``.
    """
    mode = draw(st.sampled_from(modes))
    bound = draw(st.sampled_from(bounds))
    top = largest_rate(dtype)
    rho_s = st.floats(0.0, 0.995)
    if extreme:
        rho_s = st.one_of(rho_s, rho_s, st.floats(0.995, top), st.just(top), st.just(0.0))
    m = draw(_positive(dtype, (0.1, 10.0), extreme, top=torch.finfo(dtype).max / 4))  # check_dtype's headroom
    m_init = m / math.sqrt(units) if bound == "ball" else m
    frac = draw(st.floats(0.0 if mode == "gain" else -1.0, 1.0))
    gain_max = draw(st.floats(0.5, 8.0))
    learn_rate = rates and mode != "psann_legacy" and draw(st.booleans())
    memory = sorted(draw(st.lists(st.floats(1.01, 1e4), min_size=2, max_size=2))) if learn_rate else (2.0, 500.0)
    beta = draw(st.one_of(st.just(0.0), _positive(dtype, (0.0, 4.0), extreme)))
    eps = draw(_positive(dtype, (1e-3, 1.0), extreme))
    return StateConfig(
        mode=mode,
        rho=draw(rho_s),
        beta=beta,
        init=frac * m_init,
        max_abs=m,
        bound=bound,
        detach=draw(st.booleans()) if detach is None else detach,
        gain=draw(st.floats(-0.99, 0.99)) * gain_max,
        learnable_gain=draw(st.booleans()),
        gain_max=gain_max,
        gain_eps=min(eps, 1e3),
        learnable_rate=learn_rate,
        memory_min=memory[0],
        memory_max=memory[1],
        oscillatory=pairs and mode == "trace" and draw(st.booleans()),
    )


ADVERSARIAL_KINDS = ("normal", "huge", "alternating", "constant_run", "bursts", "near_overflow", "tiny")


def adversarial_stream(kind: str, steps: int, streams: int, features: int, *, dtype: torch.dtype = torch.float64,
                       seed: int = 0, max_input: float | None = None) -> torch.Tensor:
    """One deterministic ``[steps, streams, features]`` input stream of a named kind.

    ``normal``: standard normal. ``huge``: normal times ``max_input``. ``alternating``: ``+-max_input``
    flipping sign every step. ``constant_run``: one random row held for the whole stream.
    ``bursts``: normal, with a ``max_input`` spike every 7 steps. ``near_overflow``: ``+-max_input``
    per entry at random signs. ``tiny``: normal times the dtype's smallest normal number.
    ``max_input`` defaults to ``1e300`` (float64) or ``3e38`` (float32): near the dtype's overflow.
    """
    info = torch.finfo(dtype)
    big = float(min(max_input if max_input is not None else (1e300 if info.bits == 64 else 3e38), info.max))
    rng = np.random.default_rng(seed)
    shape = (steps, streams, features)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "huge":
        x = np.clip(rng.standard_normal(shape) * big, -big, big)
    elif kind == "alternating":
        x = np.where(np.arange(steps)[:, None, None] % 2 == 0, big, -big) * np.ones(shape)
    elif kind == "constant_run":
        x = np.broadcast_to(rng.standard_normal((1, streams, features)), shape).copy()
    elif kind == "bursts":
        x = rng.standard_normal(shape)
        x[::7] = big * np.sign(rng.standard_normal(x[::7].shape))
    elif kind == "near_overflow":
        x = big * np.sign(rng.standard_normal(shape))
    elif kind == "tiny":
        x = rng.standard_normal(shape) * info.tiny
    else:
        raise ValueError(f"unknown adversarial stream kind {kind!r}; one of {', '.join(ADVERSARIAL_KINDS)}.")
    return torch.as_tensor(x, dtype=dtype)


@st.composite
def adversarial_streams(draw, steps: int, streams: int, features: int, *, dtype: torch.dtype = torch.float64,
                        max_input: float | None = None) -> torch.Tensor:
    """A drawn :func:`adversarial_stream`: its kind and seed are drawn."""
    kind = draw(st.sampled_from(ADVERSARIAL_KINDS))
    return adversarial_stream(kind, steps, streams, features, dtype=dtype, seed=draw(st.integers(0, 2**32 - 1)),
                              max_input=max_input)
