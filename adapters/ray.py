"""Scale-out on Ray: key shards as Ray actors behind the engine's learner interface.

:class:`ShardedLearner` starts ``shards`` actors, each holding a
:class:`~psann_stream.keyed.KeyedLearner` with per-key weights for the keys that :func:`shard_of`
assigns to it (a stable hash, the same in every process and run). The
:class:`~psann_stream.engine.Engine` drives it like a local learner: it reads and checks the
source, and :meth:`ShardedLearner.submit_batch` splits each batch by shard with fancy indexing (a
copy of just those rows, the equivalent of Arrow ``take``; a slice would ship its whole parent
buffer), sends one call per shard and returns at once. At most ``Engine(max_in_flight=...)``
batches are in flight (backpressure); the engine finishes them in order.

Checkpoints: the engine finishes every in-flight batch, then :meth:`ShardedLearner.state_dict`
asks every shard for its keys (Ray runs one caller's calls to an actor in submission order, so each
answer reflects exactly the batches before it) and merges them into one canonical keyed state
(:func:`~psann_stream.sharding.merge_key_states`), saved with the source position and the output part
count. That state does not depend on the number of shards: :meth:`load_state_dict` splits it by
:func:`shard_of` for however many shards this learner has, which is how a run rescales (a
checkpoint of N shards restores into M), and a single-process engine with a
:class:`~psann_stream.keyed.KeyedLearner` can resume it too.

Failures: a dead shard surfaces as :class:`ShardFailure` at the next result; :func:`run_with_recovery`
then starts fresh shards and resumes the engine from its last checkpoint, so the state is exactly
once and the output has no lost or repeated row. Actors are created with ``max_restarts=0`` and
``max_task_retries=0``: a retried call could run out of order, and recovery goes through the
checkpoint instead.

Needs ``pip install 'psann-stream[ray]'`` and a running Ray (``ray.init(...)``, or
``ray.init(address="auto")`` to join a cluster) before the learner is built.

Only per-key weights shard: with shared weights every event updates the same weights, so the keys
are not independent and the result would depend on the shard count.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from psann_stream.engine import Engine, RunStats
from psann_stream.inputs import predictions
from psann_stream.errors import ConfigError, PsannStreamError
from psann_stream.keyed import KeyedLearner
from psann_stream.keys import EncodedKeys, shard_of
from psann_stream.sharding import merge_key_states, select_keys
from psann_stream.model import StatefulNet
from psann_stream.monitor import Alert

__all__ = ["ShardFailure", "ShardedLearner", "require_ray", "run_with_recovery", "shard_of"]


class ShardFailure(PsannStreamError):
    """A shard actor died (or its node did); resume from the last checkpoint (:func:`run_with_recovery`)."""


def require_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the Ray adapter needs Ray: pip install 'psann-stream[ray]' (or pip install 'ray>=2.60,<2.61')."
        ) from None
    return ray


class _Shard:
    """The actor: one KeyedLearner for this shard's keys."""

    def __init__(self, model: StatefulNet, kwargs: Mapping[str, Any]) -> None:
        import torch

        torch.set_num_threads(1)
        self.learner = KeyedLearner(model, **kwargs)
        self._alerts_seen = 0

    def run(self, keys: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, list[Alert], np.ndarray | None]:
        X = np.ascontiguousarray(x, dtype=np.float64)
        preds = self.learner.predict_batch(keys, X) if y is None else self.learner.learn_batch(keys, X, y)
        alerts = self.learner.alerts
        new, self._alerts_seen = alerts[self._alerts_seen:], len(alerts)
        return preds, list(new), self.learner.last_drifted

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(sd)

    def reset(self, keys: Sequence[Hashable] | None, state: bool, optimizer: bool) -> None:
        known = set(self.learner.keys)
        mine = None if keys is None else [k for k in keys if k in known]
        if mine is None or mine:
            self.learner.reset(mine, state=state, optimizer=optimizer)

    def known_keys(self) -> list[Hashable]:
        return self.learner.keys


class _Pending:
    """Handle of one submitted batch: ``result()`` waits for the shards and reassembles the
    predictions in the batch's row order."""

    __slots__ = ("owner", "n", "parts", "drifted")

    def __init__(self, owner: ShardedLearner, n: int, parts: list[tuple[int, np.ndarray, Any]]) -> None:
        self.owner, self.n, self.parts = owner, n, parts
        self.drifted: np.ndarray | None = None  # after result(): [N] bool, with a drift policy

    def result(self) -> np.ndarray:
        out = predictions(self.n, self.owner.n_outputs)
        values = self.owner._get([ref for _, _, ref in self.parts])
        if self.owner.drift is not None:
            self.drifted = np.zeros(self.n, dtype=np.bool_)
        for (_, idx, _), (preds, alerts, drifted) in zip(self.parts, values):
            out[idx] = preds
            self.owner._alerts.extend(alerts)
            if drifted is not None and self.drifted is not None:
                self.drifted[idx] = drifted
        return out


