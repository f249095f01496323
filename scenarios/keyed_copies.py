"""Any unkeyed scenario as a keyed stream: ``keys`` independent copies (one seed each), interleaved.

A keyed feed (sensors, users, machines) is many series of one kind arriving interleaved: a keyed
learner shares its weights across them and keeps a state per key. ``keyed_copies("narma10", n, seed,
keys=4)`` builds copy ``k`` as the scenario with seed ``seed * KEY_SEEDS + k`` and ``n // keys``
events, and interleaves the copies in a seeded random order that keeps each copy's own order (so a
key's state must survive the other keys' events between two of its own). Change points and outliers
move with their rows; the key column holds ``"k0"``, ``"k1"``, ...

>>> s = keyed_copies("delayed-copy-1", 40, 0, keys=4)
>>> X, y, keys = s.arrays()
>>> s.name, s.keyed, len(y), sorted(set(keys))
('delayed-copy-1 x4 keys', True, 40, ['k0', 'k1', 'k2', 'k3'])
>>> k1 = keys == "k1"
>>> bool(np.allclose(X[k1][:-1, 0], y[k1][1:]))
True
"""

from __future__ import annotations

import numpy as np

from .scenario import Scenario, table
from .streams import SCENARIOS

__all__ = ["KEY_SEEDS", "keyed_copies"]

KEY_SEEDS = 1000
"""Copy ``k`` of seed ``s`` is built with seed ``s * KEY_SEEDS + k``: distinct for ``keys <= KEY_SEEDS``."""


def keyed_copies(name: str, n: int, seed: int, keys: int) -> Scenario:
    """Scenario ``name`` as ``keys`` interleaved copies of ``n // keys`` events each (module doc)."""
    if name not in SCENARIOS:
        raise KeyError(f"keyed_copies: no scenario {name!r}; the scenarios are {', '.join(SCENARIOS)}.")
    if not 2 <= keys <= KEY_SEEDS:
        raise ValueError(f"keyed_copies: keys = {keys} must be in [2, {KEY_SEEDS}].")
    if n // keys < 1:
        raise ValueError(f"keyed_copies: n = {n} gives no events to each of {keys} keys.")
    copies = [SCENARIOS[name](n // keys, seed * KEY_SEEDS + k) for k in range(keys)]
    if copies[0].keyed:
        raise ValueError(f"keyed_copies: {name!r} is keyed already.")
    per = [c.table.num_rows for c in copies]
    label = np.repeat(np.arange(keys), per)
    order = np.random.default_rng(seed).permutation(len(label))
    key = label[order]
    rows = np.empty(len(key), dtype=np.int64)  # rows[j]: the row of the concatenated copies that event j is
    for k in range(keys):
        rows[key == k] = np.flatnonzero(label == k)
    where = np.empty_like(rows)  # where[r]: the event that concatenated row r becomes
    where[rows] = np.arange(len(rows))
    start = np.concatenate([[0], np.cumsum(per)[:-1]])
    arrays = [c.arrays() for c in copies]
    X = np.concatenate([a[0] for a in arrays])[rows]
    y = np.concatenate([a[1] for a in arrays])[rows]

    def moved(points: tuple[int, ...], k: int) -> list[int]:
        return [int(where[start[k] + p]) for p in points]

    first = copies[0]
    return Scenario(f"{name} x{keys} keys", f"{keys} interleaved copies of: {first.description}",
                    table(X, y, [f"k{k}" for k in key]),
                    tuple(sorted(p for k, c in enumerate(copies) for p in moved(c.change_points, k))),
                    keyed=True, outliers=tuple(sorted(p for k, c in enumerate(copies) for p in moved(c.outliers, k))),
                    autoregressive=first.autoregressive, last_target_column=first.last_target_column)
