"""Properties of the state dynamical system (docs/stability.md): C1-C5, C13 and the theory helpers.

Each test is named after the law it checks. Activations are drawn directly, bounded by a drawn
``G``, so the bounds of the theory apply; the layer-level tests feed raw inputs through real layers.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from psann_stream import StateConfig, StatefulNet, StatefulSineLayer
from psann_stream.state import apply_bound, contraction_constant, envelope, fixed_point, update_state

from reference import bound as ref_bound
from strategies import CONTRACTIVE_MODES, f32_arrays, finite_f32, state_configs

F32_TOL = dict(rtol=1.3e-6, atol=1e-5)  # torch.testing's float32 defaults


def _l2(x: torch.Tensor) -> torch.Tensor:
    """Per-row l2 norm scaled by the row's peak: states near 1e308 must not square to inf."""
    peak = x.abs().amax(dim=-1, keepdim=True)
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return (safe * torch.linalg.vector_norm(x / safe, dim=-1, keepdim=True)).squeeze(-1)


def _drive_sequence(seed: int, steps: int, shape: tuple[int, int], G: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((steps, *shape), generator=g, dtype=torch.float64) * 2 - 1) * G


@given(state_configs(extreme=True, dtype=torch.float32), f32_arrays((3, 4)), f32_arrays((3, 4)))
def test_bound_maps_any_finite_value_into_max_abs(cfg, s, a):
    """C1 for one step: from any state in the box and any finite activation (+-1e30 included)."""
    s_prev = apply_bound(torch.from_numpy(s), cfg)
    s_new = update_state(s_prev, torch.from_numpy(a), cfg)
    assert torch.isfinite(s_new).all()
    assert (s_new.abs() <= cfg.max_abs).all()


@given(state_configs(extreme=True), st.integers(0, 2**32 - 1), st.floats(0.01, 5.0))
def test_state_stays_within_envelope(cfg, seed, G):
    """C2: |s_t| <= min(M, rho^t |s_0| + (1 - rho^t) beta G) (legacy: min(M, L^t |s_0|))."""
    steps = 60
    a = _drive_sequence(seed, steps, (2, 5), G)
    s = torch.full((2, 5), cfg.init, dtype=torch.float64)
    for t in range(steps):
        s = update_state(s, a[t], cfg)
        u = envelope(cfg, abs(cfg.init), t + 1, G)
        with np.errstate(over="ignore"):  # u near 1e308: the slack may overflow to inf, which holds
            slack = u * (1 + 1e-12) + 1e-12
        assert (s.abs() <= slack).all(), (t, float(s.abs().max()), float(u))


@given(state_configs(modes=CONTRACTIVE_MODES, extreme=True), st.integers(0, 2**32 - 1), st.floats(0.01, 5.0))
def test_states_driven_by_the_same_inputs_contract_at_rate_L(cfg, seed, G):
    """C3: ||s_t - s'_t||_2 <= L^t ||s_0 - s'_0||_2 with L = rho (every bound is 1-Lipschitz)."""
    steps = 40
    a = _drive_sequence(seed, steps, (3, 4), G)
    g = torch.Generator().manual_seed(seed + 1)
    lo = 0.0 if cfg.mode == "gain" else -cfg.max_abs
    s = apply_bound(lo + torch.rand((3, 4), generator=g, dtype=torch.float64) * (cfg.max_abs - lo), cfg)
    s2 = apply_bound(lo + torch.rand((3, 4), generator=g, dtype=torch.float64) * (cfg.max_abs - lo), cfg)
    d0 = _l2(0.5 * s - 0.5 * s2)  # halves: states at +-1.8e308 differ by more than float64 holds
    L = contraction_constant(cfg, G)
    for t in range(steps):
        s, s2 = update_state(s, a[t], cfg), update_state(s2, a[t], cfg)
        d = _l2(0.5 * s - 0.5 * s2)
        # rho * s rounds per state: up to an ulp of max_abs per step apart from the exact rho^t d0
        assert (d <= L ** (t + 1) * d0 * (1 + 1e-12) + 1e-12 + 2e-16 * (t + 1) * cfg.max_abs).all()


