"""Traced learning (eligibility traces through the state) and learnable rates: the traced gradient
against full backpropagation through time, the compiled loop against the torch reference, the trace
bound, and traces carried by resets, drift resets, checkpoints and key stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psann_stream import ConfigError, CheckpointError, KeyedLearner, Learner, StateConfig, StatefulNet
from psann_stream.drift import DriftPolicy
from psann_stream.sharding import merge_key_states, select_keys
from psann_stream.state import RATE_CAP, rate_from_raw, raw_rates
from psann_stream.traces import StateTraces, traced_parameters

from strategies import state_configs

TRACED_CONFIGS = state_configs(modes=("trace", "gain"), bounds=("clip", "tanh"), rates=True, pairs=True)


def _bptt_and_traced(cfg: StateConfig, seed: int, T: int, hidden=(6,)):
    """Gradients of ``sum_t w_t y_t`` over a ``T``-step sequence with frozen weights: full BPTT
    (autograd through every state) and the traced online rule (one step at a time)."""
    net = StatefulNet(2, hidden=hidden, state=StateConfig.from_mapping({**cfg.to_dict(), "detach": False}),
                      seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, 1, 2, generator=g, dtype=torch.float64) * 2
    w = torch.randn(T, generator=g, dtype=torch.float64)
    params = list(net.parameters())
    s, loss = net.initial_state(1), torch.zeros((), dtype=torch.float64)
    for t in range(T):
        y, s = net(x[t], s)
        loss = loss + w[t] * y.sum()
    bptt = torch.autograd.grad(loss, params)
    traces, s = StateTraces(net), net.initial_state(1)
    online = [torch.zeros_like(p) for p in params]
    for t in range(T):
        y, new = net(x[t], traces.surrogate(s))
        traces.advance(new)
        for acc, gr in zip(online, torch.autograd.grad(w[t] * y.sum(), params, allow_unused=True)):
            if gr is not None:
                acc += gr
        s = tuple(q.detach() for q in new)
    return bptt, online


@settings(max_examples=12)
@given(TRACED_CONFIGS, st.integers(0, 10_000))
def test_traced_gradient_equals_full_bptt_for_one_stateful_layer(cfg, seed):
    """With one stateful layer and frozen weights, the online traced gradient is the exact gradient
    through time (Zucchet et al.'s rule is exact within a layer), 200 steps, float64."""
    bptt, online = _bptt_and_traced(cfg, seed, 200)
    scale = max(1.0, max(float(b.abs().max()) for b in bptt))
    for got, want in zip(online, bptt):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * scale)


def test_truncated_gradient_is_not_the_bptt_gradient():
    """The check above can fail: the truncated rule (traces always zero) misses the state's past."""
    cfg = StateConfig(rho=0.9)
    bptt, _ = _bptt_and_traced(cfg, 0, 50)
    net = StatefulNet(2, hidden=(6,), state=cfg, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 1, 2, generator=g, dtype=torch.float64) * 2
    w = torch.randn(50, generator=g, dtype=torch.float64)
    s, trunc = net.initial_state(1), [torch.zeros_like(p) for p in net.parameters()]
    for t in range(50):
        y, s = net(x[t], s)
        for acc, gr in zip(trunc, torch.autograd.grad(w[t] * y.sum(), list(net.parameters()))):
            acc += gr
        s = tuple(q.detach() for q in s)
    assert float((trunc[1] - bptt[1]).abs().max()) > 1e-3 * float(bptt[1].abs().max())


