"""A stateful hypothesis test: random sequences of step / reset / checkpoint / restore / shock on a
StatefulNet, checked after every rule against a float64 numpy reference of the same recurrence
(tests/reference.py), with the state bound as an invariant."""

from __future__ import annotations

import io

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from psann_stream import StatefulNet, predict_sequence

from reference import RefNet
from strategies import f32_arrays, finite_f32, state_configs

F, HIDDEN = 2, (4, 3)


class StatefulNetMachine(RuleBasedStateMachine):
    @initialize(cfg=state_configs(), seed=st.integers(0, 2**16), streams=st.integers(1, 3))
    def build(self, cfg, seed, streams):
        self.net = StatefulNet(F, 1, hidden=HIDDEN, state=cfg, seed=seed)
        self.ref = RefNet.from_model(self.net)
        self.S = streams
        self.net.reset_state(n_streams=streams)
        self.ref_state = self.ref.initial_state(streams)
        self.checkpoints: list[tuple[bytes, list[np.ndarray]]] = []
        amp = (cfg.gain_max if cfg.learnable_gain else abs(cfg.gain)) / cfg.gain_eps if cfg.mode == "gain" else 1.0
        self.tol = 2e-4 * max(1.0, amp) ** len(HIDDEN)

    @rule(data=st.data())
    def step(self, data):
        x = data.draw(f32_arrays((1, self.S, F), finite_f32(-5, 5)))
        with torch.no_grad():
            y = predict_sequence(self.net, x, reset=False)
        y_ref, self.ref_state = self.ref.step(x[0].astype(np.float64), self.ref_state)
        np.testing.assert_allclose(y[0].numpy(), y_ref, rtol=self.tol, atol=self.tol)

    @rule(data=st.data())
    def reset(self, data):
        streams = data.draw(st.none() | st.lists(st.integers(0, self.S - 1), max_size=self.S, unique=True))
        self.net.reset_state(streams)
        rows = slice(None) if streams is None else streams
        for s in self.ref_state:
            s[rows] = self.net.state_config.init

    @rule()
    def checkpoint(self):
        buf = io.BytesIO()
        torch.save(self.net.state_dict(), buf)
        self.checkpoints.append((buf.getvalue(), [s.copy() for s in self.ref_state]))

    @precondition(lambda self: self.checkpoints)
    @rule(data=st.data())
    def restore(self, data):
        blob, ref_state = data.draw(st.sampled_from(self.checkpoints))
        fresh = StatefulNet(F, 1, hidden=HIDDEN, state=self.net.state_config, seed=12345)
        fresh.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
        self.net = fresh
        self.S = fresh.n_streams
        self.ref_state = [s.copy() for s in ref_state]

    @rule(scale=st.sampled_from([1e6, 1e30, -1e30]))
    def shock(self, scale):
        """An absurd input: only the bound is checked; the reference then adopts the model's state."""
        x = np.full((1, self.S, F), scale, dtype=np.float32)
        with torch.no_grad():
            predict_sequence(self.net, x, reset=False)
        self.ref_state = [s.double().numpy().copy() for s in self.net.held_state()]

    @invariant()
    def state_matches_reference_and_stays_bounded(self):
        m = self.net.state_config.max_abs
        for s, r in zip(self.net.held_state(), self.ref_state):
            assert torch.isfinite(s).all() and bool((s.abs() <= m).all())
            np.testing.assert_allclose(s.numpy(), r, rtol=self.tol, atol=self.tol)


TestStatefulNetMachine = StatefulNetMachine.TestCase
