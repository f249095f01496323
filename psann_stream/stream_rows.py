"""Per-stream state rows of a compiled expert: one row of ``width`` floats per key (or one row when
unkeyed), the array a compiled loop indexes with each event's row; and :class:`RowExpert`, what every
such expert shares: its RLS readout of the row (``width`` regressors and a constant), its input
statistics, and its calls (batch and one-event, keyed or not).

Rows are assigned in order of first sight and start at 0; a key keeps its row until the expert is
rebuilt (there is no eviction: ``width`` floats per key). Saved states list the keys in the
canonical order (:func:`~psann_stream.keys.sort_key`), so a checkpoint does not depend on the order
the keys first arrived in.

>>> rows = StreamRows(2, keyed=True)
>>> rows.rows_of(["b", "a", "b"], 3).tolist(), rows.keys
([1, 0, 1], ['a', 'b'])
>>> rows.array[1] = 5.0
>>> keys, states = rows.saved()
>>> keys, states.tolist()
(['a', 'b'], [[0.0, 0.0], [5.0, 5.0]])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Hashable, Sequence

import numpy as np

import torch

from .errors import CheckpointError, ConfigError
from .inputs import as_targets
from .keys import EncodedKeys, distinct_index, sort_key
from .normalize import RunningStats
from .readout import initial_readout_matrix, readout_config

__all__ = ["RowExpert", "StreamRows", "call_arguments"]


def call_arguments(owner: str, call: str, args: Sequence[Any], *, keyed: bool, learn: bool, in_features: int,
                   n_outputs: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """A compiled expert's batch call checked: ``(X, Y)`` / ``(X)``, or ``(keys, X, Y)`` / ``(keys, X)``
    when keyed. Returns ``(keys or None, X [N, F] float64, Y [N, T])`` (zeros when not learning)."""
    want = (3 if learn else 2) if keyed else (2 if learn else 1)
    if len(args) != want:
        form = ("keys, X, Y" if learn else "keys, X") if keyed else ("X, Y" if learn else "X")
        raise ConfigError(f"{owner}.{call} takes ({form}) for this {'keyed ' if keyed else ''}{owner}; "
                          f"got {len(args)} argument(s).")
    X = np.ascontiguousarray(np.asarray(args[1 if keyed else 0], dtype=np.float64))
    if X.ndim != 2 or X.shape[1] != in_features:
        raise ConfigError(f"{owner}.{call}: X must have shape [N, {in_features}], got {X.shape}.")
    Y = as_targets(f"{owner}.{call}", args[-1], X.shape[0], n_outputs) if learn else np.zeros((X.shape[0], n_outputs))
    keys = args[0] if keyed else None
    if keys is not None and len(keys) != X.shape[0]:
        raise ConfigError(f"{owner}.{call}: {len(keys)} key(s) for {X.shape[0]} row(s).")
    return keys, X, Y


class StreamRows:
    """``array [rows, width]``: one stream's state per row (module doc). Unkeyed: one row, row 0."""

    def __init__(self, width: int, *, keyed: bool) -> None:
        self.width, self.keyed = int(width), bool(keyed)
        self._row: dict[Hashable, int] = {}
        self.array = np.zeros((16 if self.keyed else 1, self.width))

    @property
    def keys(self) -> list[Hashable]:
        """The keys with a row, in order of first sight (keyed)."""
        return list(self._row)

    def rows_of(self, keys: Sequence[Hashable] | EncodedKeys | None, n: int) -> np.ndarray:
        """The row of each of ``n`` events (``[n]`` int64): row 0 for an unkeyed stream (``keys`` is
        not read); a keyed stream's unseen keys get new zero rows (one dict lookup per distinct key)."""
        if not self.keyed:
            return np.zeros(n, dtype=np.int64)
        uniq, index = distinct_index(keys)  # type: ignore[arg-type]
        rows = np.empty(len(uniq), dtype=np.int64)
        for i, k in enumerate(uniq):
            r = self._row.get(k)
            if r is None:
                r = len(self._row)
                if r == self.array.shape[0]:
                    self.array = np.concatenate([self.array, np.zeros_like(self.array)])
                self.array[r] = 0.0
                self._row[k] = r
            rows[i] = r
        return rows[index]

    def state_of(self, key: Hashable | None, owner: str) -> np.ndarray:
        """A copy of ``key``'s row (unkeyed: ``key=None``, the one row)."""
        if not self.keyed:
            if key is not None:
                raise ConfigError(f"{owner}.state_of: this expert is unkeyed; call it without a key.")
            return self.array[0].copy()
        if key not in self._row:
            raise ConfigError(f"{owner}.state_of: unknown key {key!r}; known keys: {len(self._row)}.")
        return self.array[self._row[key]].copy()

    def snapshot(self) -> tuple[np.ndarray, dict[Hashable, int]]:
        """Everything :meth:`restore` needs to undo what happens after it."""
        return self.array.copy(), dict(self._row)

    def restore(self, snapshot: tuple[np.ndarray, dict[Hashable, int]]) -> None:
        self.array, self._row = snapshot

    def reset(self, keys: Sequence[Hashable] | None, owner: str) -> None:
        """The given keys' rows (every row by default) back to 0; an unknown key is refused before
        any row changes."""
        if keys is None:
            self.array[:] = 0.0
            return
        if not self.keyed:
            raise ConfigError(f"{owner}.reset: keys are for a keyed {owner}; this one has one state (call reset() without keys).")
        unknown = [k for k in keys if k not in self._row]
        if unknown:
            raise ConfigError(f"{owner}.reset: unknown key {unknown[0]!r}; known keys: {len(self._row)}.")
        for k in keys:
            self.array[self._row[k]] = 0.0

    def saved(self) -> tuple[list[Hashable], np.ndarray]:
        """``(keys, states)``: the keys in canonical order and their rows (``[K, width]``); unkeyed:
        ``([], [1, width])``."""
        if not self.keyed:
            return [], self.array.copy()
        order = sorted(self._row, key=sort_key)
        return order, self.array[[self._row[k] for k in order]].reshape(-1, self.width).copy()

    def checked(self, keys: Sequence[Hashable], states: np.ndarray, owner: str) -> tuple[list[Hashable], np.ndarray]:
        """A saved ``(keys, states)`` checked against this expert (``CheckpointError`` names the
        mismatch), to be :meth:`load`-ed once every other part of the checkpoint is checked too."""
        keys = list(keys)
        if states.size % self.width:
            raise CheckpointError(f"{owner}: the saved states hold {states.size} values, not rows of {self.width}; "
                                  "build it with the same settings.")
        states = states.reshape(-1, self.width)
        if (not self.keyed and (keys or states.shape[0] != 1)) or (self.keyed and states.shape[0] != len(keys)):
            raise CheckpointError(f"{owner}: the saved expert holds {states.shape[0]} state(s) for {len(keys)} key(s); "
                                  f"this one is {'keyed' if self.keyed else 'unkeyed'}: build it with the same keyed.")
        return keys, states

    def load(self, keys: list[Hashable], states: np.ndarray) -> None:
        """Replace every row with a :meth:`checked` saved state."""
        if not self.keyed:
            self.array = states.copy()
            return
        self._row = {k: i for i, k in enumerate(keys)}
        self.array = np.zeros((max(16, len(keys)), self.width))
        self.array[: len(keys)] = states