@settings(max_examples=40)
@given(TRACED_CONFIGS, st.sampled_from(["obgd", "adam"]), st.sampled_from(["traced", "truncated"]), st.integers(0, 10_000))
def test_compiled_traced_learning_matches_the_torch_reference(cfg, opt, state_grad, seed):
    """The compiled loop's traces and traced updates follow the autograd reference over a run:
    predictions, weights and the traces themselves (and, truncated, the oscillatory pairs' and
    learnable rates' one-step gradients)."""
    if cfg.mode == "gain":  # bounded gain, as in test_fastpath._well_conditioned (chaos otherwise)
        cfg = StateConfig.from_mapping({**cfg.to_dict(), "beta": max(cfg.beta, 0.5), "gain_eps": max(cfg.gain_eps, 0.25)})
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 3))
    Y = np.roll(X[:, 0], 1) + 0.5 * X[:, 1]
    runs = [Learner(StatefulNet(3, hidden=(6, 4), state=cfg, seed=seed), optimizer=opt, backend=b,
                    state_grad=state_grad, monitor=False) for b in ("numba", "torch")]
    preds = [lrn.learn_batch(X, Y) for lrn in runs]
    fast, ref = (lrn.state_dict() for lrn in runs)
    scale = (cfg.gain_max / cfg.gain_eps) ** 2 if cfg.mode == "gain" else 1.0
    tol = dict(rtol=1e-5, atol=1e-7 * scale)
    np.testing.assert_allclose(preds[0], preds[1], **tol)
    for k in ref["model"]:
        np.testing.assert_allclose(fast["model"][k].numpy(), ref["model"][k].numpy(), **tol)
    np.testing.assert_allclose(fast["traces"].numpy(), ref["traces"].numpy(), **tol)