@given(
    state_configs(modes=CONTRACTIVE_MODES, extreme=True),
    st.lists(st.floats(-5, 5), min_size=4, max_size=4),
    st.floats(-1, 1),
)
def test_constant_input_reaches_fixed_point_at_rate_rho(cfg, a_vals, s0_frac):
    """C4: constant a => |s_t - s*| <= rho^t |s_0 - s*| (l2 per stream) with s* from fixed_point()."""
    a = torch.tensor([a_vals], dtype=torch.float64)
    # The ball projects the pre-bound vector; where beta |a| passes float64's largest value its entries
    # saturate there first and the direction is the saturated one (docs/stability.md section 5).
    assume(cfg.bound != "ball" or cfg.beta * max(abs(v) for v in a_vals) < 1e308)
    s_star = torch.from_numpy(fixed_point(cfg, a.numpy()))
    s0 = abs(s0_frac) if cfg.mode == "gain" else s0_frac
    s = apply_bound(torch.full_like(a, s0 * cfg.max_abs), cfg)
    m = cfg.max_abs  # distances in units of max_abs: states near 1e308 have an l2 norm beyond float64
    d0 = _l2(s / m - s_star / m)
    # float64 resolves s* (a bisection for tanh) to a few ulps of max_abs
    atol = 1e-9 / m + 1e-14 * (1.0 + float(s_star.abs().max()) / m)
    for t in range(80):
        s = update_state(s, a, cfg)
        assert _l2(s / m - s_star / m) <= cfg.rho ** (t + 1) * d0 * (1 + 1e-12) + atol
    # and s* really is fixed
    torch.testing.assert_close(update_state(s_star, a, cfg), s_star, rtol=1e-12, atol=1e-12 + 1e-14 * cfg.max_abs)


@given(st.floats(0.0, 0.99), st.floats(0.1, 5.0), st.floats(-1, 1), st.sampled_from(["clip", "tanh", "ball"]))
def test_zero_input_decays_geometrically(rho, m, frac, bnd):
    """C5: trace mode, a = 0 => s_t = rho^t s_0 exactly for clip and ball (tanh shrinks it further)."""
    # the initial state must lie inside the bound: for the ball, |init| * sqrt(3) <= M
    cfg = StateConfig(rho=rho, max_abs=m, init=frac * m / (3**0.5 if bnd == "ball" else 1.0), bound=bnd)
    s = torch.full((1, 3), cfg.init, dtype=torch.float64)
    zero = torch.zeros_like(s)
    for t in range(1, 30):
        s = update_state(s, zero, cfg)
        expected = torch.full_like(s, rho**t * cfg.init)
        if bnd == "tanh":
            assert (s.abs() <= expected.abs() + 1e-15).all()
        else:
            torch.testing.assert_close(s, expected, rtol=1e-12, atol=1e-300)


@given(state_configs(extreme=True), f32_arrays((4, 6)))
def test_bound_matches_float64_reference(cfg, x):
    got = apply_bound(torch.from_numpy(x).double(), cfg).numpy()
    np.testing.assert_allclose(got, ref_bound(x.astype(np.float64), cfg), rtol=1e-12, atol=0)


# ------------------------------------------------------------------ layers: C1 and C13 for any raw parameter
RAW = finite_f32()


@st.composite
def layers_with_arbitrary_raw_parameters(draw, cfg_strategy=state_configs(extreme=True, dtype=torch.float32)):
    cfg = draw(cfg_strategy)
    layer = StatefulSineLayer(3, 4, state=cfg, generator=torch.Generator().manual_seed(draw(st.integers(0, 999))))
    with torch.no_grad():
        for p in layer.parameters():
            if draw(st.booleans()):
                p.copy_(torch.from_numpy(draw(f32_arrays(tuple(p.shape), RAW))))
    return layer


@given(layers_with_arbitrary_raw_parameters(), f32_arrays((12, 2, 3)))
def test_layer_state_is_finite_and_bounded_for_any_raw_parameter_and_input(layer, xs):
    """C1 + C13: any finite raw parameter value, any finite input (+-1e30 included)."""
    cfg = layer.config
    s = layer.initial_state(2)
    for x in torch.from_numpy(xs):
        _, s = layer(x, s)
        assert torch.isfinite(s).all()
        assert (s.abs() <= cfg.max_abs).all()
        if cfg.bound == "ball":
            assert (_l2(s.double()) <= cfg.max_abs * (1 + 1e-6)).all()


