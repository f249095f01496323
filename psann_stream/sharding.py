"""Splitting and merging per-key learner states by key: how the Ray learner checkpoints, restores and
rescales (with :func:`~psann_stream.keys.shard_of` choosing each key's shard).

The functions work on :meth:`KeyedLearner.state_dict <psann_stream.keyed.KeyedLearner.state_dict>`
dictionaries (format ``KEYED_FORMAT``) with per-key weights, whose keys are independent.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch

from .errors import CheckpointError, ConfigError
from .keys import sort_key

__all__ = ["KEYED_FORMAT", "merge_key_states", "select_keys"]

KEYED_FORMAT = "psann_stream.keyed/1"  # the format of a KeyedLearner.state_dict()


def _require_per_key(sd: Mapping[str, Any], what: str) -> None:
    if sd.get("format") != KEYED_FORMAT:
        raise CheckpointError(f"{what}: unknown keyed learner state format {sd.get('format')!r}; expected {KEYED_FORMAT!r}.")
    if not sd.get("per_key_weights"):
        raise ConfigError(
            f"{what}: only a KeyedLearner with per_key_weights=True can be split or merged by key (with shared "
            "weights every key's events update the same weights, so the keys are not independent)."
        )


def select_keys(sd: Mapping[str, Any], keep: Callable[[Hashable], bool], *, totals: bool = True) -> dict[str, Any]:
    """The part of a :meth:`KeyedLearner.state_dict` (per-key weights) holding the keys for which
    ``keep(key)`` is true, hot and cold, unchanged; a learner loaded from it continues those keys
    exactly as the whole one would. Counters that are not per key (skipped events, the time since
    the last monitor check) go to the part made with ``totals=True`` and are zero in the others,
    so :func:`merge_key_states` of the parts restores them."""
    _require_per_key(sd, "select_keys")
    mask = np.array([bool(keep(k)) for k in sd["keys"]], dtype=bool)
    idx = torch.from_numpy(np.flatnonzero(mask))
    cold = [(k, row) for k, row in zip(sd["cold_keys"], sd["cold"]) if keep(k)]
    learned = sd["n_learned_rows"][idx]
    c = sd["counters"]
    return {
        **{k: sd[k] for k in ("format", "state_config", "per_key_weights", "optimizer", "state_grad", "readout") if k in sd},
        "keys": [k for k, m in zip(sd["keys"], mask) if m],
        "rows": {name: t[idx].clone() for name, t in sd["rows"].items()},
        "seen": sd["seen"][idx].clone(),
        "n_learned_rows": learned.clone(),
        "shared": {k: v.clone() for k, v in sd["shared"].items()},
        "cold_keys": [k for k, _ in cold],
        "cold": [row for _, row in cold],
        "counters": {
            "clock": int(c["clock"]),
            "n_learned": int(learned.sum()) + sum(int(row["n_learned"]) for _, row in cold),
            "n_skipped": int(c["n_skipped"]) if totals else 0,
            "since_check": int(c["since_check"]) if totals else 0,
        },
    }


def merge_key_states(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One :meth:`KeyedLearner.state_dict` holding the (disjoint) keys of ``parts`` (per-key weights),
    in the canonical key order. The parts' event clocks are aligned to the latest one (each key's
    idle time is kept), counters are summed."""
    if not parts:
        raise ConfigError("merge_key_states needs at least one state.")
    for p in parts:
        _require_per_key(p, "merge_key_states")
    if len({p["optimizer"] for p in parts}) > 1:
        raise CheckpointError("merge_key_states: the parts were learned with different optimizers.")
    if len({(p.get("state_grad", "truncated"), p.get("readout", "gradient")) for p in parts}) > 1:
        raise CheckpointError("merge_key_states: the parts were learned with different state_grad or readout settings.")
    if len({repr(sorted(p["state_config"].items())) for p in parts if "state_config" in p}) > 1:
        raise CheckpointError("merge_key_states: the parts were learned with different state configurations.")
    clock = max(int(p["counters"]["clock"]) for p in parts)
    keys: list[Hashable] = []
    for p in parts:
        keys += list(p["keys"]) + list(p["cold_keys"])
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise CheckpointError(f"merge_key_states: key {dup!r} is in more than one part; the parts must be disjoint.")
    hot = [(k, p, i) for p in parts for i, k in enumerate(p["keys"])]
    hot.sort(key=lambda t: sort_key(t[0]))
    rows = {name: torch.stack([p["rows"][name][i] for _, p, i in hot]) if hot else parts[0]["rows"][name][:0]
            for name in parts[0]["rows"]}
    shift = {id(p): clock - int(p["counters"]["clock"]) for p in parts}
    seen = torch.tensor([int(p["seen"][i]) + shift[id(p)] for _, p, i in hot], dtype=torch.int64)
    learned = torch.tensor([int(p["n_learned_rows"][i]) for _, p, i in hot], dtype=torch.int64)
    cold = sorted(((k, row) for p in parts for k, row in zip(p["cold_keys"], p["cold"])), key=lambda t: sort_key(t[0]))
    total = lambda name: sum(int(p["counters"][name]) for p in parts)  # noqa: E731
    return {
        **{k: parts[0][k] for k in ("format", "state_config", "per_key_weights", "optimizer", "state_grad", "readout") if k in parts[0]},
        "keys": [k for k, _, _ in hot],
        "rows": rows,
        "seen": seen,
        "n_learned_rows": learned,
        "shared": {k: v.clone() for k, v in parts[0]["shared"].items()},
        "cold_keys": [k for k, _ in cold],
        "cold": [row for _, row in cold],
        "counters": {"clock": clock, "n_learned": total("n_learned"), "n_skipped": total("n_skipped"),
                     "since_check": max(int(p["counters"]["since_check"]) for p in parts)},
    }