def test_traced_learning_differs_from_truncated():
    """Traced learning is not a relabelled truncated run: the same events give other weights."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 2))
    Y = np.roll(X[:, 0], 1)
    w = [Learner(StatefulNet(2, hidden=(6,), seed=0), state_grad=sg).learn_batch(X, Y) for sg in ("truncated", "traced")]
    assert np.abs(w[0] - w[1]).max() > 1e-3


@settings(max_examples=25)
@given(TRACED_CONFIGS, st.integers(0, 10_000), st.sampled_from([1.0, 10.0, 1e6]))
def test_traces_stay_within_beta_times_the_largest_one_step_sensitivity(cfg, seed, scale):
    """The bound of docs/stability.md: with ``D <= 1``, ``|e_t| <= rho |e_{t-1}| + (1 - rho) beta
    |phi'| |da/dtheta|``, so ``|e_t| <= beta * max_k |da_k/dtheta|`` for every trace of W, b, A, f, d
    (elementwise), whatever the inputs."""
    net = StatefulNet(2, hidden=(4,), state=cfg, seed=seed).double()
    traces = StateTraces(net)
    group = traced_parameters(net)[0][:5]
    # a pair's two traces of a parameter obey the same bound in l2 (the rotation is orthogonal, D <= 1)
    size = (lambda e: e.pow(2).sum(dim=0).sqrt()) if cfg.oscillatory else (lambda e: e.abs())  # noqa: E731
    peak = [torch.zeros_like(p) for p in group]
    s = net.initial_state(1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(60):
        x = torch.randn(1, 2, generator=g, dtype=torch.float64) * scale
        acts: list[torch.Tensor] = []
        y, new = net(x, traces.surrogate(s), acts)
        sens = torch.autograd.grad(acts[0].abs().sum(), group, retain_graph=True)  # |phi'| = 1: |da/dtheta|
        peak = [torch.maximum(p, q.abs()) for p, q in zip(peak, sens)]
        traces.advance(new)
        s = tuple(q.detach() for q in new)
        for e, p in zip(traces.traces[0][:5], peak):
            assert bool((size(e) <= cfg.beta * p * (1 + 1e-9) + 1e-300).all())


def test_trace_bound_check_catches_a_growing_trace():
    """The bound above is a real check: a recursion that forgets the ``rho`` (uses 1) breaks it."""
    cfg = StateConfig(rho=0.5, beta=1.0)
    net = StatefulNet(2, hidden=(4,), state=cfg, seed=0).double()
    traces = StateTraces(net)
    peak, s, exceeded = None, net.initial_state(1), False
    for t in range(40):
        x = torch.full((1, 2), 0.3, dtype=torch.float64)
        acts: list[torch.Tensor] = []
        _, new = net(x, traces.surrogate(s), acts)
        sens = torch.autograd.grad(acts[0].abs().sum(), traced_parameters(net)[0][:1], retain_graph=True)[0].abs()
        peak = sens if peak is None else torch.maximum(peak, sens)
        old = traces.traces[0][0].clone()
        traces.advance(new)
        traces.traces[0][0] = traces.traces[0][0] + (1 - cfg.rho) * old  # broken: e_t = e_{t-1} + ...
        exceeded |= bool((traces.traces[0][0].abs() > cfg.beta * peak * (1 + 1e-9)).any())
        s = tuple(q.detach() for q in new)
    assert exceeded


# ---------------------------------------------------------------------- learnable rates
@given(st.floats(-1e300, 1e300) | st.sampled_from([-np.inf, np.inf, -1e4, 1e4, 0.0]), st.sampled_from([torch.float32, torch.float64]))
def test_learnable_rate_is_below_one_for_every_raw_value_and_dtype(raw, dtype):
    rho = rate_from_raw(torch.tensor(raw, dtype=dtype))
    assert 0.0 <= float(rho) <= RATE_CAP < 1.0
    assert float(rho) < 1.0 and bool(torch.isfinite(rho))


@given(st.floats(1.01, 1e4), st.floats(1.0, 10.0), st.integers(2, 40))
def test_initial_rates_spread_the_memories_geometrically(lo, ratio, units):
    hi = min(lo * ratio, 1e5)
    rho = rate_from_raw(raw_rates(StateConfig(learnable_rate=True, memory_min=lo, memory_max=hi), units))
    tau = 1.0 / (1.0 - rho.numpy())
    np.testing.assert_allclose(tau[[0, -1]], [lo, hi], rtol=1e-6)
    np.testing.assert_allclose(np.diff(np.log(tau)), np.log(hi / lo) / (units - 1), rtol=1e-5, atol=1e-9)


@given(state_configs(modes=("trace", "gain"), bounds=("clip", "tanh"), rates=True), st.integers(0, 1000))
def test_two_states_of_a_layer_with_learned_rates_approach_at_its_largest_rate(cfg, seed):
    """C3 per unit: driven by the same inputs, two states' gap shrinks by at least the unit's rate
    per step (here after random raw rates, i.e. any learned values)."""
    cfg = StateConfig.from_mapping({**cfg.to_dict(), "learnable_rate": True})
    net = StatefulNet(2, hidden=(6,), state=cfg, seed=seed).double()
    layer = net.layers[0]
    with torch.no_grad():
        layer.raw_rate.copy_(torch.randn(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3)
    rho = layer.rate.detach()
    g = torch.Generator().manual_seed(seed + 1)
    a = torch.rand(1, 6, generator=g, dtype=torch.float64) * cfg.max_abs
    b = -torch.rand(1, 6, generator=g, dtype=torch.float64) * cfg.max_abs
    for _ in range(10):
        x = torch.randn(1, 2, generator=g, dtype=torch.float64)
        gap = (a - b).abs()
        _, (a,) = net(x, (a,))
        _, (b,) = net(x, (b,))
        assert bool(((a - b).abs() <= rho * gap + 1e-12).all())
    assert layer.state_bounds().contraction == pytest.approx(float(rho.max()))


def test_learnable_rate_is_refused_in_legacy_mode():
    with pytest.raises(ConfigError, match="learnable_rate needs mode"):
        StateConfig(mode="psann_legacy", learnable_rate=True)
    with pytest.raises(ConfigError, match="memory_min"):
        StateConfig(learnable_rate=True, memory_min=1.0)


# ---------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize("cfg, match", [
    (StateConfig(mode="psann_legacy"), "needs mode 'trace' or 'gain'"),
    (StateConfig(bound="ball"), "needs bound 'clip' or 'tanh'"),
])
def test_traced_learning_refuses_configurations_without_exact_traces(cfg, match):
    with pytest.raises(ConfigError, match=match):
        Learner(StatefulNet(2, hidden=(4,), state=cfg), state_grad="traced", backend="torch")


def test_unknown_state_grad_is_refused():
    with pytest.raises(ConfigError, match="state_grad = 'bptt' is not one of"):
        Learner(StatefulNet(2, hidden=(4,)), state_grad="bptt")
    with pytest.raises(ConfigError, match="state_grad"):
        KeyedLearner(StatefulNet(2, hidden=(4,)), state_grad="exact")


def test_batched_mode_refuses_traced_learning():
    lrn = Learner(StatefulNet(2, hidden=(4,)), state_grad="traced")
    with pytest.raises(ConfigError, match="mode='exact'"):
        lrn.learn_batch(np.zeros((3, 2)), np.zeros(3), mode="batched")


# ---------------------------------------------------------------------- traces travel with the state
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_reset_zeroes_the_traces(backend):
    lrn = Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced", backend=backend)
    X = np.random.default_rng(0).standard_normal((30, 2))
    lrn.learn_batch(X, X[:, 0])
    assert float(lrn.state_dict()["traces"].abs().max()) > 0
    lrn.reset()
    assert float(lrn.state_dict()["traces"].abs().max()) == 0.0
    fresh = Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced", backend=backend)
    fresh.load_state_dict(lrn.state_dict())
    np.testing.assert_array_equal(fresh.predict_batch(X[:5]), lrn.predict_batch(X[:5]))


def test_predict_without_advance_leaves_the_traces_and_predict_batch_advances_them():
    lrn = Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced")
    X = np.random.default_rng(1).standard_normal((20, 2))
    lrn.learn_batch(X, X[:, 1])
    before = lrn.state_dict()["traces"].clone()
    lrn.predict_one(X[0])
    lrn.predict_batch(X[:3], advance=False)
    torch.testing.assert_close(lrn.state_dict()["traces"], before, rtol=0, atol=0)
    lrn.predict_batch(X[:3])
    assert not torch.equal(lrn.state_dict()["traces"], before)


def test_a_drift_reset_zeroes_that_rows_traces():
    """The compiled drift reset clears the state and its traces together (a trace of a state that
    was reset describes a past the state no longer has)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1500, 2))
    Y = np.where(np.arange(1500) < 800, X[:, 0], 40 - 8 * X[:, 1])
    lrn = Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced",
                  drift=DriftPolicy(threshold=5.0, reset_state=True))
    out = np.empty(len(Y))
    for n in range(len(Y)):  # one event per call: the traces right after the detection are visible
        out[n] = lrn.learn_one(X[n], Y[n])
        if lrn.last_drifted is not None and lrn.last_drifted[0]:
            assert float(np.abs(lrn._path.traces).max()) == 0.0
            assert np.all(lrn._path.state == lrn._model.state_config.init)
            return
    pytest.fail("no drift was detected on an abrupt change of scale 40")


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_resumed_traced_run_equals_an_uninterrupted_one(backend):
    cfg = StateConfig(learnable_rate=True, bound="tanh")
    X = np.random.default_rng(2).standard_normal((120, 2))
    Y = np.roll(X[:, 0], 2)
    whole = Learner(StatefulNet(2, hidden=(5, 4), state=cfg, seed=3), state_grad="traced", backend=backend)
    want = whole.learn_batch(X, Y)
    first = Learner(StatefulNet(2, hidden=(5, 4), state=cfg, seed=3), state_grad="traced", backend=backend)
    got = [first.learn_batch(X[:70], Y[:70])]
    saved = first.state_dict()
    second = Learner(StatefulNet(2, hidden=(5, 4), state=cfg, seed=9), state_grad="traced", backend=backend)
    second.load_state_dict(saved)
    got.append(second.learn_batch(X[70:], Y[70:]))
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_a_checkpoint_of_another_state_grad_is_refused():
    traced = Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced")
    with pytest.raises(CheckpointError, match="state_grad='traced'"):
        Learner(StatefulNet(2, hidden=(4,), seed=0)).load_state_dict(traced.state_dict())
    keyed = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0), per_key_weights=True, state_grad="traced")
    with pytest.raises(CheckpointError, match="state_grad='traced'"):
        KeyedLearner(StatefulNet(2, hidden=(4,), seed=0), per_key_weights=True).load_state_dict(keyed.state_dict())


