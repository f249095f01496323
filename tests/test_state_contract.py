"""The contract in every dtype and path (issue: stability testing as a product). Each test names the
failure it holds fixed: float32 breaking validated configurations, legacy NaN, unchecked restores,
and the network-level contraction statement."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import CheckpointError, ConfigError, KeyedLearner, Learner, StateConfig, StatefulNet
from psann_stream import _fastpath as fp
from psann_stream._packing import flat_params, layout
from psann_stream.state import apply_bound, check_dtype, update_state
from psann_stream.testing.strategies import adversarial_streams, dtypes, state_configs


# ---------------------------------------------------------------------- float32
@pytest.mark.parametrize("field,kwargs,a", [
    ("rho", dict(rho=0.99999999, init=1.0), 0.0),  # rounds to 1.0: an integrator (C3, C5 failed)
    ("rho", dict(rho=1 - 2.0**-24, init=1.0), 0.0),  # below 1, but rho * s rounds back to s
    ("beta", dict(beta=1e40), 0.0),  # (1 - rho) beta = inf; inf * 0 = NaN
    ("max_abs", dict(max_abs=1e-300, bound="tanh", beta=0.0), 0.0),  # rounds to 0: 0 / 0
    ("max_abs", dict(max_abs=1e300), 0.5),  # clamp(+-1e300) raised a RuntimeError
    ("max_abs", dict(max_abs=3.4e38), 0.5),  # no headroom: a rotated pair overflowed (thorough profile)
])
def test_float32_refuses_what_it_cannot_carry_and_float64_runs_it(field, kwargs, a):
    cfg = StateConfig(**kwargs)
    s32 = torch.full((1, 2), cfg.init, dtype=torch.float32)
    with pytest.raises(ConfigError, match=rf"StateConfig\.{field} = .*float32.*(float64|model\.double)"):
        update_state(s32, torch.full_like(s32, a), cfg)
    s = torch.full((1, 2), cfg.init, dtype=torch.float64)
    for _ in range(3):
        s = update_state(s, torch.full_like(s, a), cfg)
    assert torch.isfinite(s).all() and (s.abs() <= cfg.max_abs).all()
    if a == 0.0 and cfg.init:
        assert (s.abs() < abs(cfg.init)).all()  # zero input decays (C5), it does not integrate


def test_a_float32_model_names_the_setting_at_its_first_step_and_runs_in_float64():
    net = StatefulNet(3, hidden=(4,), state=StateConfig(max_abs=1e300, init=1e300), seed=0)
    with pytest.raises(ConfigError, match="max_abs = 1e\\+300 overflows torch.float32"):
        net.initial_state(1)
    net = net.double()  # the held state, stored as inf in float32, is rebuilt from init
    assert float(net.held_state()[0].max()) == 1e300
    y, _ = net(torch.ones(1, 3, dtype=torch.float64), net.initial_state(1))
    assert torch.isfinite(y).all()


@given(dtypes().flatmap(lambda d: st.tuples(st.just(d), state_configs(dtype=d), adversarial_streams(12, 2, 4, dtype=d))))
def test_every_valid_configuration_keeps_a_finite_bounded_state_in_its_dtype(args):
    """C1 in float32 and float64 across the whole validated range (rho to 1 - eps, beta and max_abs
    to the dtype's largest value), driven by adversarial activations up to near overflow."""
    dtype, cfg, a = args
    s = apply_bound(torch.full((2, 4), cfg.init, dtype=torch.float64).to(dtype), cfg)
    for t in range(a.shape[0]):
        s = update_state(s, a[t], cfg)
        assert torch.isfinite(s).all()
        assert (s.abs() <= torch.tensor(cfg.max_abs, dtype=dtype)).all()


# ---------------------------------------------------------------------- legacy with beta = 0
def test_legacy_with_zero_beta_and_a_huge_amplitude_keeps_a_finite_state_in_torch_and_the_kernel():
    cfg = StateConfig(mode="psann_legacy", beta=0.0, init=5.0, max_abs=5.0, bound="tanh", learnable_gain=False)
    s = update_state(torch.full((1, 2), 5.0, dtype=torch.float64), torch.full((1, 2), 1e308, dtype=torch.float64), cfg)
    assert torch.isfinite(s).all()
    net = StatefulNet(2, hidden=(3,), state=cfg, seed=0).double()
    with torch.no_grad():
        net.layers[0].activation.raw_amplitude.fill_(1e308)  # softplus(1e308) = 1e308: |a * s| overflows
        net.layers[0].linear.weight.fill_(0.0)
        net.layers[0].linear.bias.fill_(1.0)
    x = torch.ones(1, 2, dtype=torch.float64)
    with torch.no_grad():
        _, (s_torch,) = net(x, net.initial_state(1))
    L = layout(net)
    work = np.empty((1, fp.W_ROWS, 3))
    fp._forward(flat_params(net), L.lay, L.head, L.fixed_gain, L.cfg, L.mode, L.bound,
                np.full(3, 5.0), x[0].numpy(), work, np.empty(1))
    assert torch.isfinite(s_torch).all() and np.isfinite(work[0, fp.R_SN, :3]).all()
    np.testing.assert_allclose(work[0, fp.R_SN, :3], s_torch[0].numpy(), rtol=1e-12)


# ---------------------------------------------------------------------- restores are checked
def _learned(cls, cfg, **kw):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    lrn = cls(StatefulNet(3, hidden=(4,), state=cfg, seed=0), **kw)
    if cls is KeyedLearner:
        lrn.learn_batch(np.arange(30) % 3, X, Y)
    else:
        lrn.learn_batch(X, Y)
    return lrn


def test_a_learner_refuses_a_state_saved_under_another_configuration():
    sd = _learned(Learner, StateConfig(max_abs=6.0)).state_dict()
    with pytest.raises(CheckpointError, match=r"max_abs 6\.0 \(saved\) vs 3\.0 \(here\)"):
        _learned(Learner, StateConfig(max_abs=3.0)).load_state_dict(sd)


def test_a_learner_refuses_a_saved_state_beyond_its_bound():
    sd = _learned(Learner, StateConfig()).state_dict()
    sd["model"]["layers.0.state"][0, 0] = 5.9
    with pytest.raises(CheckpointError, match=r"\|s\| = 5\.9 .*max_abs = 3\.0"):
        _learned(Learner, StateConfig()).load_state_dict(sd)


def test_a_keyed_learner_refuses_other_configurations_and_states_beyond_the_bound():
    sd = _learned(KeyedLearner, StateConfig(max_abs=6.0), per_key_weights=True).state_dict()
    target = _learned(KeyedLearner, StateConfig(), per_key_weights=True)
    with pytest.raises(CheckpointError, match=r"max_abs 6\.0 \(saved\) vs 3\.0 \(here\)"):
        target.load_state_dict(sd)
    good = target.state_dict()
    good["rows"]["state"][1, 2] = -5.9
    with pytest.raises(CheckpointError, match=r"\|s\| = 5\.9"):
        target.load_state_dict(good)
    target.load_state_dict(target.state_dict())  # its own state loads


def test_a_model_refuses_a_held_state_beyond_its_bound():
    net = StatefulNet(3, hidden=(4,), seed=0)
    sd = net.state_dict()
    sd["layers.0.state"] = torch.full((2, 4), 5.9)
    with pytest.raises(CheckpointError, match=r"layers\.0\.state: .*\|s\| = 5\.9"):
        net.load_state_dict(sd)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    net.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))


