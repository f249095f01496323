"""StateConfig: validation (one test per error), hashing, the plain-dict round trip, psann mapping."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from psann_stream import ConfigError, StateConfig

from strategies import state_configs


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("rho", 1.0, "0 <= rho < 1"),
        ("rho", -0.1, "0 <= rho < 1"),
        ("rho", float("nan"), "not finite"),
        ("rho", "0.9", "must be a real number"),
        ("rho", True, "must be a real number"),
        ("beta", -1.0, "beta >= 0"),
        ("beta", float("inf"), "not finite"),
        ("max_abs", 0.0, "max_abs > 0"),
        ("max_abs", -2.0, "max_abs > 0"),
        ("init", 5.0, "|init| <= max_abs"),
        ("mode", "lstm", "not one of"),
        ("bound", "sigmoid", "not one of"),
        ("detach", 1, "True or False"),
        ("learnable_gain", "yes", "True or False"),
        ("gain", 4.0, "|gain| < gain_max"),
        ("gain_max", 0.0, "gain_max > 0"),
        ("gain_eps", 0.0, "gain_eps > 0"),
    ],
)
def test_invalid_field_raises_value_error_naming_field_value_and_range(field, value, needle):
    with pytest.raises(ValueError) as info:
        StateConfig(**{field: value})
    msg = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert f"StateConfig.{field}" in msg
    assert repr(value) in msg or (isinstance(value, float) and math.isnan(value) and "nan" in msg)
    assert needle in msg


def test_gain_mode_rejects_negative_init():
    with pytest.raises(ConfigError, match=r"init = -0\.5 .*mode='gain'.*init >= 0"):
        StateConfig(mode="gain", init=-0.5)


def test_fixed_gain_may_exceed_gain_max_when_not_learnable():
    assert StateConfig(gain=10.0, learnable_gain=False).gain == 10.0


def test_config_is_frozen_and_hashable():
    cfg = StateConfig()
    with pytest.raises(AttributeError):
        cfg.rho = 0.5  # type: ignore[misc]
    assert hash(cfg) == hash(StateConfig())
    assert len({cfg, StateConfig(), StateConfig(rho=0.5)}) == 2


def test_integers_are_stored_as_floats():
    cfg = StateConfig(beta=2, max_abs=4)
    assert type(cfg.beta) is float and type(cfg.max_abs) is float


@given(state_configs())
def test_plain_dict_round_trip_is_identity(cfg):
    d = cfg.to_dict()
    assert all(isinstance(v, (bool, float, str)) for v in d.values())
    assert StateConfig.from_mapping(d) == cfg
    assert hash(StateConfig.from_mapping(d)) == hash(cfg)


def test_from_mapping_rejects_unknown_fields():
    with pytest.raises(ConfigError, match=r"no field\(s\) 'tau'"):
        StateConfig.from_mapping({"mode": "trace", "tau": 3})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'tau'.*psann keys"):
        StateConfig.from_mapping({"rho": 0.9, "tau": 3})
    with pytest.raises(ConfigError, match="needs a mapping"):
        StateConfig.from_mapping([("rho", 0.9)])  # type: ignore[arg-type]


def test_psann_dict_maps_to_contractive_gain_mode_and_warns_why():
    with pytest.warns(UserWarning, match="mode='gain'.*decays to 0 or saturates.*psann_legacy"):
        cfg = StateConfig.from_mapping({"rho": 0.95, "beta": 1.0, "init": 1.0, "max_abs": 5.0, "detach": True})
    assert (cfg.mode, cfg.rho, cfg.beta, cfg.init, cfg.max_abs, cfg.bound) == ("gain", 0.95, 1.0, 1.0, 5.0, "tanh")
    assert cfg.contractive and not cfg.learnable_gain


def test_psann_dict_missing_keys_take_psann_defaults():
    with pytest.warns(UserWarning):
        cfg = StateConfig.from_mapping({"rho": 0.8})
    assert (cfg.rho, cfg.beta, cfg.init, cfg.max_abs, cfg.detach) == (0.8, 1.0, 1.0, 5.0, True)


def test_psann_architecture_keys_are_dropped_with_a_pointer():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StateConfig.from_mapping({"rho": 0.9, "reset": "batch", "stream_lr": 1e-3})
    text = " ".join(str(w.message) for w in caught)
    assert "'reset' is ignored" in text and "reset_state" in text
    assert "'stream_lr' is ignored" in text and "optimiser" in text


def test_exact_legacy_reproduction_is_one_mapping_away():
    with pytest.warns(UserWarning):
        mapped = StateConfig.from_mapping({"rho": 0.95})
    legacy = StateConfig.from_mapping({**mapped.to_dict(), "mode": "psann_legacy"})
    assert legacy.mode == "psann_legacy" and not legacy.contractive


def test_time_constant():
    assert StateConfig(rho=0.99).time_constant == pytest.approx(100.0)
    assert StateConfig(rho=0.0).time_constant == 1.0


@given(st.floats(0, 0.999), st.floats(0.01, 10))
def test_valid_ranges_are_accepted(rho, m):
    cfg = StateConfig(rho=rho, max_abs=m, init=m)
    assert cfg.rho == rho and cfg.init == cfg.max_abs