@pytest.mark.parametrize("per_key", [True, False])
def test_keyed_traced_learning_equals_one_learner_per_key(per_key):
    """Each key keeps its own traces: per-key weights equal independent Learners; with shared
    weights the events of all keys update one set of weights, each key's traces its own."""
    rng = np.random.default_rng(4)
    keys = rng.choice(["a", "b", "c"], size=90)
    X = rng.standard_normal((90, 2))
    Y = X[:, 0] * np.where(keys == "a", 1.0, -1.0)
    kl = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0), per_key_weights=per_key, state_grad="traced")
    got = kl.learn_batch(keys, X, Y)
    if per_key:
        for k in "abc":
            m = keys == k
            want = Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced").learn_batch(X[m], Y[m])
            np.testing.assert_allclose(got[m], want, rtol=1e-12, atol=1e-12)
    else:  # the shared-weights loop walks the batch in order; its first event equals a fresh learner's
        assert got[0] == Learner(StatefulNet(2, hidden=(4,), seed=0), state_grad="traced").learn_one(X[0], Y[0])
    kl.reset(["a"])
    row = kl._key_row["a"]
    assert float(np.abs(kl._core.rows["traces"][row]).max()) == 0.0
    assert float(np.abs(kl._core.rows["traces"][kl._key_row["b"]]).max()) > 0.0