class RowExpert(ABC):
    """The learner protocol of a compiled expert whose per-stream state is one row of ``width``
    floats (``self._rows``, a :class:`StreamRows`) that its RLS readout reads (weights ``_w``: the
    learners' readout layout ``_head``, one ``_P``). Subclasses call :meth:`_build` and implement
    ``_run(keys, X, Y, learn, advance)`` (one pass of their compiled loop over ``X [N, F]``,
    ``Y [N, T]``; returns the predictions)."""

    in_features: int
    n_outputs: int
    keyed: bool
    x_stats: RunningStats
    _rows: StreamRows

    @staticmethod
    def _counts(owner: str, **values: object) -> list[int]:
        """Each value checked to be an integer >= 1 (``ConfigError`` names it), as ints."""
        for name, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{owner}.{name} = {v!r} must be an integer >= 1.")
        return [int(v) for v in values.values()]  # type: ignore[arg-type]

    def _build(self, width: int, *, forgetting: float, prior: float, error_clip: float | None,
               normalize_clip: float | None) -> None:
        """The rows (``width`` floats per stream), the readout of them and the input statistics;
        ``in_features``, ``n_outputs`` and ``keyed`` must be set."""
        T = self.n_outputs
        self._head = np.array([0, T * width, width, T], dtype=np.int64)  # the kernel's head layout (weights, biases, width, T)
        self._rcfg = readout_config("rls", forgetting, prior, error_clip, width, type(self).__name__)
        self.prior = float(prior)
        self.x_stats = RunningStats(self.in_features, clip=normalize_clip)
        self._rows = StreamRows(width, keyed=self.keyed)
        self._forget_readout()

    def _forget_readout(self) -> None:
        """Readout weights 0 and ``P`` at its prior: what ``reset(optimizer=True)`` does."""
        self._w = np.zeros((self._rows.width + 1) * self.n_outputs)
        self._P = initial_readout_matrix("rls", self._rows.width, self.prior)

    def _saved_readout(self) -> dict[str, Any]:
        """The part of a checkpoint every such expert has: ``w``, ``P``, the input statistics, the keys
        (canonical order) and ``rows`` (``[K, width]``; unkeyed ``[1, width]``)."""
        keys, rows = self._rows.saved()
        return {"format": type(self).FORMAT, "w": torch.from_numpy(self._w.copy()),  # type: ignore[attr-defined]
                "P": torch.from_numpy(self._P.copy()), "keys": keys, "rows": rows,
                "x_stats": {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v)
                            for k, v in self.x_stats.state_dict().items()}}

    @abstractmethod
    def _run(self, keys: Any, X: np.ndarray, Y: np.ndarray, learn: bool, advance: bool = True) -> np.ndarray:
        """One pass of the expert's compiled loop (class doc)."""

    @property
    def alerts(self) -> list:
        return []

    @property
    def keys(self) -> list[Hashable]:
        """The keys with a state (keyed)."""
        return self._rows.keys

    def _call(self, call: str, args: Sequence[Any], learn: bool) -> tuple[Any, np.ndarray, np.ndarray]:
        return call_arguments(type(self).__name__, call, args, keyed=self.keyed, learn=learn,
                              in_features=self.in_features, n_outputs=self.n_outputs)

    def learn_batch(self, *args: Any) -> np.ndarray:
        """``(X [N, F], Y)``, or ``(keys [N], X, Y)`` when keyed (``Y``: ``[N]``, or ``[N, T]``):
        prequential predictions, each made before its targets are learned."""
        return self._run(*self._call("learn_batch", args, True), True)

    def predict_batch(self, *args: Any, advance: bool = True) -> np.ndarray:
        """``(X)``, or ``(keys, X)`` when keyed: predictions without targets; ``advance=True`` moves the
        per-stream states and the input statistics on (as the learners do for events that will not be
        learned), ``False`` leaves everything as it was."""
        keys, X, Y = self._call("predict_batch", args, False)
        if advance or (X.shape[0] == 1 and not self.keyed):  # one unkeyed event leaves nothing to a next one
            return self._run(keys, X, Y, False, advance)
        saved = (self.x_stats.state_dict(), self._rows.snapshot())  # each event sees what the events before it left
        out = self._run(keys, X, Y, False)
        self.x_stats.load_state_dict(saved[0])
        self._rows.restore(saved[1])
        return out

    def learn_one(self, *args: Any) -> float | np.ndarray:
        """``(x, y)``, or ``(key, x, y)`` when keyed: one event (``y`` a number, or ``T``); returns its
        prediction (a float, or ``[T]``)."""
        *key, x, y = args
        p = self.learn_batch(*([[key[0]]] if key else []), np.reshape(x, (1, -1)),
                             as_targets(f"{type(self).__name__}.learn_one", y, 1, self.n_outputs))[0]
        return float(p) if self.n_outputs == 1 else p

    def predict_one(self, *args: Any) -> float | np.ndarray:
        """``(x)``, or ``(key, x)`` when keyed: the prediction of one event; changes nothing."""
        *key, x = args
        p = self.predict_batch(*([[key[0]]] if key else []), np.reshape(x, (1, -1)), advance=False)[0]
        return float(p) if self.n_outputs == 1 else p
