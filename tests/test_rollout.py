"""The one rollout backend: reset (C6), detach (C7), chunking (C9), non-finite events (C12),
prequential order, teacher forcing vs free running, and its errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import (
    ConfigError,
    NonFiniteInputError,
    StateConfig,
    StatefulNet,
    StateShapeError,
    predict_sequence,
    predict_sequence_online,
    rollout,
)

from strategies import CONTRACTIVE_MODES, state_configs


def _net(cfg: StateConfig = StateConfig(), seed: int = 0, F: int = 3, O: int = 1, hidden=(6, 5)) -> StatefulNet:
    return StatefulNet(F, O, hidden=hidden, state=cfg, seed=seed)


def _seq(seed: int, T: int, S: int, F: int = 3) -> torch.Tensor:
    return torch.randn((T, S, F), generator=torch.Generator().manual_seed(seed))


def _fresh_copy(model: StatefulNet) -> StatefulNet:
    """A freshly built model with the same weights (and a state at init)."""
    fresh = StatefulNet(model.in_features, model.out_features, model.hidden, model.state_config)
    params = {k: v for k, v in model.state_dict().items() if not k.endswith(".state")}
    fresh.load_state_dict(params, strict=False)
    return fresh


# ------------------------------------------------------------------ C6 reset
@given(state_configs(), st.integers(0, 10_000), st.integers(1, 4))
def test_after_reset_outputs_equal_a_fresh_model_with_the_same_weights(cfg, seed, S):
    net = _net(cfg, seed)
    x = _seq(seed, 15, S)
    with torch.no_grad():
        predict_sequence(net, _seq(seed + 1, 7, S))  # advance the state somewhere else
        params_before = [p.clone() for p in net.parameters()]
        net.reset_state()
        once = [s.clone() for s in net.held_state()]
        net.reset_state()
        assert all(torch.equal(a, b) for a, b in zip(once, net.held_state()))  # reset twice == once
        assert all(torch.equal(a, b) for a, b in zip(params_before, net.parameters()))  # weights untouched
        assert all(bool((s == cfg.init).all()) for s in net.held_state())  # honours init
        got = predict_sequence(net, x, reset=False)
        want = predict_sequence(_fresh_copy(net), x, reset=True)
    assert torch.equal(got, want)


def test_reset_of_selected_streams_leaves_the_others_alone():
    net = _net(StateConfig(init=0.25))
    with torch.no_grad():
        predict_sequence(net, _seq(0, 10, 4))
    before = [s.clone() for s in net.held_state()]
    net.reset_state([1, 3])
    for b, s in zip(before, net.held_state()):
        assert torch.equal(s[[0, 2]], b[[0, 2]])
        assert bool((s[[1, 3]] == 0.25).all())
    with pytest.raises(StateShapeError, match="out of range for 4 held stream"):
        net.reset_state([4])


# ------------------------------------------------------------------ C7 detach
def _graph_size(t: torch.Tensor) -> int:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        todo.extend(nxt for nxt, _ in fn.next_functions)
    return len(seen)


@given(state_configs(detach=True), st.integers(0, 1000))
def test_detached_state_passes_no_gradient_to_earlier_steps(cfg, seed):
    net = _net(cfg, seed)
    x = _seq(seed, 6, 2).requires_grad_(True)
    y = predict_sequence(net, x)
    (g,) = torch.autograd.grad(y[-1].sum(), x)
    assert bool((g[:-1] == 0).all())
    assert all(s.grad_fn is None for s in net.held_state())


def test_detached_graph_size_is_flat_in_sequence_length_and_grows_without_detach():
    """The graph behind the next step's output, after T steps: constant in T with detach."""
    sizes = {}
    for detach in (True, False):
        net = _net(StateConfig(detach=detach))
        sizes[detach] = []
        for T in (5, 50):
            predict_sequence(net, _seq(0, T, 1))
            sizes[detach].append(_graph_size(predict_sequence(net, _seq(1, 1, 1), reset=False)))
    assert sizes[True][0] == sizes[True][1]
    assert sizes[False][1] > sizes[False][0] + 45  # at least one node per extra step