@given(state_configs(modes=CONTRACTIVE_MODES), finite_f32(), f32_arrays((8, 1, 3), finite_f32(-10, 10)))
def test_learnable_gain_keeps_bounds_and_finite_gradients_for_any_raw_value(cfg, theta, xs):
    """C13: gamma = gain_max * tanh(theta) for every theta: |gamma| <= gain_max, C1 holds,
    and the gradient with respect to theta is finite."""
    cfg = StateConfig.from_mapping({**cfg.to_dict(), "learnable_gain": True, "gain": 0.0})
    layer = StatefulSineLayer(3, 4, state=cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.raw_gain.fill_(theta)
    assert (layer.gain.abs() <= cfg.gain_max).all()
    s = layer.initial_state(1)
    total = torch.zeros(())
    for x in torch.from_numpy(xs):
        y, s = layer(x, s)
        assert (s.abs() <= cfg.max_abs).all()
        total = total + y.sum()
    (grad,) = torch.autograd.grad(total, layer.raw_gain)
    assert torch.isfinite(grad).all()


@given(st.integers(0, 2**31 - 1), f32_arrays((20, 3)))
def test_default_config_contracts_for_any_raw_parameters(seed, raw):
    """The default configuration, whatever the parameters: every state within max_abs; two
    trajectories of the first layer (same inputs) approach at rate rho; and the whole network's gap
    stays within ``gap_bound`` (finite or not at these parameters)."""
    net = StatefulNet(3, hidden=(5, 4), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * float(np.abs(raw).max() or 1.0))
    rho, m = net.state_config.rho, net.state_config.max_abs
    a = net.initial_state(1)
    b = tuple(torch.rand(s.shape, generator=g) * 2 * m - m for s in a)
    d0 = [float((p - q).double().norm()) for p, q in zip(a, b)]
    whole0 = float(np.hypot(*d0))
    bound = net.gap_bound(len(raw))
    with torch.no_grad():
        for t, x in enumerate(torch.from_numpy(raw), start=1):
            _, a = net(x[None], a)
            _, b = net(x[None], b)
            assert all(torch.isfinite(s).all() and (s.abs() <= m).all() for s in a + b)
            d = [float((p - q).double().norm()) for p, q in zip(a, b)]
            assert d[0] <= rho**t * d0[0] * (1 + 1e-5) + 1e-6
            assert float(np.hypot(*d)) <= bound[t] * whole0 * (1 + 1e-5) + 1e-6


# ------------------------------------------------------------------ the legacy update, as analysed
@given(st.floats(0.5, 0.99), st.floats(0.1, 4.0), st.floats(0.0, 1.0), st.floats(0.05, 1.0))
def test_legacy_update_ends_where_the_growth_factor_says(rho, beta, abs_a, init):
    """psann's s' = M tanh(g s / M), g = rho + (1 - rho) beta |a|: to 0 if g < 1, saturates if g > 1."""
    cfg = StateConfig(mode="psann_legacy", rho=rho, beta=beta, init=init, max_abs=5.0, bound="tanh", learnable_gain=False)
    g = rho + (1 - rho) * beta * abs_a
    s = torch.tensor([[init]], dtype=torch.float64)
    a = torch.tensor([[abs_a]], dtype=torch.float64)
    for _ in range(3000):
        s = update_state(s, a, cfg)
    end = float(fixed_point(cfg, abs_a, init))
    if abs(g - 1) > 0.05:  # away from neutrality the trajectory has converged after 3000 steps
        assert abs(float(s) - end) <= 1e-6 * max(1.0, end)
        assert (end == 0.0) == (g < 1)


@given(state_configs(), f32_arrays((3, 4)), st.sampled_from([0.0, 1e-38, 1e-45, 1.0]))
def test_bound_gradient_is_finite_everywhere(cfg, x, zero_row_value):
    """Every bound has a finite gradient at every input, including an all-zero or subnormal
    state vector (where a naive ball projection differentiates the norm at 0)."""
    x = torch.from_numpy(x).clone()
    x[0] = zero_row_value
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(apply_bound(x, cfg).sum(), x)
    assert torch.isfinite(g).all()
