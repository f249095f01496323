"""KeyedLearner: many independent streams, identified by a key, learned in one compiled loop.

Every key has its own state (and, with ``per_key_weights=True``, its own weights, optimiser state
and normalisers). A batch of events with mixed keys is learned in exact per-event prequential order
*within each key*; with per-key weights the keys are independent and run in parallel threads, with
shared weights every event updates the same weights and the batch runs in its order. No Python code
runs per event: keys are resolved once per distinct key of a batch (a dict lookup), the events are
grouped with one stable sort, and the compiled loop of :mod:`psann_stream._fastpath` does the rest.

Unseen keys start fresh on first sight (weights from the model's initial weights, state at ``init``).
Idle keys leave the hot arrays when there are more than ``max_keys`` (least recently seen first) or
when they have been idle for more than ``ttl`` events; their rows move to a cold store, are kept in
checkpoints, and come back unchanged when the key reappears.
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping, Sequence

import numba
import numpy as np
import torch

from ._packing import fast_path_unsupported, layer_bounds, optimizer_settings, restart_buffer
from .core import WEIGHT_ARRAYS, Core, CoreSpec
from .drift import DriftPolicy
from .errors import CheckpointError, ConfigError, NonFiniteInputError, NonFiniteStateError
from .inputs import as_targets, check_common, checked_pending, nonfinite_rows, predictions
from .model import StatefulNet
from .monitor import Alert, Monitor
from .readout import RLS_HINT, Readout, readout_config
from .keys import EncodedKeys, distinct_index, sort_key
from .sharding import KEYED_FORMAT as FORMAT
from .state import check_restored_state
from .traces import StateGrad, check_state_grad

__all__ = ["KeyedLearner"]



class KeyedLearner:
    """Prequential online learning of many keyed streams at once (see module doc).

    Args:
        model: the network every key starts from (one output; a configuration the compiled loop
            covers: bound 'clip' or 'tanh').
        per_key_weights: each key learns its own copy of the weights (and optimiser state and
            normalisers); otherwise all keys share one set and only the state is per key.
        optimizer, optimizer_kwargs, normalize_x, normalize_y, forget, normalize_clip, on_nonfinite: as for
            :class:`~psann_stream.learner.Learner`.
        max_keys: most keys held hot (``None``: unbounded); the least recently seen go cold.
        ttl: keys idle for more than this many events go cold (``None``: never).
        monitor: ``True``, a :class:`~psann_stream.monitor.Monitor`, or ``False``.
        threads: threads for per-key weights (``None``: numba's default, all cores).
        drift: a :class:`~psann_stream.drift.DriftPolicy`: a Page-Hinkley test per key on its error,
            resetting that key's state and/or optimiser at the event of detection
            (:attr:`last_drifted` marks the batch's events that triggered one).
        state_grad: ``"truncated"`` or ``"traced"`` (eligibility traces per key, as for
            :class:`~psann_stream.learner.Learner`).
        readout, rls_forgetting, rls_prior: how the output layer learns, as for
            :class:`~psann_stream.learner.Learner` (with per-key weights, each key has its own RLS).

    >>> from psann_stream import StatefulNet
    >>> kl = KeyedLearner(StatefulNet(2, hidden=(8,), seed=0), per_key_weights=True)
    >>> preds = kl.learn_batch(["a", "b", "a"], np.ones((3, 2)), np.array([1.0, -1.0, 1.0]))
    >>> sorted(kl.keys), preds.shape
    (['a', 'b'], (3,))
    """

    keyed = True  # the engine passes keys to learn_batch/predict_batch when True

    def __init__(
        self,
        model: StatefulNet,
        *,
        per_key_weights: bool = False,
        optimizer: str = "obgd",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        normalize_x: bool = True,
        normalize_y: bool = True,
        forget: float = 1.0,
        normalize_clip: float | None = 10.0,
        max_keys: int | None = None,
        ttl: int | None = None,
        monitor: bool | Monitor = True,
        check_every: int = 10_000,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        threads: int | None = None,
        drift: DriftPolicy | None = None,
        state_grad: StateGrad = "truncated",
        readout: Readout = "gradient",
        rls_forgetting: float = 0.999,
        rls_prior: float = 10.0,
        rls_error_clip: float | None = 10.0,
    ) -> None:
        why = fast_path_unsupported(model)
        if why:
            raise ConfigError(f"KeyedLearner runs on the compiled loop, which cannot run this model: {why}.")
        check_state_grad(state_grad, model.state_config, "KeyedLearner")
        self._rcfg = readout_config(readout, rls_forgetting, rls_prior, rls_error_clip, model.hidden[-1], "KeyedLearner")
        self.readout, self.rls_prior = readout, float(rls_prior)
        self.state_grad = state_grad
        self._traced = state_grad == "traced"
        for name, v in (("max_keys", max_keys), ("ttl", ttl), ("threads", threads)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"KeyedLearner.{name} = {v!r} is out of range: need None or an integer >= 1.")
        check_common("KeyedLearner", on_nonfinite=on_nonfinite, check_every=check_every, forget=forget,
                     normalize_clip=normalize_clip, drift=drift)
        self.drift = drift
        self.last_drifted: np.ndarray | None = None  # [N] bool of the last learn_batch, with a drift policy
        self._model = model.double()
        self.per_key_weights = bool(per_key_weights)
        self.optimizer_name = optimizer
        self.optimizer_settings = optimizer_settings(optimizer, optimizer_kwargs)
        self.normalize_x, self.normalize_y = bool(normalize_x), bool(normalize_y)
        self.forget = float(forget)
        self.eps = 1e-8
        self.normalize_clip = normalize_clip
        self.max_keys, self.ttl = max_keys, ttl
        self.monitor: Monitor | None = Monitor() if monitor is True else (monitor or None)
        self.check_every = check_every
        self.on_nonfinite = on_nonfinite
        self.threads = threads
        spec = CoreSpec.build(model, optimizer=optimizer, settings=self.optimizer_settings,
                              normalize_x=self.normalize_x, normalize_y=self.normalize_y, forget=self.forget,
                              eps=self.eps, clip=normalize_clip, traced=self._traced, readout=readout,
                              rcfg=self._rcfg, drift=drift)
        self._core = Core(spec, spec.fresh_row(model, float(rls_prior)),
                          per_row=WEIGHT_ARRAYS if self.per_key_weights else ())
        self._layout = spec.layout
        self._key_row: dict[Hashable, int] = {}
        self._row_key: list[Hashable] = []
        self._seen = np.empty(0, dtype=np.int64)  # event clock of each row's last event
        self._n_learned_row = np.empty(0, dtype=np.int64)
        self._cold: dict[Hashable, dict[str, Any]] = {}
        self.clock = 0
        self.n_learned = 0
        self.n_skipped = 0
        self._since_check = 0

    # ------------------------------------------------------------------ keys
    @property
    def keys(self) -> list[Hashable]:
        """Every key known: hot (in the arrays) and cold (evicted, kept for checkpoints)."""
        return list(self._row_key) + list(self._cold)

    @property
    def hot_keys(self) -> list[Hashable]:
        return list(self._row_key)

    def _grow(self, extra: int) -> None:
        n = len(self._row_key)
        self._core.reserve(n + extra, n)
        if self._seen.shape[0] < n + extra:
            cap = self._core.capacity
            seen, learned = np.zeros(cap, dtype=np.int64), np.zeros(cap, dtype=np.int64)
            seen[:n], learned[:n] = self._seen[:n], self._n_learned_row[:n]
            self._seen, self._n_learned_row = seen, learned

    def _add_key(self, key: Hashable) -> int:
        self._grow(1)
        r = len(self._row_key)
        cold = self._cold.pop(key, None)
        self._core.set_row(r, cold)
        self._seen[r] = self.clock
        self._n_learned_row[r] = cold["n_learned"] if cold is not None else 0
        self._key_row[key] = r
        self._row_key.append(key)
        return r

    def _rows_for(self, keys: Sequence[Hashable] | EncodedKeys) -> np.ndarray:
        """Row of every event's key, creating (or bringing back) keys as needed, in sorted order: one
        dict lookup per distinct key of the batch. :class:`~psann_stream.keys.EncodedKeys` (what the
        engine passes) are used as codes, without a Python object per row."""
        uniq, index = distinct_index(keys)
        rows = np.empty(len(uniq), dtype=np.int64)
        for i, k in enumerate(uniq):
            r = self._key_row.get(k)
            rows[i] = self._add_key(k) if r is None else r
        return rows[index]

    def _evict(self, protect: np.ndarray) -> None:
        n = len(self._row_key)
        if not n:
            return
        idle = np.zeros(n, dtype=bool)
        if self.ttl is not None:
            idle |= self._seen[:n] < self.clock - self.ttl
        if self.max_keys is not None and n - idle.sum() > self.max_keys:
            order = np.argsort(self._seen[:n], kind="stable")
            order = order[~idle[order]]
            idle[order[: n - int(idle.sum()) - self.max_keys]] = True
        idle[protect] = False
        if not idle.any():
            return
        keep = np.nonzero(~idle)[0]
        for r in np.nonzero(idle)[0]:
            key = self._row_key[r]
            self._cold[key] = self._core.row(r) | {"n_learned": int(self._n_learned_row[r])}
        self._core.keep_rows(keep)
        self._seen[: len(keep)] = self._seen[keep]
        self._n_learned_row[: len(keep)] = self._n_learned_row[keep]
        self._row_key = [self._row_key[r] for r in keep]
        self._key_row = {k: i for i, k in enumerate(self._row_key)}

    # ------------------------------------------------------------------ learning
    def learn_batch(self, keys: Sequence[Hashable] | EncodedKeys, X: Any, Y: Any) -> np.ndarray:
        """Learn events ``(keys[n], X[n], Y[n])`` (``Y`` ``[N]``; several outputs: ``[N, T]``); returns the
        prequential predictions, shaped as ``Y``. ``keys``:
        plain keys (str, int, float, bool, bytes) or :class:`~psann_stream.keys.EncodedKeys`."""
        return self._run(keys, X, Y, learn=True)

    def predict_batch(self, keys: Sequence[Hashable] | EncodedKeys, X: Any) -> np.ndarray:
        """Predictions for events without targets; each key's state advances through its events."""
        return self._run(keys, X, None, learn=False)

    @property
    def snapshot_width(self) -> int:
        """Values in one event's snapshot from :meth:`predict_pending`."""
        return self._core.snapshot_width

    def predict_pending(self, keys: Sequence[Hashable] | EncodedKeys, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predict events whose targets arrive later, each key's state advancing through its events;
        returns the predictions ``[N]`` and each event's snapshot (what it saw: see
        :meth:`Learner.predict_pending <psann_stream.learner.Learner.predict_pending>`), which
        :meth:`learn_pending` takes."""
        self._refuse_pending("predict_pending")
        X = self._checked_x("predict_pending: ", keys, X)
        N = X.shape[0]
        if not np.isfinite(X).all():
            raise NonFiniteInputError("predict_pending: X holds non-finite values; clean the input.")
        out, snaps = predictions(N, self.n_outputs), np.empty((N, self._core.snapshot_width))
        if N == 0:
            return out, snaps
        rows = self._rows_for(keys)
        done, code = self._core.predict_snapshots(rows, X, out=out, snapshots=snaps)
        if code:
            self._raise_state_error(done, code, keys)
        self.clock += N
        np.maximum.at(self._seen, rows, self.clock)
        self._evict(protect=np.unique(rows))
        return out, snaps

    def learn_pending(self, snapshots: np.ndarray, Y: Any, keys: Sequence[Hashable] | None = None) -> np.ndarray:
        """Learn events predicted by :meth:`predict_pending` from their snapshots, in the order given,
        with the weights as they are now (as :meth:`Learner.learn_pending
        <psann_stream.learner.Learner.learn_pending>`). The snapshot carries the key's state; with
        per-key weights ``keys`` (each event's key) says whose weights learn it, and each key's
        events are learned in their order. Returns the predictions with the weights before each step."""
        self._refuse_pending("learn_pending")
        S, Yv = checked_pending(snapshots, Y, self._core.snapshot_width, self.n_outputs)
        rows = None
        if self.per_key_weights:
            if keys is None or len(keys) != Yv.shape[0]:
                raise ConfigError("learn_pending: with per-key weights give each event's key (keys=, one per target).")
            rows = self._rows_for(keys)
        out = predictions(Yv.shape[0], self.n_outputs)
        done, code = self._core.learn_snapshots(S, Yv, out=out, monitor=self.monitor is not None, rows=rows)
        if code:
            raise NonFiniteStateError(
                f"learn_pending: label {done} of this call made the update non-finite from finite data; it and the "
                f"later labels of the call were not learned. Lower the learning rate (optimizer={self.optimizer_name!r}) "
                "or use optimizer='obgd', whose steps are bounded" + (RLS_HINT if self.readout == "rls" else "."))
        self._count_learned(rows, np.ones(Yv.shape[0], dtype=bool))
        return out

    def _refuse_pending(self, where: str) -> None:
        if self.drift is not None:
            raise ConfigError(f"{where}: the drift test needs each error in event order; build the KeyedLearner with "
                              "drift=None for delayed labels.")

    def learn_one(self, key: Hashable, x: Any, y: Any) -> float | np.ndarray:
        """Learn one event of ``key`` (``y`` a number; with several outputs ``T`` numbers); returns its
        prediction (a float; several outputs: an array ``[T]``)."""
        pred = self.learn_batch([key], np.asarray(x, dtype=np.float64)[None, :], as_targets("learn_one", y, 1, self.n_outputs))[0]
        return float(pred) if self.n_outputs == 1 else pred

    def _checked_x(self, where: str, keys: Sequence[Hashable] | EncodedKeys, X: Any) -> np.ndarray:
        """``X`` as a float64 ``[N, F]`` array with one key per row, or an error naming the mismatch."""
        X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
        if X.ndim != 2 or X.shape[1] != self._model.in_features:
            raise ConfigError(f"{where}X has shape {X.shape}; need [N, {self._model.in_features}].")
        if len(keys) != X.shape[0]:
            raise ConfigError(f"{where}{len(keys)} key(s) for {X.shape[0]} event(s); give one key per row of X.")
        return X

    def _count_learned(self, rows: np.ndarray | None, ok: np.ndarray) -> None:
        """Count the learned events ``ok`` (of rows ``rows``, for the per-key monitor; None: not per
        key) and consult the monitor every ``check_every`` events."""
        if rows is not None:
            np.add.at(self._n_learned_row, rows[ok], 1)
        self.n_learned += int(ok.sum())
        self._since_check += len(ok)
        if self._since_check >= self.check_every:
            self._since_check = 0
            self._check_monitor()

    def _run(self, keys: Sequence[Hashable] | EncodedKeys, X: Any, Y: Any, *, learn: bool) -> np.ndarray:
        X = self._checked_x("", keys, X)
        N, T = X.shape[0], self.n_outputs
        Yv = np.zeros(N if T == 1 else (N, T)) if Y is None else as_targets("learn_batch", Y, N, T)
        skip = nonfinite_rows(X, Yv, self.on_nonfinite, self.n_learned, "nothing in the batch was learned", keys=keys)
        if N == 0:
            self.last_drifted = np.zeros(0, dtype=np.bool_) if (self.drift is not None and learn) else None
            return predictions(0, T)
        rows = self._rows_for(keys)
        out = predictions(N, T)
        drifted = np.zeros(N, dtype=np.bool_)
        monitor = self.monitor is not None
        if self.per_key_weights:
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            cut = np.flatnonzero(np.diff(sorted_rows)) + 1
            starts = np.concatenate([[0], cut, [N]]).astype(np.int64)
            seg_rows = sorted_rows[starts[:-1]]
            status = np.zeros(len(seg_rows), dtype=np.int64)
            if self.threads is not None:
                numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
            self._core.run_keyed(order.astype(np.int64), starts, seg_rows, X, Yv, learn=learn, skip=skip, out=out,
                                 status=status, drifted=drifted, monitor=monitor)
            if status.any():
                code = int(status[np.nonzero(status)[0][0]])
                self._raise_state_error(code % 1_000_000_000, code // 1_000_000_000, keys)
        else:
            done, code = self._core.run(rows, X, Yv, learn=learn, skip=skip, out=out, drifted=drifted, monitor=monitor)
            if code:
                self._raise_state_error(done, code, keys)
        self.last_drifted = drifted if (self.drift is not None and learn) else None
        self.clock += N
        np.maximum.at(self._seen, rows, self.clock)
        if learn:
            self.n_skipped += int(skip.sum())
            self._count_learned(rows, ~skip)
        self._evict(protect=np.unique(rows))  # the batch's own keys stay hot
        return out

    def _raise_state_error(self, n: int, status: int, keys: Sequence[Hashable]) -> None:
        what = "the prediction" if status == 1 else "the update"
        raise NonFiniteStateError(
            f"event {n} of this batch (key {keys[n]!r}): {what} became non-finite from finite data; that event and "
            "the key's later events in the batch were not learned. Lower the learning rate "
            f"(optimizer={self.optimizer_name!r}) or use optimizer='obgd', whose steps are bounded"
            + (RLS_HINT if self.readout == "rls" else ".")
        )

    # ------------------------------------------------------------------ monitor, reset, persistence
    def _check_monitor(self) -> list[Alert]:
        if self.monitor is None:
            return []
        model = self._model
        found: list[Alert] = []
        n = len(self._row_key)
        if self.per_key_weights:
            stats = self._core.rows["mon"][:n]
            for r in self.monitor.flag_rows(stats, self._layout.widths, self._n_learned_row[:n]):
                bounds = layer_bounds(self._layout.lay, self._core.rows["theta"][r], model.state_config)
                found += self.monitor.check(stats[r], config=model.state_config, bounds=bounds, widths=self._layout.widths,
                                            optimizer=self.optimizer_name, settings=self.optimizer_settings, step=int(self._n_learned_row[r]),
                                            key=self._row_key[r])
            self._core.rows["mon"][:n, -1] = 0.0
        else:
            bounds = layer_bounds(self._layout.lay, self._core.shared["theta"], model.state_config)
            found += self.monitor.check(self._core.shared["mon"], config=model.state_config, bounds=bounds,
                                        widths=self._layout.widths, optimizer=self.optimizer_name, settings=self.optimizer_settings, step=self.n_learned)
            self._core.shared["mon"][-1] = 0.0
        return found

    @property
    def n_outputs(self) -> int:
        """Targets learned per event (the model's ``out_features``): predictions are ``[N]`` for one,
        ``[N, T]`` for several."""
        return int(self._layout.n_outputs)

    @property
    def in_features(self) -> int:
        """Width of the model's input."""
        return int(self._model.in_features)

    @property
    def alerts(self) -> list[Alert]:
        return self.monitor.alerts if self.monitor else []

    def reset(self, keys: Sequence[Hashable] | None = None, *, state: bool = True, optimizer: bool = False) -> None:
        """Reset the state of the given keys (hot or cold), or of every key, to ``init`` (their
        eligibility traces to 0), and/or restart
        their optimiser (as :meth:`Learner.reset <psann_stream.learner.Learner.reset>`; with shared
        weights the optimiser is shared, so ``optimizer=True`` restarts it for every key)."""
        init = self._model.state_config.init
        n = len(self._row_key)
        if keys is None:
            hot = list(range(n))
            cold = list(self._cold.values())
        else:
            hot, cold = [], []
            for k in keys:
                if k in self._key_row:
                    hot.append(self._key_row[k])
                elif k in self._cold:
                    cold.append(self._cold[k])
                else:
                    raise ConfigError(f"reset: unknown key {k!r}; known keys: {len(self.keys)}.")
        if state:
            self._core.rows["state"][hot] = init
            self._core.rows["traces"][hot] = 0.0
            for row in cold:
                row["state"][:] = init
                row["traces"][:] = 0.0
        if optimizer:
            name = restart_buffer(self.optimizer_name)
            prior = self._core.template["rls"]  # the readout restarts from its prior too
            if self.per_key_weights:
                self._core.rows[name][hot] = 0.0
                self._core.rows["rls"][hot] = prior
                for row in cold:
                    row[name][:] = 0.0
                    row["rls"][:] = prior
            else:
                self._core.shared[name][:] = 0.0
                self._core.shared["rls"][:] = prior

    def state_of(self, key: Hashable) -> np.ndarray:
        """The current state vector of ``key`` (all layers' units, concatenated)."""
        if key in self._key_row:
            return self._core.rows["state"][self._key_row[key]].copy()
        if key in self._cold:
            return self._cold[key]["state"].copy()
        raise ConfigError(f"state_of: unknown key {key!r}.")

    def state_dict(self) -> dict[str, Any]:
        """Every key's rows (hot and cold), the shared arrays and counters; keys are stored as a
        list in row order (keys must be str, int, float or bool to travel through torch.save)."""
        n = len(self._row_key)
        # Canonical order (by key), so the same learned state gives the same checkpoint whatever
        # order the keys first arrived in.
        order = np.array(sorted(range(n), key=lambda r: sort_key(self._row_key[r])), dtype=np.int64)
        cold_keys = sorted(self._cold, key=sort_key)
        return {
            "format": FORMAT,
            "state_config": self._model.state_config.to_dict(),
            "per_key_weights": self.per_key_weights,
            "optimizer": self.optimizer_name,
            "state_grad": self.state_grad,
            "readout": self.readout,
            "keys": [self._row_key[r] for r in order],
            "rows": {k: torch.from_numpy(v[:n][order].copy()) for k, v in self._core.rows.items()},
            "seen": torch.from_numpy(self._seen[:n][order].copy()),
            "n_learned_rows": torch.from_numpy(self._n_learned_row[:n][order].copy()),
            "shared": {k: torch.from_numpy(v.copy()) for k, v in self._core.shared.items()},
            "cold_keys": cold_keys,
            "cold": [{k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v) for k, v in self._cold[c].items()}
                     for c in cold_keys],
            "counters": {"clock": self.clock, "n_learned": self.n_learned, "n_skipped": self.n_skipped,
                         "since_check": self._since_check},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into a KeyedLearner built with the same model and settings."""
        if sd.get("format") != FORMAT:
            raise CheckpointError(f"unknown keyed learner state format {sd.get('format')!r}; expected {FORMAT!r}.")
        saved_grad = sd.get("state_grad", "truncated")  # older states: truncated learning, no traces
        saved_readout = sd.get("readout", "gradient")  # older states: gradient readout
        if (sd.get("per_key_weights") != self.per_key_weights or sd.get("optimizer") != self.optimizer_name
                or saved_grad != self.state_grad or saved_readout != self.readout):
            raise CheckpointError(
                f"the saved keyed learner used per_key_weights={sd.get('per_key_weights')}, optimizer="
                f"{sd.get('optimizer')!r}, state_grad={saved_grad!r}, readout={saved_readout!r}; build this one with "
                "the same settings."
            )
        try:
            rows = {k: v.numpy().copy() for k, v in sd["rows"].items()}
            if "traces" not in rows and not self._traced and "state" in rows:  # saved before traces existed
                rows["traces"] = np.zeros((rows["state"].shape[0], 0))
            shared = {k: v.numpy().copy() for k, v in sd["shared"].items()}
            if saved_readout == "gradient":  # saved before readouts existed: no readout matrix
                if self.per_key_weights and "rls" not in rows and "state" in rows:
                    rows["rls"] = np.zeros((rows["state"].shape[0], 0))
                if not self.per_key_weights:
                    shared.setdefault("rls", np.zeros(0))
            keys = list(sd["keys"])
            for k, v in rows.items():
                if v.shape[0] != len(keys):
                    raise ValueError(f"rows[{k!r}] holds {v.shape[0]} rows for {len(keys)} keys")
            core = Core(self._core.spec, self._core.template, per_row=self._core.rows)
            core.load(rows, shared)
            cold = {k: {n: (t.numpy().copy() if isinstance(t, torch.Tensor) else t) for n, t in row.items()}
                    for k, row in zip(sd["cold_keys"], sd["cold"])}
            for row in cold.values():
                row.setdefault("traces", np.zeros(0))  # saved before traces existed (truncated learning)
                if self.per_key_weights:
                    row.setdefault("rls", np.zeros(0))  # saved before readouts existed (gradient readout)
            c = sd["counters"]
            seen, learned = sd["seen"].numpy().copy(), sd["n_learned_rows"].numpy().copy()
            saved_states = [rows["state"].reshape(-1)] + [np.asarray(row["state"]).reshape(-1) for row in cold.values()]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"the keyed learner state cannot be loaded: {exc}. Was it saved by "
                                  "KeyedLearner.state_dict() for the same model?") from None
        check_restored_state(self._model.state_config, sd.get("state_config"), np.concatenate(saved_states),
                             "KeyedLearner.load_state_dict")
        self._core, self._cold = core, cold
        self._row_key = keys
        self._key_row = {k: i for i, k in enumerate(keys)}
        self._seen, self._n_learned_row = seen.astype(np.int64), learned.astype(np.int64)
        self.clock, self.n_learned, self.n_skipped = int(c["clock"]), int(c["n_learned"]), int(c["n_skipped"])
        self._since_check = int(c["since_check"])