@given(st.floats(0.0, 0.95), st.integers(0, 1000))
def test_gradient_through_time_decays_like_L_to_the_k(rho, seed):
    """C7 without detach, one trace layer: ||dy_T/dx_{T-k}|| <= c rho^k with c from the parameters:
    |head| * max|gamma| * (1 - rho) * beta * max(A (f + d)) * ||W||_2."""
    cfg = StateConfig(rho=rho, detach=False)
    net = _net(cfg, seed, hidden=(6,))
    T = 12
    x = _seq(seed, T, 1).requires_grad_(True)
    y = predict_sequence(net, x)
    (g,) = torch.autograd.grad(y[-1].sum(), x)
    layer = net.layers[0]
    act = layer.activation
    with torch.no_grad():
        c = (
            float(torch.linalg.vector_norm(net.head.weight))
            * float(layer.gain.abs().max())
            * (1 - rho)
            * cfg.beta
            * float((act.amplitude * (act.frequency + act.decay)).max())
            * float(torch.linalg.matrix_norm(layer.linear.weight, ord=2))
        )
    for k in range(1, T):
        assert float(torch.linalg.vector_norm(g[T - 1 - k])) <= c * rho**k * (1 + 1e-5) + 1e-7


# ------------------------------------------------------------------ C9 chunking and batching
@given(state_configs(), st.integers(0, 10_000), st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_one_call_equals_step_by_step_equals_chunks(cfg, seed, chunks):
    T = sum(chunks)
    x = _seq(seed, T, 2)
    with torch.no_grad():
        net = _net(cfg, seed)
        whole = predict_sequence(net, x)
        end_state = [s.clone() for s in net.held_state()]
        net.reset_state(n_streams=2)
        steps = torch.cat([predict_sequence(net, x[t : t + 1], reset=False) for t in range(T)])
        net.reset_state(n_streams=2)
        pieces, t = [], 0
        for n in chunks:
            pieces.append(predict_sequence(net, x[t : t + n], reset=False))
            t += n
    assert torch.equal(whole, steps)
    assert torch.equal(whole, torch.cat(pieces))
    assert all(torch.equal(a, b) for a, b in zip(end_state, net.held_state()))


@given(state_configs(modes=CONTRACTIVE_MODES), st.integers(0, 10_000))
def test_streams_batched_equal_streams_run_separately(cfg, seed):
    x = _seq(seed, 10, 3)
    net = _net(cfg, seed)
    with torch.no_grad():
        batched = predict_sequence(net, x)
        alone = torch.stack([predict_sequence(net, x[:, i]) for i in range(3)], dim=1)
    # Float32 defaults of torch.testing, scaled by the largest gain a layer can apply to rounding
    # differences of its matmul (gain mode divides by gain_eps).
    amp = (cfg.gain_max if cfg.learnable_gain else abs(cfg.gain)) / cfg.gain_eps if cfg.mode == "gain" else 1.0
    scale = max(1.0, amp) ** len(net.layers)
    torch.testing.assert_close(batched, alone, rtol=1.3e-6 * scale, atol=1e-5 * scale)


@given(st.integers(0, 1000), st.lists(st.integers(1, 5), min_size=1, max_size=4))
def test_online_learning_in_chunks_equals_one_call(seed, chunks):
    T = sum(chunks)
    x, y = _seq(seed, T, 2), _seq(seed + 1, T, 2, F=1)
    a, b = _net(seed=seed), _net(seed=seed)
    oa, ob = torch.optim.Adam(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), 1e-2)
    whole = predict_sequence_online(a, x, y, optimizer=oa)
    pieces, t = [], 0
    for i, n in enumerate(chunks):
        pieces.append(predict_sequence_online(b, x[t : t + n], y[t : t + n], optimizer=ob, reset=(i == 0)))
        t += n
    assert torch.equal(whole, torch.cat(pieces))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------ prequential order