class ShardedLearner:
    """A keyed learner whose keys live in ``shards`` Ray actors (see module doc).

    Args:
        model: the network every key starts from (as for :class:`~psann_stream.keyed.KeyedLearner`).
        shards: number of actors (>= 1).
        num_cpus: CPUs Ray reserves per actor (fractions allowed); the cluster must have
            ``shards * num_cpus`` free, or the actors would wait forever, so this is checked.
        **keyed_kwargs: passed to every shard's :class:`~psann_stream.keyed.KeyedLearner`
            (``per_key_weights`` is forced to True; ``threads`` defaults to 1 per shard).

    Example (tests/test_ray.py runs the same on a real local Ray)::

        ray.init(num_cpus=2, include_dashboard=False)
        lrn = ShardedLearner(StatefulNet(2, hidden=(8,)), shards=2, num_cpus=0.5)
        preds = lrn.learn_batch(np.array(["a", "b"]), np.ones((2, 2)), np.zeros(2))  # shape (2,)
        Engine(source, lrn, ColumnMap("x", target="y", key="k"), checkpoint=...).run()
    """

    keyed = True

    def __init__(self, model: StatefulNet, shards: int = 2, *, num_cpus: float = 1.0, **keyed_kwargs: Any) -> None:
        ray = require_ray()
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ConfigError(f"ShardedLearner.shards = {shards!r} must be an integer >= 1.")
        if not num_cpus >= 0:
            raise ConfigError(f"ShardedLearner.num_cpus = {num_cpus!r} must be >= 0.")
        if keyed_kwargs.pop("per_key_weights", True) is not True:
            raise ConfigError(
                "ShardedLearner shards keys with their own weights only (per_key_weights=True): with shared "
                "weights the result would depend on the number of shards. Use a KeyedLearner in one process."
            )
        if not ray.is_initialized():
            raise ConfigError(
                "ShardedLearner needs a running Ray: call ray.init(...) first (ray.init(address='auto') joins a "
                "cluster started with `ray start`)."
            )
        total = ray.cluster_resources().get("CPU", 0.0)
        if shards * num_cpus > total:
            raise ConfigError(
                f"ShardedLearner: {shards} shard(s) x num_cpus={num_cpus} need {shards * num_cpus:g} CPUs but the Ray "
                f"cluster has {total:g}; the actors would never start. Lower num_cpus (fractions are fine) or shards."
            )
        keyed_kwargs.setdefault("threads", 1)
        KeyedLearner(model, per_key_weights=True, **keyed_kwargs)  # validate the settings here, not in an actor
        self.model, self.shards, self.num_cpus = model, shards, float(num_cpus)
        self.drift = keyed_kwargs.get("drift")
        self.keyed_kwargs = {"per_key_weights": True, **keyed_kwargs}
        self._alerts: list[Alert] = []
        self._shard_cache: dict[Hashable, int] = {}
        self._actor_class = ray.remote(_Shard).options(num_cpus=self.num_cpus, max_restarts=0, max_task_retries=0)
        self.actors: list[Any] = []
        self.restart()

    # ------------------------------------------------------------------ actors
    def restart(self) -> None:
        """Kill the shard actors (dead or alive) and start fresh ones with no keys; then
        :meth:`load_state_dict` a checkpoint (the engine's resume does)."""
        self.close()
        self.actors = [self._actor_class.remote(self.model, self.keyed_kwargs) for _ in range(self.shards)]
        self._get([a.known_keys.remote() for a in self.actors])  # wait until they are up

    def close(self) -> None:
        """Kill the shard actors."""
        ray = require_ray()
        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def _get(self, refs: list[Any]) -> list[Any]:
        ray = require_ray()
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            raise ShardFailure(
                f"a shard actor died ({type(exc).__name__}); its keys' state since the last checkpoint is lost. "
                "Resume from the last checkpoint: run_with_recovery(engine) does it, or restart() and "
                "Engine.run(resume=True)."
            ) from exc

    # ------------------------------------------------------------------ routing and learning
    def shards_for(self, keys: np.ndarray | EncodedKeys) -> np.ndarray:
        """Shard of every key, ``[N]`` int64: one hash per distinct key ever seen (cached)."""
        if isinstance(keys, EncodedKeys):
            uniq, index = keys.present()
        else:
            found, inverse = np.unique(np.asarray(keys), return_inverse=True)
            uniq, index = found.tolist(), inverse.reshape(-1)
        table = np.empty(len(uniq), dtype=np.int64)
        cache, n = self._shard_cache, self.shards
        for i, k in enumerate(uniq):
            s = cache.get(k)
            if s is None:
                s = cache[k] = shard_of(k, n)
            table[i] = s
        return table[index]

    def submit_batch(self, keys: np.ndarray | EncodedKeys, x: np.ndarray, y: np.ndarray | None) -> _Pending:
        """Send the events to their shards (learn when ``y`` is given, else predict); returns a handle
        whose ``result()`` is the predictions ``[N]`` in row order."""
        keys = keys if isinstance(keys, EncodedKeys) else np.asarray(keys)
        n = len(keys)
        if x.shape[0] != n or (y is not None and len(y) != n):
            raise ConfigError(f"{n} key(s) for {x.shape[0]} feature row(s) and {None if y is None else len(y)} target(s).")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ConfigError(f"x has shape {x.shape}; need [N, {self.in_features}].")
        which = self.shards_for(keys) if n else np.empty(0, dtype=np.int64)
        parts = []
        for s in range(self.shards):
            idx = np.flatnonzero(which == s)
            if len(idx):
                ref = self.actors[s].run.remote(keys[idx], x[idx], None if y is None else y[idx])
                parts.append((s, idx, ref))
        return _Pending(self, n, parts)

    def learn_batch(self, keys: Sequence[Hashable], X: Any, Y: Any) -> np.ndarray:
        """Learn events ``(keys[n], X[n], Y[n])`` and wait; returns the prequential predictions ``[N]``."""
        return self.submit_batch(np.asarray(keys), np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)).result()

    def predict_batch(self, keys: Sequence[Hashable], X: Any) -> np.ndarray:
        """Predictions for events without targets (each key's state advances)."""
        return self.submit_batch(np.asarray(keys), np.asarray(X, dtype=np.float64), None).result()

    def reset(self, keys: Sequence[Hashable] | None = None, *, state: bool = True, optimizer: bool = False) -> None:
        """Reset the state and/or optimiser of the given keys, or of every key, on their shards."""
        self._get([a.reset.remote(None if keys is None else list(keys), state, optimizer) for a in self.actors])

    @property
    def in_features(self) -> int:
        return int(self.model.in_features)

    @property
    def n_outputs(self) -> int:
        """Targets learned per event (the model's ``out_features``): predictions ``[N]`` or ``[N, T]``."""
        return int(self.model.out_features)

    @property
    def alerts(self) -> list[Alert]:
        """Monitor alerts of every shard, in the order their batches finished."""
        return self._alerts

    @property
    def keys(self) -> list[Hashable]:
        """Every key known to any shard."""
        return [k for ks in self._get([a.known_keys.remote() for a in self.actors]) for k in ks]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Every shard's keys merged into one canonical KeyedLearner state (independent of the shard
        count). Call it when no batch is in flight (the engine does); Ray's per-caller ordering makes
        each shard's answer reflect exactly the calls made before it."""
        return merge_key_states(self._get([a.state_dict.remote() for a in self.actors]))

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Give each shard the keys :func:`shard_of` assigns it (any number of shards, any saved
        shard count: this is how a run rescales); restarts dead actors first."""
        alive = self.actors and all(self._alive(a) for a in self.actors)
        if not alive:
            self.restart()
        n = self.shards
        parts = [select_keys(sd, lambda k, s=s: shard_of(k, n) == s, totals=(s == 0)) for s in range(n)]
        self._get([a.load_state_dict.remote(p) for a, p in zip(self.actors, parts)])

    def _alive(self, actor: Any) -> bool:
        try:
            self._get([actor.known_keys.remote()])
        except ShardFailure:
            return False
        return True


def run_with_recovery(engine: Engine, *, max_restarts: int = 3, max_events: int | None = None,
                      resume: bool = False) -> RunStats:
    """``engine.run(...)``; when a shard dies, start fresh shards and resume from the engine's last
    checkpoint (at most ``max_restarts`` times). The engine needs a checkpoint policy and a
    :class:`ShardedLearner`. ``max_events`` counts per attempt, as in :meth:`Engine.run`."""
    if engine.policy is None:
        raise ConfigError("run_with_recovery needs an Engine with a checkpoint policy (recovery resumes from it).")
    if not isinstance(engine.learner, ShardedLearner):
        raise ConfigError("run_with_recovery needs an Engine whose learner is a ShardedLearner.")
    attempt = 0
    while True:
        try:
            return engine.run(max_events, resume=resume or attempt > 0)
        except ShardFailure:
            attempt += 1
            if attempt > max_restarts:
                raise
            engine.learner.restart()
