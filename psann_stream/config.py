"""The ``--config`` TOML file: its sections, their keys and the types of their values, checked before
anything is built.

Sections (each optional):

* ``[model]``: ``hidden`` (list of widths), ``seed``;
* ``[state]``: :class:`~psann_stream.state.StateConfig` fields;
* ``[learner]``: keyword arguments of :class:`~psann_stream.learner.Learner` and
  :class:`~psann_stream.keyed.KeyedLearner` (``optimizer_kwargs`` and ``drift`` as tables; ``drift``
  takes :class:`~psann_stream.drift.DriftPolicy` fields);
* ``[ensemble]`` (alone, instead of the three above): ``persistence``, ``target``, ``eta``, ``share``,
  ``seed``;
* ``[target]``: ``change_from`` (the feature holding each target's last value, a name or index per
  target): the learner learns each target's change from it (:class:`~psann_stream.experts.Change`);
* ``[kafka]``: librdkafka settings, passed on as they are (plain values only).

The accepted keys and types come from the classes' own signatures and fields (one owner). An unknown or
misspelt key is one line naming the key, its section and the closest valid name; a wrong type names
the expected one (:class:`~psann_stream.errors.ConfigError`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import types
import typing
from typing import Any, Mapping

from .drift import DriftPolicy
from .errors import ConfigError
from .state import StateConfig

__all__ = ["SECTIONS", "check_config", "learner_kwargs"]

SECTIONS = ("model", "state", "learner", "ensemble", "target", "kafka")
MODEL_KEYS: dict[str, tuple[type, ...]] = {"hidden": (list,), "seed": (int,)}
ENSEMBLE_KEYS: dict[str, tuple[type, ...]] = {"persistence": (str, int, list), "target": (str,), "eta": (int, float),
                                              "share": (int, float), "seed": (int,)}
TARGET_KEYS: dict[str, tuple[type, ...]] = {"change_from": (str, int, list)}
_TOML_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a table"}


def _toml_types(hint: Any) -> tuple[tuple[type, ...], tuple[str, ...]]:
    """The TOML value types (and, for a ``Literal``, the allowed strings) a type hint accepts."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return (str,), tuple(str(v) for v in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        found: tuple[type, ...] = ()
        choices: tuple[str, ...] = ()
        for arg in typing.get_args(hint):
            t, c = _toml_types(arg)
            found += tuple(x for x in t if x not in found)
            choices += c
        return found, choices
    if hint is bool:
        return (bool,), ()
    if hint is int:
        return (int,), ()
    if hint is float:
        return (int, float), ()
    if hint is str:
        return (str,), ()
    if origin in (tuple, list) or hint in (tuple, list):
        return (list,), ()
    if origin in (dict, collections.abc.Mapping) or hint is DriftPolicy:
        return (dict,), ()  # a DriftPolicy is written as a table of its fields
    return (), ()  # not expressible in TOML (a Monitor object, ...)


def _signature_types(*owners: Any) -> dict[str, tuple[tuple[type, ...], tuple[str, ...]]]:
    out: dict[str, tuple[tuple[type, ...], tuple[str, ...]]] = {}
    for owner in owners:
        hints = typing.get_type_hints(owner.__init__ if inspect.isclass(owner) else owner)
        for name, p in inspect.signature(owner).parameters.items():
            if name in ("self", "model") or p.kind is not p.KEYWORD_ONLY:
                continue
            t, c = _toml_types(hints.get(name, Any))
            if t:
                out[name] = (t, c)
    return out


def _field_types(cls: type) -> dict[str, tuple[tuple[type, ...], tuple[str, ...]]]:
    hints = typing.get_type_hints(cls)
    return {f.name: _toml_types(hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _learner_types() -> dict[str, tuple[tuple[type, ...], tuple[str, ...]]]:
    from .keyed import KeyedLearner
    from .learner import Learner

    return _signature_types(Learner, KeyedLearner)


def _is(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed)


def _closest(name: str, known: list[str], section: str = "") -> str:
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if near:
        return f"did you mean {near[0]!r}?"
    if section == "learner":  # a step size or another optimiser setting, written at the top level
        from .optim import OPTIMIZERS, optimizer_defaults

        settings = sorted({k for name in OPTIMIZERS for k in optimizer_defaults(name)})
        if difflib.get_close_matches(name, settings + ["learning_rate", "step_size"], n=1, cutoff=0.6):
            return (f"the optimiser's settings ({', '.join(settings)}) go in a table: optimizer_kwargs = "
                    "{lr = 0.1}.")
    return f"valid: {', '.join(sorted(known))}."


def _check_keys(where: str, section: str, table: Mapping[str, Any],
                schema: Mapping[str, tuple[tuple[type, ...], tuple[str, ...]]]) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"{where}: [{section}] {key} is not a setting; {_closest(key, list(schema), section)}")
        allowed, choices = schema[key]
        if not _is(value, allowed):
            names = [_TOML_NAMES.get(t, t.__name__) for t in allowed if not (t is int and float in allowed)]
            expected = " or ".join(names)
            raise ConfigError(f"{where}: [{section}] {key} = {value!r} must be {expected}, "
                              f"not {_TOML_NAMES.get(type(value), type(value).__name__)}.")
        if choices and isinstance(value, str) and value not in choices:
            raise ConfigError(f"{where}: [{section}] {key} = {value!r} is not one of {', '.join(map(repr, choices))}.")


def check_config(cfg: Mapping[str, Any], where: str) -> None:
    """Check every section, key and value type of a parsed ``--config`` file (module doc); ``where``
    names the file in the messages."""
    for section, table in cfg.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: [{section}] is not a section; {_closest(section, list(SECTIONS))}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a [{section}] table, not a single value.")
    _check_keys(where, "model", cfg.get("model", {}), {k: (v, ()) for k, v in MODEL_KEYS.items()})
    _check_keys(where, "state", cfg.get("state", {}), _field_types(StateConfig))
    _check_keys(where, "ensemble", cfg.get("ensemble", {}), {k: (v, ()) for k, v in ENSEMBLE_KEYS.items()})
    _check_keys(where, "target", cfg.get("target", {}), {k: (v, ()) for k, v in TARGET_KEYS.items()})
    learner = cfg.get("learner", {})
    _check_keys(where, "learner", learner, _learner_types())
    if "drift" in learner:
        _check_keys(where, "learner.drift", learner["drift"], _field_types(DriftPolicy))
    for key, value in cfg.get("kafka", {}).items():  # passed to librdkafka as is: plain values only
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{where}: [kafka] {key} must be a string, number or boolean (a librdkafka "
                              f"setting), got {type(value).__name__}.")
    if "ensemble" in cfg and set(cfg) - {"ensemble", "kafka"}:
        raise ConfigError(f"{where}: [ensemble] builds its own members (psann_stream.ensemble.default_ensemble); "
                          "drop [model], [state] and [learner] (and [target]: its own target = \"change\" "
                          "learns changes), or drop [ensemble].")


def learner_kwargs(section: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[learner]`` table as keyword arguments (a ``drift`` table becomes a DriftPolicy)."""
    out = dict(section)
    if isinstance(out.get("drift"), dict):
        out["drift"] = DriftPolicy(**out["drift"])
    return out