def test_online_prediction_is_made_before_learning_from_its_target():
    net = _net(seed=3)
    reference = copy.deepcopy(net)
    x, y = _seq(3, 8, 2), _seq(4, 8, 2, F=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    preds = predict_sequence_online(net, x, y, optimizer=opt)
    state = reference.initial_state(2)
    for t in range(8):
        p, state = reference(x[t], state)
        assert torch.equal(preds[t], p.detach())
        ref_opt.zero_grad()
        torch.nn.functional.mse_loss(p, y[t]).backward()
        ref_opt.step()
        state = tuple(s.detach() for s in state)
    assert not torch.equal(preds[0], preds[0] * 0)  # learning changed the weights between steps
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), reference.parameters()))


def test_online_learning_without_detach_truncates_at_each_update():
    net = _net(StateConfig(detach=False))
    predict_sequence_online(net, _seq(0, 5, 1), _seq(1, 5, 1, F=1), optimizer=torch.optim.SGD(net.parameters(), 0.01))
    assert all(s.grad_fn is None for s in net.held_state())


# ------------------------------------------------------------------ teacher forcing vs free running
@given(st.integers(0, 1000), st.integers(1, 6))
def test_free_running_feeds_the_previous_prediction_after_teacher_steps(seed, teacher):
    net = _net(seed=seed, F=2)
    x = _seq(seed, 10, 1, F=2)
    with torch.no_grad():
        got = predict_sequence(net, x, feedback=[0], teacher_steps=teacher)
        state, prev, want = net.initial_state(1), None, []
        for t in range(10):
            xt = x[t].clone()
            if t >= teacher:
                xt[:, 0] = prev[:, 0]
            prev, state = net(xt, state)
            want.append(prev)
        via_fn = predict_sequence(net, x, feedback=lambda xt, yp: torch.cat([yp, xt[:, 1:]], dim=1), teacher_steps=teacher)
    assert torch.equal(got, torch.stack(want))
    assert torch.equal(got, via_fn)


# ------------------------------------------------------------------ C12 non-finite events
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_input_raises_naming_step_stream_and_column_before_any_change(bad):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x, y = _seq(0, 6, 2), _seq(1, 6, 2, F=1)
    x[4, 1, 2] = bad
    params = [p.clone() for p in net.parameters()]
    with pytest.raises(NonFiniteInputError, match=r"x \(input\) at step 4, stream 1, column 2 is .*on_nonfinite='skip'"):
        predict_sequence_online(net, x, y, optimizer=opt)
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters()))
    assert opt.state == {} or all(len(v) == 0 for v in opt.state.values())


def test_nonfinite_target_raises_naming_it():
    net = _net()
    y = _seq(1, 6, 2, F=1)
    y[2, 0, 0] = float("nan")
    with pytest.raises(NonFiniteInputError, match=r"y \(target\) at step 2, stream 0, column 0 is nan"):
        rollout(net, _seq(0, 6, 2), y, optimizer=torch.optim.SGD(net.parameters(), 0.1))