@pytest.mark.parametrize("state", [StateConfig(), StateConfig(oscillatory=True, learnable_rate=True)],
                         ids=["real", "pairs"])
@pytest.mark.parametrize("learner", ["one stream", "keyed, shared weights", "keyed, per-key weights"])
def test_traced_learning_in_calls_of_any_size_equals_one_call(learner, state):
    """The compiled loop keeps a row's traces in one of two buffers and swaps them instead of copying
    back every event: whatever the call sizes (odd, one event) and however keys interleave in a call,
    the traces and predictions are those of one call over the whole stream."""
    rng = np.random.default_rng(11)
    n = 60
    keys = rng.choice(["a", "b", "c"], size=n)
    X = rng.standard_normal((n, 2))
    Y = np.sin(np.roll(X[:, 0], 1)) + 0.5 * X[:, 1]

    def make():
        net = StatefulNet(2, hidden=(4, 4), state=state, seed=1)
        if learner == "one stream":
            return Learner(net, state_grad="traced")
        return KeyedLearner(net, per_key_weights=learner.endswith("per-key weights"), state_grad="traced")

    def learn(m, lo, hi):
        if isinstance(m, Learner):
            return m.learn_batch(X[lo:hi], Y[lo:hi])
        return m.learn_batch(keys[lo:hi], X[lo:hi], Y[lo:hi])

    def traces(m):
        if isinstance(m, Learner):
            return m._path.traces.copy()
        return np.stack([m._core.rows["traces"][m._key_row[k]] for k in "abc"])  # rows in order of arrival

    whole = make()
    want = learn(whole, 0, n)
    for sizes in ([1] * n, [1, 2, 3, 5, 7, 11, 13, 17, 1]):
        parts, got, lo = make(), [], 0
        for size in sizes:
            got.append(learn(parts, lo, lo + size))
            lo += size
        np.testing.assert_array_equal(np.concatenate(got), want)
        np.testing.assert_array_equal(traces(parts), traces(whole))
        assert float(np.abs(traces(whole)).max()) > 0.0


def test_keyed_split_and_merge_carry_the_traces():
    rng = np.random.default_rng(5)
    keys = rng.choice(["a", "b", "c", "d"], size=80)
    X = rng.standard_normal((80, 2))
    kl = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0), per_key_weights=True, state_grad="traced")
    kl.learn_batch(keys, X, X[:, 0])
    sd = kl.state_dict()
    parts = [select_keys(sd, lambda k: k in "ab"), select_keys(sd, lambda k: k in "cd", totals=False)]
    merged = merge_key_states(parts)
    back = KeyedLearner(StatefulNet(2, hidden=(4,), seed=0), per_key_weights=True, state_grad="traced")
    back.load_state_dict(merged)
    more = rng.standard_normal((10, 2))
    ks = np.array(list("abcdabcdab"))
    np.testing.assert_array_equal(back.learn_batch(ks, more, more[:, 1]), kl.learn_batch(ks, more, more[:, 1]))


# ---------------------------------------------------------------------- oscillatory pairs
@given(st.floats(0.0, 0.999), st.floats(0.0, 4.0), st.floats(0.1, 10.0), st.sampled_from(["clip", "tanh"]),
       st.integers(0, 1000))
