"""psann_stream.testing: the check suite passes psann_stream's configurations, reports psann 2.0.1's
collapse, runs on a user's own module, and every check fails on a deliberately broken update."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import psann_stream.layers as layers_mod
import psann_stream.testing.checks as checks_mod
from psann_stream import StateConfig, StatefulNet
from psann_stream.layers import StatefulSineLayer
from psann_stream.state import apply_bound, update_state
from psann_stream.testing import StabilityViolation, run_checks, yield_checks
from psann_stream.testing.strategies import CONTRACTIVE_MODES, dtypes, state_configs

ALL_CHECKS = {"bounded", "envelope", "contraction", "fixed_point", "no_collapse", "reset", "chunking",
              "streams_independent", "nonfinite", "checkpoint", "kernel_agreement"}


@st.composite
def nets(draw):
    dtype = draw(dtypes())
    cfg = draw(state_configs(dtype=dtype, modes=CONTRACTIVE_MODES, rates=True, pairs=True, units=6))
    hidden = draw(st.sampled_from([(6,), (4, 6)]))
    seed = draw(st.integers(0, 1000))

    def make():
        net = StatefulNet(3, hidden=hidden, state=cfg, seed=seed)
        return net.double() if dtype == torch.float64 else net

    return cfg, make


# ~0.7 s per example: 10 in the ci profile, 200 in the thorough one
@settings(max_examples=10 if settings.default.max_examples <= 100 else 200)
@given(nets())
def test_every_check_passes_on_psann_stream_configurations_in_both_dtypes(spec):
    """Across the whole validated range (rho up to 1 - eps of the dtype, beta and max_abs up to the
    dtype's largest value): only no_collapse may fail, and only where the drive saturates the bound
    (beta > max_abs with G = 1 at initialisation: the state is pinned at +-M and carries nothing)."""
    cfg, make = spec
    found = {name: v for name, v in run_checks(make, steps=60).items() if v is not None}
    if cfg.beta > cfg.max_abs:
        found.pop("no_collapse", None)
    assert not found, found


def test_the_suite_reports_the_collapse_of_psann_2_0_1():
    legacy = StateConfig.from_mapping({"rho": 0.95, "beta": 1.0, "init": 1.0, "max_abs": 5.0, "mode": "psann_legacy",
                                       "bound": "tanh", "learnable_gain": False})
    found = run_checks(lambda: StatefulNet(3, hidden=(8, 8), state=legacy, seed=0))
    assert isinstance(found["no_collapse"], StabilityViolation)
    assert "stopped responding" in str(found["no_collapse"])
    assert "contraction" not in found  # legacy claims no contraction


# ---------------------------------------------------------------------- a user's own module
class LeakyCell(nn.Module):
    """s' = rho s + (1 - rho) tanh(W x + b): contractive at rate rho, |s| <= 1 from s_0 in [-1, 1]."""

    def __init__(self, in_features=3, units=5, rho=0.7, mutation=None):
        super().__init__()
        self.in_features, self.rho, self.mutation, self.calls = in_features, rho, mutation, 0
        self.inp = nn.Linear(in_features, units)
        self.head = nn.Linear(units, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))

    def initial_state(self, n):
        return torch.zeros(n, self.inp.out_features)

    def forward(self, x, s):
        if self.mutation == "swallow_nan":
            x = torch.nan_to_num(x)
        s = self.rho * s + (1 - self.rho) * torch.tanh(self.inp(x))
        y = self.head(s)
        if self.mutation == "hidden_counter":  # computes with something its state_dict does not hold
            self.calls += 1
            y = y + 1e-3 * self.calls
        return y, s


def test_a_user_module_passes_the_checks_it_claims():
    # Linear(3e38 inputs) overflows to inf - inf = NaN: this cell documents normalised inputs
    found = run_checks(LeakyCell, max_abs=1.0, contraction=0.7, max_input=1e6)
    assert set(found) == {"bounded", "contraction", "fixed_point", "no_collapse", "reset", "streams_independent",
                          "nonfinite", "checkpoint"}
    assert all(v is None for v in found.values()), found


def test_a_wrong_claim_about_a_user_module_is_caught():
    found = run_checks(lambda: LeakyCell(rho=0.9), contraction=0.5, max_input=1e6)
    assert isinstance(found["contraction"], StabilityViolation)


