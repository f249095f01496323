"""Learner: prequential semantics, checkpoints (C8), bad values (C12), reset, batch modes, the
monitor's verdicts on healthy and broken configurations, and configuration errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import CheckpointError, ConfigError, NonFiniteInputError, StateConfig, StatefulNet
from psann_stream.drift import DriftPolicy
from psann_stream.learner import Learner
from psann_stream.monitor import StabilityWarning
from psann_stream.scenarios import regime_switching_sine

BACKENDS = ("numba", "torch")


def _stream(seed: int, n: int, f: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f))
    return X, np.sin(X @ np.arange(1, f + 1)) + 0.1 * rng.standard_normal(n)


def _learner(backend: str, seed: int = 0, **kw) -> Learner:
    return Learner(StatefulNet(3, hidden=(8, 6), seed=seed), backend=backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", ["obgd", "intentional", "adam"])
def test_checkpoint_round_trip_gives_bit_identical_future_predictions(backend, opt):
    """C8: save after 60 events, restore into a fresh learner (through bytes, weights_only=True),
    and both continue identically, bit for bit."""
    X, Y = _stream(0, 120)
    a = _learner(backend, optimizer=opt)
    a.learn_batch(X[:60], Y[:60])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = _learner(backend, seed=99, optimizer=opt)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert np.array_equal(a.learn_batch(X[60:], Y[60:]), b.learn_batch(X[60:], Y[60:]))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


def test_checkpoint_moves_between_backends():
    X, Y = _stream(1, 80)
    a = _learner("numba", optimizer="adam")
    a.learn_batch(X[:40], Y[:40])
    b = _learner("torch", optimizer="adam")
    b.load_state_dict(a.state_dict())
    np.testing.assert_allclose(a.learn_batch(X[40:], Y[40:]), b.learn_batch(X[40:], Y[40:]), rtol=1e-9, atol=1e-12)


def test_corrupt_or_mismatched_checkpoint_is_rejected_with_a_reason():
    a = _learner("numba")
    sd = a.state_dict()
    with pytest.raises(CheckpointError, match="unknown learner state format"):
        a.load_state_dict({**sd, "format": "something/9"})
    with pytest.raises(CheckpointError, match="saved optimiser is 'obgd' but this learner uses 'adam'"):
        _learner("numba", optimizer="adam").load_state_dict(sd)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        Learner(StatefulNet(3, hidden=(4,)), backend="numba").load_state_dict(sd)
    broken = {**sd, "x_stats": {"count": 1}}
    with pytest.raises(CheckpointError):
        a.load_state_dict(broken)


@pytest.mark.parametrize("backend", BACKENDS)
def test_learn_one_in_a_loop_equals_learn_batch(backend):
    X, Y = _stream(2, 50)
    a, b = _learner(backend), _learner(backend)
    one = np.array([a.learn_one(x, y) for x, y in zip(X, Y)])
    assert np.array_equal(one, b.learn_batch(X, Y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_prediction_is_made_before_learning_and_predict_one_changes_nothing(backend):
    X, Y = _stream(3, 30)
    a, b = _learner(backend), _learner(backend)
    a.learn_batch(X[:20], Y[:20])
    b.learn_batch(X[:20], Y[:20])
    p = a.predict_one(X[20])
    for _ in range(3):
        assert a.predict_one(X[20]) == p  # pure
    assert a.learn_one(X[20], Y[20]) == p  # learn_one returns the prediction made before learning
    b.learn_one(X[20], Y[20])
    assert np.array_equal(a.learn_batch(X[21:], Y[21:]), b.learn_batch(X[21:], Y[21:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_batch_advances_the_state_only_when_asked(backend):
    X, _ = _stream(4, 10)
    a = _learner(backend)
    first = a.predict_batch(X, advance=False)
    assert np.array_equal(first, a.predict_batch(X, advance=False))
    assert np.array_equal(first, a.predict_batch(X, advance=True))
    assert not np.array_equal(first, a.predict_batch(X, advance=True))  # the state moved on


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["x", "y"])
def test_nonfinite_event_raises_naming_it_and_changes_nothing(backend, where):
    X, Y = _stream(5, 20)
    (X[7] if where == "x" else Y[7:8])[:] = np.nan if where == "y" else [0.0, np.inf, 0.0]
    a = _learner(backend)
    before = a.state_dict()
    needle = "x column 1 is inf" if where == "x" else "y is nan"
    with pytest.raises(NonFiniteInputError, match=f"event 7 of this batch.*{needle}.*on_nonfinite='skip'"):
        a.learn_batch(X, Y)
    after = a.state_dict()
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert after["x_stats"]["count"] == 0


@given(st.integers(0, 1000), st.sampled_from(BACKENDS), st.lists(st.integers(0, 19), min_size=1, max_size=5, unique=True))
def test_skipped_events_are_as_if_they_never_arrived(seed, backend, bad_rows):
    """C12 'skip': learning a stream with bad events equals learning it without them."""
    X, Y = _stream(seed, 20)
    Xb, Yb = X.copy(), Y.copy()
    for i, r in enumerate(bad_rows):
        if i % 2:
            Xb[r, i % 3] = np.nan
        else:
            Yb[r] = np.inf
    keep = np.setdiff1d(np.arange(20), bad_rows)
    a = _learner(backend, on_nonfinite="skip")
    b = _learner(backend)
    pa = a.learn_batch(Xb, Yb)
    pb = b.learn_batch(X[keep], Y[keep])
    assert np.isnan(pa[bad_rows]).all()
    assert np.array_equal(pa[keep], pb)
    assert a.n_skipped == len(bad_rows) and a.n_learned == len(keep)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_returns_the_state_to_init_and_restarts_the_optimiser(backend):
    X, Y = _stream(6, 30)
    a = Learner(StatefulNet(3, hidden=(4,), state=StateConfig(init=0.5), seed=0), backend=backend, optimizer="adam")
    a.learn_batch(X, Y)
    a.reset(optimizer=True)
    held = a.model.held_state()
    assert all(bool((s == 0.5).all()) for s in held)
    assert float(a.state_dict()["optimizer"]["scal"][0]) == 0.0  # Adam's t


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_mode_predicts_with_fixed_weights_then_takes_one_bounded_step(backend):
    X, Y = _stream(7, 40)
    a = _learner(backend, optimizer="obgd")
    a.learn_batch(X[:10], Y[:10])
    expected = a.predict_batch(X[10:], advance=False)
    theta = np.concatenate([p.detach().reshape(-1).numpy() for p in a.model.parameters()])
    got = a.learn_batch(X[10:], Y[10:], mode="batched")
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    after = np.concatenate([p.detach().reshape(-1).numpy() for p in a.model.parameters()])
    assert 0 < np.abs(after - theta).sum() <= (1 + 1e-9) / a.optimizer_settings["kappa"]  # one ObGD step (C10)
    assert a.n_learned == 40


def _faded(err: np.ndarray, alpha: float = 0.99) -> np.ndarray:
    out, s, n = np.empty_like(err), 0.0, 0.0
    for i, e in enumerate(err):
        s, n = e + alpha * s, 1 + alpha * n
        out[i] = s / n
    return out


def test_recovers_from_an_abrupt_frequency_switch_with_a_silent_monitor():
    """Faded prequential error back within 1.1x its pre-switch level after the switch, no alert."""
    s = regime_switching_sine(16000, periods=(40.0, 15.0), amplitudes=(1.0, 1.0), noise=0.02)
    lrn = Learner(StatefulNet(1, hidden=(32, 32), seed=0), optimizer="intentional")
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)
        preds = lrn.learn_batch(s.x, s.y[:, 0])
    faded = _faded(np.abs(preds - s.y[:, 0]))
    switch = s.change_points[1]
    pre = faded[switch - 1]
    after = faded[switch:]
    assert after.max() > 1.5 * pre  # the switch did hurt
    recovered = np.nonzero(after <= 1.1 * pre)[0]
    assert len(recovered), f"never recovered: pre {pre:.4f}, last {after[-1]:.4f}"
    assert lrn.alerts == []


def test_monitor_names_saturation_cause_and_fix():
    cfg = StateConfig(beta=8.0, max_abs=0.5)  # beta * G ~ 8 >> max_abs
    lrn = Learner(StatefulNet(3, hidden=(8,), state=cfg, seed=0), monitor=True, check_every=100)
    X, Y = _stream(8, 600)
    with pytest.warns(StabilityWarning, match=r"\[saturation\] layer 0.*beta\*G = 8\*.*vs max_abs = 0\.5.*raise max_abs to >="):
        lrn.learn_batch(X, Y)
    kinds = {a.kind for a in lrn.alerts}
    assert "saturation" in kinds
    first = [a for a in lrn.alerts if a.kind == "saturation"]
    assert len(first) == 1  # rate-limited: once per cooldown window, not every check


def test_monitor_names_overshoot_cause_and_fix():
    """ObGD with a tiny kappa (its 'learning rate') takes steps that remove more than the error."""
    lrn = Learner(StatefulNet(3, hidden=(8,), seed=0), optimizer="obgd", optimizer_kwargs={"kappa": 0.5})
    X, Y = _stream(9, 1000)
    with pytest.warns(StabilityWarning, match=r"\[overshoot\] model.*effective step.*kappa = 0.5.*raise kappa to >="):
        lrn.learn_batch(X, Y)


def test_monitor_names_a_huge_learning_rate_behind_a_silent_layer():
    lrn = Learner(StatefulNet(3, hidden=(8,), seed=0), optimizer="adam", optimizer_kwargs={"lr": 5.0}, check_every=100)
    X, Y = _stream(9, 400)
    with pytest.warns(StabilityWarning, match=r"\[dormant\] layer 0.*silent.*steps too large for the network \(optimizer='adam' with lr = 5.*lower lr to <= 0.5"):
        lrn.learn_batch(X, Y)


def test_legacy_mode_collapse_is_diagnosed():
    cfg = StateConfig(mode="psann_legacy", rho=0.95, beta=1.0, init=1.0, max_abs=5.0, bound="tanh", learnable_gain=False)
    lrn = Learner(StatefulNet(3, hidden=(8,), state=cfg, seed=0), optimizer="intentional")
    X, Y = _stream(10, 2000)
    with pytest.warns(StabilityWarning, match=r"\[vanishing\].*psann_legacy growth factor.*< 1.*use mode='gain'"):
        lrn.learn_batch(X, Y)


def test_learner_configuration_errors():
    net = StatefulNet(3, hidden=(4,))
    two = Learner(StatefulNet(3, 2, hidden=(4,)))
    with pytest.raises(ConfigError, match=r"Y has shape \(3,\); this learner has 2 outputs, so it needs \[3, 2\]"):
        two.learn_batch(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(ConfigError, match=r"learn_one: Y has shape \(3,\); this learner has 2 outputs"):
        two.learn_one(np.zeros(3), [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match=r"learn_one: Y has shape \(\); this learner has 2 outputs"):
        two.learn_one(np.zeros(3), 1.0)
    assert two.n_learned == 0
    with pytest.raises(ConfigError, match="'sgd' is not one of"):
        Learner(net, optimizer="sgd")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) 'momentum' for optimizer 'obgd'"):
        Learner(net, optimizer_kwargs={"momentum": 0.9})
    with pytest.raises(ConfigError, match="ObGD.kappa"):
        Learner(net, optimizer_kwargs={"kappa": -1})
    with pytest.raises(ConfigError, match="backend='numba' cannot run this model: bound='ball'"):
        Learner(StatefulNet(3, hidden=(4,), state=StateConfig(bound="ball")), backend="numba")
    with pytest.raises(ConfigError, match="on_nonfinite"):
        Learner(net, on_nonfinite="ignore")  # type: ignore[arg-type]
    lrn = Learner(net)
    with pytest.raises(ConfigError, match=r"X has 3 row\(s\) but Y has 2"):
        lrn.learn_batch(np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ConfigError, match="need rows of 3 value"):
        lrn.learn_batch(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ConfigError, match="the target y = .a. is not a number"):
        lrn.learn_one(np.zeros(3), "a")
    with pytest.raises(ConfigError, match="mode = 'fast'"):
        lrn.learn_batch(np.zeros((3, 3)), np.zeros(3), mode="fast")  # type: ignore[arg-type]


def test_auto_backend_falls_back_to_torch_for_models_the_compiled_loop_does_not_cover():
    assert Learner(StatefulNet(3, hidden=(4,))).backend == "numba"
    assert Learner(StatefulNet(3, hidden=(4,), state=StateConfig(bound="ball"))).backend == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt", ["obgd", "adam"])
def test_growing_the_input_keeps_everything_learned(backend, opt):
    """New inputs enter with zero weights: with the new columns at 0 the grown learner continues
    exactly like the original one (weights, state, optimiser state all carried over)."""
    X, Y = _stream(11, 80)
    a = _learner(backend, optimizer=opt, normalize_x=False)
    b = _learner(backend, optimizer=opt, normalize_x=False)
    a.learn_batch(X[:40], Y[:40])
    b.learn_batch(X[:40], Y[:40])
    b.grow_inputs(5)
    assert b.model.in_features == 5
    wide = np.concatenate([X[40:], np.zeros((40, 2))], axis=1)
    np.testing.assert_allclose(b.learn_batch(wide, Y[40:]), a.learn_batch(X[40:], Y[40:]), rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="must be an integer >= the current 5"):
        b.grow_inputs(4)
    with pytest.raises(ConfigError, match="needs normalize_x=False"):
        _learner(backend).grow_inputs(6)


@pytest.mark.parametrize("optimizer, kwargs, scale", [("adam", {"lr": 1e300}, 1.0)])
def test_a_non_finite_update_changes_nothing(optimizer, kwargs, scale):
    """NonFiniteStateError says the learner is unchanged since the previous event: it must be."""
    import warnings

    from psann_stream import KeyedLearner, NonFiniteStateError

    X, Y = _stream(11, 60)
    for make in (lambda: Learner(StatefulNet(3, hidden=(8,), seed=0), optimizer=optimizer, optimizer_kwargs=kwargs,
                                 normalize_x=False, monitor=False),
                 lambda: KeyedLearner(StatefulNet(3, hidden=(8,), seed=0), per_key_weights=True, optimizer=optimizer,
                                      optimizer_kwargs=kwargs, normalize_x=False, monitor=False)):
        lrn = make()
        keyed = isinstance(lrn, KeyedLearner)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                lrn.learn_batch(["k"] * 20, X[:20], Y[:20]) if keyed else lrn.learn_batch(X[:20], Y[:20])
            except NonFiniteStateError:
                pass  # the huge-lr optimisers may already fail here; what matters is the state after
            before = lrn.state_dict()
            bad = X[20:21] * scale
            with pytest.raises(NonFiniteStateError):
                lrn.learn_batch(["k"], bad, Y[20:21]) if keyed else lrn.learn_batch(bad, Y[20:21])
        after = lrn.state_dict()
        flat = lambda sd: [v for v in _tensors(sd)]  # noqa: E731
        assert len(flat(before)) == len(flat(after))
        for a, b in zip(flat(before), flat(after)):
            assert torch.equal(a, b)
        weights = after["rows"]["theta"] if keyed else torch.cat([t.reshape(-1) for t in after["model"].values()])
        assert torch.isfinite(weights).all()


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


@pytest.mark.parametrize("kind, hyp", [(0, [1.0, 1.25, 0.5]), (1, [0.5, 2.0, 1e-8, 10.0]),
                                       (2, [1e-3, 0.9, 0.999, 1e-8])])
def test_every_optimiser_step_checks_before_it_writes(kind, hyp):
    """A gradient holding inf (ObGD with a trace, intentional, Adam): NaN l1 returned and
    parameters, traces, moments and counters untouched."""
    from psann_stream import _fastpath as fp

    rng = np.random.default_rng(0)
    theta, buf1, buf2, scal = rng.standard_normal(50), rng.standard_normal(50), rng.random(50), np.array([3.0, 2.0])
    G = rng.standard_normal(50)
    G[7] = np.inf
    copies = [a.copy() for a in (theta, buf1, buf2, scal)]
    l1, *_ = fp._optimise(theta, G, 0.5, kind, np.array(hyp, dtype=np.float64), buf1, buf2, scal)
    assert np.isnan(l1)
    for got, want in zip((theta, buf1, buf2, scal), copies):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("where", ["weights", "unit parameters"])
def test_obgd_without_trace_checks_before_it_writes(where):
    """ObGD without a trace (weight gradients rebuilt from the work blocks): an inf anywhere in the
    gradient, hence in ||G||_1, returns a NaN l1 and leaves every parameter as it was."""
    from psann_stream import _fastpath as fp
    from psann_stream._packing import flat_params, layout

    net = StatefulNet(3, hidden=(5, 4), seed=0).double()
    L, theta = layout(net), flat_params(net)
    rng = np.random.default_rng(1)
    work, G, xin = rng.standard_normal((2, fp.W_ROWS, 5)), rng.standard_normal(L.n_params), rng.standard_normal(3)
    if where == "weights":
        work[1, fp.R_GZ, 2] = np.inf
    else:
        G[L.lay[0, 5] + 1] = np.inf
    gl1 = 1.0 + float(np.abs(G).sum()) + float(np.abs(work[:, fp.R_GZ]).sum())
    before = theta.copy()
    l1, *_ = fp._obgd_plain(theta, G, gl1, 0.5, np.array([1.0, 1.25, 0.0, 0.0]), L.lay, L.head, work, xin, True)
    assert np.isnan(l1)
    np.testing.assert_array_equal(theta, before)


@pytest.mark.parametrize("kw", [
    {}, {"optimizer": "adam"}, {"optimizer": "intentional"}, {"state_grad": "traced"}, {"readout": "rls"},
    {"drift": DriftPolicy(threshold=2.0, reset_optimizer=True)}, {"check_every": 7},
    {"state": StateConfig(mode="gain", bound="tanh")}, {"state": StateConfig(oscillatory=True), "state_grad": "traced"},
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_per_event_calls_equal_one_batch_call_in_every_configuration(kw):
    """learn_one and predict_one take the compiled path's one-event arrays; interleaved (and with
    inputs the fast path does not take: lists, int targets), they give bit for bit what learn_batch
    gives, and predict_one is the prediction learn_one then makes."""
    kw = dict(kw)
    state = kw.pop("state", StateConfig())
    X, Y = _stream(9, 300)
    a = Learner(StatefulNet(3, hidden=(8, 6), state=state, seed=2), **kw)
    b = Learner(StatefulNet(3, hidden=(8, 6), state=state, seed=2), **kw)
    got = []
    for n in range(300):
        x, y = (X[n].tolist(), float(Y[n])) if n % 5 == 0 else (X[n], Y[n])
        p = a.predict_one(x)
        got.append(a.learn_one(x, y))
        assert got[-1] == p
    assert np.array_equal(np.array(got), b.learn_batch(X, Y))
    assert a.n_learned == b.n_learned == 300
    saved_a, saved_b = list(_tensors(a.state_dict())), list(_tensors(b.state_dict()))
    assert len(saved_a) == len(saved_b) > 10
    for ta, tb in zip(saved_a, saved_b):
        assert torch.equal(ta, tb)


@pytest.mark.parametrize("backend", BACKENDS)
def test_permute_inputs_carries_everything_learned_with_its_column(backend):
    X, Y = _stream(10, 200)
    perm = [2, 0, 1]
    a, b = _learner(backend, normalize_x=True), _learner(backend, normalize_x=True)
    a.learn_batch(X[:100], Y[:100])
    b.learn_batch(X[:100], Y[:100])
    b.permute_inputs(perm)
    # the same sums over inputs in another order: equal to rounding (torch.testing's float64 tolerances)
    torch.testing.assert_close(torch.from_numpy(b.learn_batch(X[100:, perm], Y[100:])),
                               torch.from_numpy(a.learn_batch(X[100:], Y[100:])))
    with pytest.raises(ConfigError, match=r"permutation of range\(3\)"):
        b.permute_inputs([0, 0, 1])


def test_a_pickled_learner_continues_as_the_original():
    """The compiled path keeps its arrays as views of one buffer; a pickle copies views, so it packs
    them again on load: both copies must go on learning the same events to the same bits, each on its
    own arrays."""
    import pickle

    X, Y = _stream(11, 120)
    a = Learner(StatefulNet(3, hidden=(8, 6), seed=4), state_grad="traced", readout="rls")
    for n in range(60):
        a.learn_one(X[n], Y[n])
    b = pickle.loads(pickle.dumps(a))
    got_a = [a.learn_one(X[n], Y[n]) for n in range(60, 120)]
    got_b = [b.learn_one(X[n], Y[n]) for n in range(60, 120)]
    assert got_a == got_b and a.predict_one(X[0]) == b.predict_one(X[0])
    assert b.x_stats.count == a.x_stats.count == 120
    b.reset()
    assert a.predict_one(X[0]) != b.predict_one(X[0])  # separate arrays


@pytest.mark.parametrize("kw, worst", [(dict(optimizer="adam"), 3.0), (dict(readout="rls"), 2.0)])
def test_a_stream_whose_targets_start_constant_is_learned_almost_as_if_they_did_not(kw, worst):
    """50 zero targets, then the signal (a sensor switched on late): the target statistics have no
    scale until two different values (variance 1, not sqrt(eps)); with a scale of 1e-4 the first real
    targets were thousands of deviations out, and Adam and the RLS readout were thrown off for the
    rest of the stream (44x and 49x the error, measured). The compiled loop and the torch reference
    agree on such a stream, a constant input feature included."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 2))
    y = 2.0 * X[:, 0] - X[:, 1] + np.sin(X[:, 0])
    late = y.copy()
    late[:50] = 0.0
    errors = []
    for target in (y, late):
        p = Learner(StatefulNet(2, hidden=(8,), seed=0), monitor=False, **kw).learn_batch(X, target)
        errors.append(np.mean((p[1500:] - target[1500:]) ** 2))
    assert errors[1] < worst * errors[0], errors
    Xc = X[:300].copy()
    Xc[:40, 1] = 3.0  # an input constant at first too
    runs = [Learner(StatefulNet(2, hidden=(6,), seed=1), backend=b, monitor=False, **kw).learn_batch(Xc, late[:300])
            for b in BACKENDS]
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6, atol=1e-8)