# ---------------------------------------------------------------------- contraction of a network
def _two_trajectories(net, steps, seed):
    cfg = net.state_config
    g = torch.Generator().manual_seed(seed)
    lo = 0.0 if cfg.mode == "gain" else -1.0
    starts = []
    for _ in range(2):
        starts.append(tuple(apply_bound((lo + (1 - lo) * torch.rand(s.shape, generator=g, dtype=torch.float64))
                                        * cfg.max_abs / (s.shape[-1] ** 0.5 if cfg.bound == "ball" else 1.0), cfg)
                            for s in net.initial_state(1)))
    xs = torch.randn(steps, 1, net.in_features, generator=g, dtype=torch.float64)
    a, b = starts
    gaps = [float(torch.cat([p - q for p, q in zip(a, b)], -1).norm())]
    with torch.no_grad():
        for x in xs:
            _, a = net(x, a)
            _, b = net(x, b)
            gaps.append(float(torch.cat([p - q for p, q in zip(a, b)], -1).norm()))
    return np.array(gaps)


@given(state_configs(modes=("trace", "gain"), extreme=False, rates=True, pairs=True, units=6),
       st.sampled_from([(6,), (6, 6), (4, 6, 4)]), st.integers(0, 10_000))
def test_the_gap_between_two_network_trajectories_stays_within_gap_bound(cfg, hidden, seed):
    net = StatefulNet(3, hidden=hidden, state=cfg, seed=seed).double()
    gaps = _two_trajectories(net, 40, seed)
    bound = net.gap_bound(40) * gaps[0]
    assert (gaps <= bound * (1 + 1e-9) + 1e-12).all(), (gaps / np.maximum(bound, 1e-300)).max()