def test_a_wrapped_gru_cell_runs_the_suite():
    class GRU(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.in_features, self.cell, self.head = 3, nn.GRUCell(3, 8), nn.Linear(8, 1)

        def initial_state(self, n):
            return torch.zeros(n, 8)

        def forward(self, x, s):
            s = self.cell(x, s)
            return self.head(s), s

    found = run_checks(GRU, max_abs=1.0)
    assert "kernel_agreement" not in found and "envelope" not in found
    assert all(v is None for v in found.values()), found


def test_yield_checks_refuses_a_module_without_the_state_protocol():
    with pytest.raises(TypeError, match="initial_state"):
        list(yield_checks(nn.Linear(3, 1), in_features=3))


# ---------------------------------------------------------------------- mutation: every check can fail
def _mutated_update(kind):
    def update(s_prev, a, cfg, rho=None, phase=None):
        keep = (1.0 - cfg.rho) * cfg.beta
        if kind == "no_bound":
            return cfg.rho * s_prev + keep * a
        if kind == "double_drive":
            return apply_bound(cfg.rho * s_prev + 2.0 * keep * a, cfg)
        if kind == "integrator":
            return apply_bound(s_prev + keep * a, cfg)
        if kind == "expanding":
            return apply_bound(1.05 * s_prev + keep * a, cfg)
        if kind == "half_drive":
            return apply_bound(cfg.rho * s_prev + 0.5 * keep * a, cfg)
        if kind == "multiplicative":  # psann 2.0.1's feedback
            return apply_bound(cfg.rho * s_prev + keep * (a * s_prev).abs(), cfg)
        if kind == "mixes_streams":
            return update_state(s_prev.mean(dim=0, keepdim=True).expand_as(s_prev), a, cfg)
        raise AssertionError(kind)

    return update


@contextlib.contextmanager
def _mutation(monkeypatch, kind):
    if kind == "reset_ignores_init":
        monkeypatch.setattr(StatefulSineLayer, "initial_state",
                            lambda self, n: torch.zeros(n, self.out_features, dtype=self.state.dtype))
    elif kind == "rollout_forgets_state":  # the sequence backend restarts every call from init
        real = checks_mod.rollout
        monkeypatch.setattr(checks_mod, "rollout", lambda model, x, *a, reset=True, **k: real(model, x, *a, reset=True, **k))
    else:
        monkeypatch.setattr(layers_mod, "update_state", _mutated_update(kind))
    yield


# (mutation, the check that must catch it, the configuration that makes the mutation matter)
NET_MUTATIONS = [
    ("no_bound", "bounded", dict(beta=8.0, max_abs=1.0)),
    ("double_drive", "envelope", dict(max_abs=10.0)),
    ("integrator", "contraction", {}),
    ("expanding", "contraction", {}),
    ("half_drive", "fixed_point", {}),
    ("half_drive", "kernel_agreement", {}),
    ("multiplicative", "no_collapse", dict(init=1.0)),
    ("reset_ignores_init", "reset", dict(init=0.5)),
    ("rollout_forgets_state", "chunking", {}),
    ("mixes_streams", "streams_independent", {}),
]
CELL_MUTATIONS = [("swallow_nan", "nonfinite"), ("hidden_counter", "checkpoint")]


def _check(checks, name):
    (check,) = [c for c in checks if c.name == name]
    return check


@pytest.mark.parametrize("kind,name,overrides", NET_MUTATIONS, ids=[f"{k}-{n}" for k, n, _ in NET_MUTATIONS])
def test_each_check_catches_its_broken_update(monkeypatch, kind, name, overrides):
    cfg = StateConfig(rho=0.8, **overrides)
    make = lambda: StatefulNet(3, hidden=(6, 6), state=cfg, seed=1).double()  # noqa: E731
    _check(yield_checks(make), name)()  # the intact update passes
    with _mutation(monkeypatch, kind):
        with pytest.raises(StabilityViolation, match=name):
            _check(yield_checks(make), name)()


@pytest.mark.parametrize("kind,name", CELL_MUTATIONS)
def test_each_check_catches_its_broken_user_module(kind, name):
    _check(yield_checks(LeakyCell, max_abs=1.0, contraction=0.7, max_input=1e6), name)()
    with pytest.raises(StabilityViolation, match=name):
        _check(yield_checks(lambda: LeakyCell(mutation=kind), max_abs=1.0, contraction=0.7, max_input=1e6), name)()


def test_every_check_has_a_mutation_that_it_catches():
    covered = {name for _, name, _ in NET_MUTATIONS} | {name for _, name in CELL_MUTATIONS}
    names = {c.name for c in yield_checks(lambda: StatefulNet(3, hidden=(4,), seed=0))}
    assert names == ALL_CHECKS and covered == ALL_CHECKS


@pytest.mark.parametrize("check", list(yield_checks(lambda: StatefulNet(4, hidden=(16, 16), seed=0))), ids=lambda c: c.name)
def test_the_default_model_passes_every_check(check):
    check()
