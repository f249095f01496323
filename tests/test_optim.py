"""Streaming optimisers: ObGD's l1 bound (C10), intentional SGD's promise, Adam-Rel's reset,
state_dict round trips, and their configuration errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import ConfigError
from psann_stream.optim import IntentionalSGD, ObGD, StreamingAdam, make_optimizer

from strategies import f32_arrays, finite_f32


def _params(seed: int, shapes=((3, 4), (4,), (1,))) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]


@st.composite
def gradients(draw, shapes=((3, 4), (4,), (1,))):
    return [torch.from_numpy(draw(f32_arrays(s, finite_f32(-1e6, 1e6)))).double() for s in shapes]


@given(
    st.integers(0, 1000),
    st.lists(st.tuples(gradients(), st.floats(-1e6, 1e6)), min_size=1, max_size=8),
    st.floats(1e-3, 10.0),
    st.floats(0.1, 10.0),
    st.floats(0.0, 0.99),
    st.booleans(),
)
def test_obgd_moves_parameters_by_at_most_one_over_kappa_in_l1(seed, steps, lr, kappa, trace_decay, value_form):
    """C10: ||d theta||_1 <= 1/kappa on every step, for any gradient, error, lr and trace."""
    params = _params(seed)
    opt = ObGD(params, lr=lr, kappa=kappa, trace_decay=trace_decay)
    for grads, delta in steps:
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step(delta=delta if value_form else None)
        moved = sum(float((p.detach() - b).abs().sum()) for p, b in zip(params, before))
        assert moved <= (1 / kappa) * (1 + 1e-9)
        scale = sum(float(b.abs().sum()) for b in before)  # rounding of theta + d_theta
        assert moved == pytest.approx(opt.last_update_l1, rel=1e-9, abs=1e-15 * scale)


@given(st.integers(0, 1000), gradients())
def test_obgd_zero_error_moves_nothing_and_reset_zeroes_traces(seed, grads):
    params = _params(seed)
    opt = ObGD(params, trace_decay=0.9)
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step(delta=0.0)
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    opt.reset()
    assert all(bool((opt.state[p]["trace"] == 0).all()) for p in params)


def test_obgd_matches_the_paper_equations_on_a_worked_example():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = ObGD([w], lr=0.1, kappa=2.0)
    w.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
    opt.step(delta=0.3)
    # d_bar = 1, M = 0.1 * 2 * 1 * 0.75 = 0.15 <= 1, a_hat = 0.1: w += 0.1 * 0.3 * g
    torch.testing.assert_close(w.detach(), torch.tensor([1.015, -1.9925], dtype=torch.float64))
    assert opt.effective_step == pytest.approx(0.1 * (0.25 + 0.0625))


@given(st.integers(0, 1000), gradients(), st.floats(1e-6, 100).flatmap(lambda v: st.sampled_from([v, -v])), st.floats(0.01, 1.0))
def test_intentional_sgd_removes_eta_of_the_error_to_first_order_unless_capped(seed, grads, delta, eta):
    params = _params(seed)
    opt = IntentionalSGD(params, lr=eta, kappa=1e-9, eps=1e-12, error_clip=None)  # cap never binds
    for p, g in zip(params, grads):
        p.grad = g
    opt.step(delta=delta)
    g_sq = sum(float((g * g).sum()) for g in grads)
    if g_sq > 1e-6 and delta != 0:
        assert opt.effective_step == pytest.approx(eta * g_sq / (1e-12 + g_sq), rel=1e-9)
    capped = IntentionalSGD(_params(seed), lr=eta, kappa=2.0)
    for p, g in zip(capped.param_groups[0]["params"], grads):
        p.grad = g
    capped.step(delta=delta)
    assert capped.last_update_l1 <= 0.5 * (1 + 1e-9)


def test_intentional_sgd_needs_the_error():
    params = _params(0)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"needs the error: call step\(delta=y - y_hat\)"):
        IntentionalSGD(params).step()


def test_intentional_sgd_clips_outlier_errors_at_running_rms():
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = IntentionalSGD([w], lr=1.0, kappa=1e-9, eps=1e-12, error_clip=3.0)
    for _ in range(50):
        w.grad = torch.ones(1, dtype=torch.float64)
        opt.step(delta=1.0)
    before = float(w.detach())
    w.grad = torch.ones(1, dtype=torch.float64)
    opt.step(delta=1e6)
    assert float(w.detach()) - before == pytest.approx(3.0, rel=1e-6)


def test_streaming_adam_equals_torch_adam_in_loss_form():
    a, b = _params(1), _params(1)
    mine, ref = StreamingAdam(a, lr=1e-2), torch.optim.Adam(b, lr=1e-2)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in a]
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        mine.step()
        ref.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_streaming_adam_value_form_is_the_loss_form_of_half_squared_error():
    a, b = _params(3), _params(3)
    va, lb = StreamingAdam(a, lr=1e-2), StreamingAdam(b, lr=1e-2)
    g = torch.Generator().manual_seed(4)
    for _ in range(10):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in a]
        delta = float(torch.randn((), generator=g))
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), -delta * gr
        va.step(delta=delta)
        lb.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_streaming_adam_reset_restarts_bias_correction_and_keeps_moments():
    params = _params(0)
    opt = StreamingAdam(params)
    for p in params:
        p.grad = torch.ones_like(p)
    for _ in range(5):
        opt.step()
    m = [opt.state[p]["m"].clone() for p in params]
    opt.reset()
    assert opt.param_groups[0]["t"] == 0
    assert all(torch.equal(opt.state[p]["m"], mm) for p, mm in zip(params, m))
    opt.reset(moments=True)
    assert all(bool((opt.state[p]["m"] == 0).all()) for p in params)


@pytest.mark.parametrize("name", ["obgd", "intentional", "adam"])
def test_state_dict_round_trip_gives_identical_future_steps(name):
    a = _params(5)
    opt = make_optimizer(name, a)
    g = torch.Generator().manual_seed(6)

    def feed(params, o, n):
        for _ in range(n):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            o.step(delta=0.7)

    feed(a, opt, 5)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    clone = make_optimizer(name, b)
    clone.load_state_dict(copy.deepcopy(opt.state_dict()))
    state = g.get_state()
    feed(a, opt, 5)
    g.set_state(state)
    feed(b, clone, 5)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda p: ObGD(p, lr=0.0), "ObGD.lr = 0.0 is out of range"),
        (lambda p: ObGD(p, kappa=-1.0), "ObGD.kappa"),
        (lambda p: ObGD(p, trace_decay=1.0), "ObGD.trace_decay = 1.0"),
        (lambda p: IntentionalSGD(p, lr=2.0), "IntentionalSGD.lr = 2.0"),
        (lambda p: StreamingAdam(p, betas=(1.0, 0.9)), "StreamingAdam.beta1"),
        (lambda p: make_optimizer("sgd", p), "'sgd' is not one of"),
    ],
)
def test_optimizer_config_errors_name_the_value_and_range(build, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        build(_params(0))


def test_non_finite_error_is_rejected_before_any_change():
    params = _params(0)
    opt = ObGD(params)
    for p in params:
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="delta = nan is not finite"):
        opt.step(delta=float("nan"))
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
    assert np.isnan(opt.effective_step)