def test_two_oscillatory_states_approach_at_the_pair_rate_in_l2(rho, beta, m, bound, seed):
    """C3 for pairs: ``s <- B(r R(theta) s + drive)`` with an orthogonal ``R`` and an elementwise
    1-Lipschitz ``B``: the gap of two states driven by the same inputs shrinks by ``r`` per step in
    each pair's l2 norm, for any angle."""
    cfg = StateConfig(oscillatory=True, rho=rho, beta=beta, max_abs=m, bound=bound)
    net = StatefulNet(2, hidden=(6,), state=cfg, seed=seed).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.layers[0].raw_phase.copy_(torch.randn(3, generator=g, dtype=torch.float64) * 10)
    a = (torch.rand(1, 6, generator=g, dtype=torch.float64) * 2 - 1) * m
    b = (torch.rand(1, 6, generator=g, dtype=torch.float64) * 2 - 1) * m
    pair = lambda s: s.reshape(3, 2).pow(2).sum(dim=1).sqrt()  # noqa: E731
    for _ in range(12):
        x = torch.randn(1, 2, generator=g, dtype=torch.float64) * 3
        gap = pair(a - b)
        _, (a,) = net(x, (a,))
        _, (b,) = net(x, (b,))
        assert bool((pair(a - b) <= rho * gap * (1 + 1e-12) + 1e-12).all())
        assert bool((a.abs() <= m).all())


def test_pair_contraction_check_fails_for_an_expanding_rotation():
    """The check above can fail: a rotation scaled by 1.05 (|lambda| > 1) separates two states."""
    from psann_stream.state import rotate_pairs

    a, b = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[0.1, 0.1]], dtype=torch.float64)
    phase = torch.tensor([0.7], dtype=torch.float64)
    gap0 = float((a - b).norm())
    for _ in range(5):
        a, b = rotate_pairs(a, 1.05, phase), rotate_pairs(b, 1.05, phase)
    assert float((a - b).norm()) > gap0


def test_an_oscillatory_pair_holds_a_delayed_value():
    """What the pairs are for: from the current value of white noise only, traced learning with
    oscillatory pairs recovers the value 2 events back, which the default (one real rate, truncated)
    cannot (normalised MSE near 1)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8002)
    X, Y = x[2:, None], x[:8000]
    err = {}
    for name, cfg, sg in (("default", StateConfig(), "truncated"), ("pairs", StateConfig(oscillatory=True), "traced")):
        p = Learner(StatefulNet(1, hidden=(16,), state=cfg, seed=0), state_grad=sg).learn_batch(X, Y)
        err[name] = float(np.mean((p[-2000:] - Y[-2000:]) ** 2) / np.var(Y[-2000:]))
    assert err["default"] > 0.8
    assert err["pairs"] < 0.2, err


@pytest.mark.parametrize("cfg, hidden, match", [
    (dict(oscillatory=True, mode="gain"), (4,), "oscillatory needs mode 'trace'"),
    (dict(oscillatory=True), (5,), "use an even width"),
])
def test_oscillatory_configurations_that_cannot_pair_are_refused(cfg, hidden, match):
    with pytest.raises(ConfigError, match=match):
        StatefulNet(2, hidden=hidden, state=StateConfig(**cfg))


def test_a_resumed_oscillatory_run_equals_an_uninterrupted_one_and_grows_inputs():
    cfg = StateConfig(oscillatory=True, learnable_rate=True, memory_min=5.0, memory_max=50.0)
    X = np.random.default_rng(3).standard_normal((100, 2))
    Y = np.roll(X[:, 0], 3)
    whole = Learner(StatefulNet(2, hidden=(6, 4), state=cfg, seed=1), state_grad="traced")
    want = whole.learn_batch(X, Y)
    first = Learner(StatefulNet(2, hidden=(6, 4), state=cfg, seed=1), state_grad="traced")
    got = [first.learn_batch(X[:40], Y[:40])]
    second = Learner(StatefulNet(2, hidden=(6, 4), state=cfg, seed=5), state_grad="traced")
    second.load_state_dict(first.state_dict())
    got.append(second.learn_batch(X[40:], Y[40:]))
    np.testing.assert_array_equal(np.concatenate(got), want)
    # a new input enters with zero weights and zero traces: predictions are unchanged while it is 0
    grown = Learner(StatefulNet(2, hidden=(6, 4), state=cfg, seed=1), state_grad="traced", normalize_x=False)
    twin = Learner(StatefulNet(2, hidden=(6, 4), state=cfg, seed=1), state_grad="traced", normalize_x=False)
    grown.learn_batch(X[:30], Y[:30])
    twin.learn_batch(X[:30], Y[:30])
    grown.grow_inputs(3)
    more = np.c_[X[30:60], np.zeros(30)]
    np.testing.assert_allclose(grown.learn_batch(more, Y[30:60]), twin.learn_batch(X[30:60], Y[30:60]), rtol=1e-12, atol=1e-12)