def test_a_network_of_several_layers_does_not_contract_at_the_layer_rate():
    """Why gap_bound is not rho^t: measured, a 3-layer net's gap exceeds rho^t times its start
    (the claim docs/stability.md made before), and gap_bound still holds it."""
    worst = 0.0
    for seed in range(10):
        net = StatefulNet(3, hidden=(6, 6, 6), state=StateConfig(rho=0.9), seed=seed).double()
        gaps = _two_trajectories(net, 60, seed)
        worst = max(worst, float((gaps / (0.9 ** np.arange(61) * gaps[0])).max()))
        assert (gaps <= net.gap_bound(60) * gaps[0] * (1 + 1e-9)).all()
    assert worst > 1.5


def test_state_bounds_say_per_bound_whether_the_bound_acts():
    """clip: inactive when beta G <= M; ball: only when sqrt(units) beta G <= M (not with 32 units
    and the defaults); tanh: never (its fixed point lies below beta a, ever more so as rho -> 1)."""
    assert StatefulNet(3, hidden=(32,), seed=0).state_bounds()[0].bound_inactive
    assert not StatefulNet(3, hidden=(32,), state=StateConfig(bound="ball"), seed=0).state_bounds()[0].bound_inactive
    assert StatefulNet(3, hidden=(4,), state=StateConfig(bound="ball", max_abs=3.0), seed=0).state_bounds()[0].bound_inactive
    assert not StatefulNet(3, hidden=(4,), state=StateConfig(bound="tanh"), seed=0).state_bounds()[0].bound_inactive
    # the ball does act on the defaults with 32 units: a constant drive ends on the sphere, not at beta a
    cfg = StateConfig(bound="ball")
    a = torch.full((1, 32), 0.9, dtype=torch.float64)
    s = torch.zeros_like(a)
    for _ in range(200):
        s = update_state(s, a, cfg)
    assert float(s.norm()) == pytest.approx(cfg.max_abs) and float(s.max()) < 0.9


@given(st.floats(0.5, 0.999), st.floats(0.1, 2.0))
def test_the_tanh_fixed_point_lies_below_beta_a_and_further_as_rho_grows(rho, a):
    from psann_stream.state import fixed_point
    near = float(fixed_point(StateConfig(rho=rho, bound="tanh"), a))
    further = float(fixed_point(StateConfig(rho=1 - (1 - rho) / 2, bound="tanh"), a))
    assert further < near < a


def test_check_dtype_is_what_the_update_calls():
    check_dtype(StateConfig(rho=1 - 2.0**-23), torch.float32)
    with pytest.raises(ConfigError):
        check_dtype(StateConfig(rho=1 - 2.0**-24), torch.float32)