@given(st.integers(0, 1000), st.sampled_from([float("nan"), float("inf")]), st.booleans())
def test_skipped_event_leaves_state_weights_and_optimizer_unchanged(seed, bad, in_target):
    """C12 with on_nonfinite='skip': an all-bad step changes nothing; the bad stream of a mixed step
    keeps its state while the others advance."""
    net = _net(seed=seed)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x, y = _seq(seed, 5, 2), _seq(seed + 1, 5, 2, F=1)
    predict_sequence_online(net, x[:2], y[:2], optimizer=opt)
    snap = copy.deepcopy((net.state_dict(), opt.state_dict()))
    xb, yb = x[2:4].clone(), y[2:4].clone()
    (yb if in_target else xb)[0, :, 0] = bad  # step 0: both streams bad
    (yb if in_target else xb)[1, 1, 0] = bad  # step 1: stream 1 bad
    held0 = [s.clone() for s in net.held_state()]
    r = rollout(net, xb[:1], yb[:1], optimizer=opt, reset=False, on_nonfinite="skip")
    assert bool(r.skipped.all()) and torch.isnan(r.predictions).all() and torch.isnan(r.losses).all()
    sd, osd = net.state_dict(), opt.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in snap[0].items())
    assert osd["state"][0]["step"] == snap[1]["state"][0]["step"]
    assert all(torch.equal(a, b) for a, b in zip(held0, net.held_state()))
    r = rollout(net, xb[1:], yb[1:], optimizer=opt, reset=False, on_nonfinite="skip")
    assert r.skipped.tolist() == [[False, True]]
    for before, after in zip(held0, net.held_state()):
        assert torch.equal(after[1], before[1]) and not torch.equal(after[0], before[0])
    assert torch.isfinite(r.predictions[0, 0]).all() and torch.isnan(r.predictions[0, 1]).all()
    assert all(torch.isfinite(p).all() for p in net.parameters())


# ------------------------------------------------------------------ errors a user can cause
def test_shape_and_argument_errors_say_what_to_do():
    net = _net()
    with pytest.raises(ConfigError, match=r"need \[T, streams, 3\] or \[T, 3\]"):
        predict_sequence(net, torch.zeros(4, 2))
    with pytest.raises(ConfigError, match=r"y has shape \(4, 2\).*must be \(4, 1\)"):
        rollout(net, torch.zeros(4, 3), torch.zeros(4, 2), optimizer=torch.optim.SGD(net.parameters(), 0.1))
    with pytest.raises(ConfigError, match="without targets"):
        rollout(net, torch.zeros(4, 3), optimizer=torch.optim.SGD(net.parameters(), 0.1))
    with pytest.raises(ConfigError, match="on_nonfinite"):
        rollout(net, torch.zeros(4, 3), on_nonfinite="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="teacher_steps"):
        rollout(net, torch.zeros(4, 3), teacher_steps=0)
    with pytest.raises(ConfigError, match="feedback columns"):
        rollout(net, torch.zeros(4, 3), feedback=[0, 1])
    with pytest.raises(ConfigError, match="numeric tensor"):
        rollout(net, np.array([["a", "b", "c"]]))
    predict_sequence(net, torch.zeros(4, 2, 3))
    with pytest.raises(StateShapeError, match=r"held state is for 2 stream\(s\) but x has 5.*reset_state\(n_streams=5\)"):
        predict_sequence(net, torch.zeros(4, 5, 3), reset=False)
    with pytest.raises(StateShapeError, match="initial_state"):
        net(torch.zeros(1, 3), net.initial_state(1)[:1])


def test_model_config_errors_name_the_argument():
    with pytest.raises(ConfigError, match=r"StatefulNet.hidden = \(\) is invalid"):
        StatefulNet(3, hidden=())
    with pytest.raises(ConfigError, match="StatefulNet.in_features = 0"):
        StatefulNet(0)
    with pytest.raises(ConfigError, match="StatefulNet.w0"):
        StatefulNet(3, w0=-1.0)


def test_one_dimensional_targets_are_accepted_for_one_output():
    net = _net()
    x = _seq(0, 5, 1)[:, 0]
    p = predict_sequence_online(net, x, torch.zeros(5), optimizer=torch.optim.SGD(net.parameters(), 0.1))
    assert p.shape == (5, 1)


def test_ball_bound_rejects_an_initial_state_outside_the_ball():
    with pytest.raises(ConfigError, match=r"bound='ball' and 4 units.*\|init\|\*sqrt\(4\) = 2.*use \|init\| <= 0.5"):
        StatefulNet(3, hidden=(4,), state=StateConfig(bound="ball", init=1.0, max_abs=1.0))
