"""Delayed labels: predict each event now, learn it when its label arrives.

Real feeds rarely carry the target with the event: the temperature one hour ahead arrives an hour
later, a fraud label days later, some never. :class:`DelayedLabels` wraps a learner so that

* :meth:`~DelayedLabels.predict` predicts events by id (the state advances through them, as for any
  event) and keeps, per event, what the learner saw: the state before it, its normalised input and,
  with ``state_grad="traced"``, its traces (:meth:`Learner.predict_pending
  <psann_stream.learner.Learner.predict_pending>`);
* :meth:`~DelayedLabels.label` learns each labelled event from that snapshot, in label-arrival order,
  with the weights as they are when the label arrives. A label that arrives right after its
  prediction is learned exactly as ``learn_batch`` would (tested);
* a prediction waits while at most ``horizon`` events are predicted after it. Then it expires: it is
  counted, and its id goes to the dead letters with the reason; a label that arrives after that is
  dead-lettered too, saying it came too late. Labels for unknown ids and non-finite labels are
  dead-lettered, never learned and never dropped silently;
* :meth:`~DelayedLabels.state_dict` holds the learner and every pending snapshot, so a resumed run
  equals an uninterrupted one (tested).

Memory: one snapshot per pending prediction, ``8 * (units + F)`` bytes (plus 8 per trace value with
traced learning: 14-28 KB for 10-32-32-1), and at most ``horizon`` of them.

>>> import numpy as np
>>> from psann_stream import Learner, StatefulNet
>>> dl = DelayedLabels(Learner(StatefulNet(2, hidden=(8,), seed=0)), horizon=100)
>>> preds = dl.predict([10, 11], np.zeros((2, 2)))      # labels come later
>>> dl.label([11, 99], [0.5, 1.0]).tolist()             # 99 was never predicted
[True, False]
>>> dl.n_pending, [d.kind for d in dl.take_dead_letters()]
(1, ['unknown'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, NonFiniteStateError

__all__ = ["DeadLetter", "DelayedLabels"]

FORMAT = "psann_stream.delayed/1"
NOT_WAITING = "no prediction with this id is waiting (never predicted, or already labelled)"
_STATE_KEYS = ("learner", "horizon", "seq", "pending_ids", "pending_seq", "pending_snapshots", "pending_info",
               "pending_keys", "expired", "dead_letters", "counters")


@dataclass(frozen=True)
class DeadLetter:
    """An id that will not be learned, and why. ``kind``: ``"expired"`` (a prediction whose label did
    not come within the horizon), ``"late"`` (a label after that), ``"unknown"`` (a label for no
    waiting prediction), ``"bad label"`` (a non-finite label) or ``"failed"`` (a label of a call whose
    learning stopped on a non-finite update: the error names the event, the labels before it in the
    call were learned); ``info`` is what the caller gave with the row the letter is about (the
    prediction, or the label), e.g. its source position."""

    id: Hashable
    kind: str
    reason: str
    info: Any = None


class DelayedLabels:
    """A learner that predicts events by id now and learns them when their labels arrive.

    Args:
        learner: a :class:`~psann_stream.learner.Learner` on the compiled path, or a
            :class:`~psann_stream.keyed.KeyedLearner` (then :meth:`predict` takes each event's key;
            with per-key weights a label is learned by its key's weights), without a drift policy
            (its test needs errors in event order).
        horizon: a prediction waits for its label while at most this many events are predicted after
            it (>= 1); then it expires.
    """

    def __init__(self, learner: Any, *, horizon: int = 10_000) -> None:
        if not hasattr(learner, "predict_pending"):
            raise ConfigError(f"DelayedLabels: {type(learner).__name__} cannot learn delayed labels; use a Learner or a "
                              "KeyedLearner.")
        if getattr(learner, "drift", None) is not None:
            raise ConfigError("DelayedLabels: the learner has a drift policy, whose test needs each error in event order; "
                              "build the learner with drift=None.")
        if int(getattr(learner, "n_outputs", 1)) != 1:
            raise ConfigError(f"DelayedLabels: the learner has {learner.n_outputs} outputs; delayed labels take one target "
                              "per event (learn several targets with their rows, or one DelayedLabels per target).")
        self._width = learner.snapshot_width  # refuses a learner on the torch reference path
        self._keyed = hasattr(learner, "per_key_weights")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ConfigError(f"DelayedLabels: horizon = {horizon!r} must be an integer >= 1 (events).")
        self.learner = learner
        self.horizon = horizon
        self._seq = 0  # events predicted so far
        self._pending: dict[Hashable, tuple[int, np.ndarray, Any, Any]] = {}  # id -> (seq, snapshot, info, key), in order
        self._expired: dict[Hashable, int] = {}  # id -> seq at which it expired (kept for another horizon)
        self._dead: list[DeadLetter] = []
        self.n_learned = 0
        self.n_expired = 0
        self.n_dead = 0

    # ------------------------------------------------------------------ the stream
    @property
    def n_pending(self) -> int:
        """Predictions waiting for their labels."""
        return len(self._pending)

    @property
    def in_features(self) -> int:
        return int(self.learner.in_features)

    @property
    def keyed(self) -> bool:
        """Whether :meth:`predict` takes keys (a KeyedLearner inside)."""
        return self._keyed

    @property
    def alerts(self) -> list[Any]:
        return self.learner.alerts

    def predict(self, ids: Sequence[Hashable], X: Any, keys: Sequence[Hashable] | None = None,
                info: Sequence[Any] | None = None) -> np.ndarray:
        """Predict events ``X [N, F]`` with ids ``ids`` (unique among those waiting; with a
        KeyedLearner, ``keys`` gives each event's key); returns the predictions. Each event then
        waits for its label; those waiting longer than ``horizon`` events expire. ``info`` (one per
        event, optional) comes back in the event's dead letter if it expires."""
        ids = list(ids)
        if self._keyed != (keys is not None):
            raise ConfigError("DelayedLabels.predict: give keys= with a KeyedLearner, and only then.")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != len(ids):
            raise ConfigError(f"DelayedLabels.predict: {len(ids)} id(s) for X of shape {X.shape}; give one id per row.")
        seen = set()
        for i in ids:
            if i in self._pending or i in seen:
                raise ConfigError(f"DelayedLabels.predict: id {i!r} is already waiting for its label; ids must be unique "
                                  "among waiting predictions (nothing was predicted).")
            seen.add(i)
        infos = [None] * len(ids) if info is None else list(info)
        if len(infos) != len(ids):
            raise ConfigError(f"DelayedLabels.predict: {len(infos)} info value(s) for {len(ids)} id(s).")
        preds, snaps = self.learner.predict_pending(*((keys,) if self._keyed else ()), X)
        keys = [None] * len(ids) if keys is None else list(keys)
        for n, i in enumerate(ids):
            self._pending[i] = (self._seq + n, snaps[n], infos[n], keys[n])
        self._seq += len(ids)
        self._expire()
        return preds

    def label(self, ids: Sequence[Hashable], Y: Any, info: Sequence[Any] | None = None) -> np.ndarray:
        """Labels ``Y [N]`` for the events ``ids``, in the order they arrived; each waiting event is
        learned from its snapshot, in that order. Returns which labels were learned; the others are
        in :meth:`take_dead_letters` with the reason (and their ``info``, one per label, optional)."""
        ids = list(ids)
        Y = np.asarray(Y, dtype=np.float64).reshape(-1)
        if Y.shape[0] != len(ids):
            raise ConfigError(f"DelayedLabels.label: {len(ids)} id(s) but {Y.shape[0]} label(s).")
        infos = [None] * len(ids) if info is None else list(info)
        if len(infos) != len(ids):
            raise ConfigError(f"DelayedLabels.label: {len(infos)} info value(s) for {len(ids)} id(s).")
        learned = np.zeros(len(ids), dtype=bool)
        snaps, targets, keys = [], [], []
        for n, (i, y) in enumerate(zip(ids, Y)):
            if not np.isfinite(y):
                self._dead_letter(i, "bad label", f"label {y} is not finite (the prediction keeps waiting for a valid one)",
                                  infos[n])
            elif i in self._pending:
                _, snap, _, key = self._pending.pop(i)
                snaps.append(snap)
                keys.append(key)
                targets.append(y)
                learned[n] = True
            elif i in self._expired:
                self._dead_letter(i, "late", f"label arrived after the horizon: its prediction waited {self.horizon} "
                                  "events and expired; raise horizon to learn later labels", infos[n])
            else:
                self._dead_letter(i, "unknown", NOT_WAITING, infos[n])
        if snaps:
            try:
                if getattr(self.learner, "per_key_weights", False):  # each label learned by its key's weights
                    self.learner.learn_pending(np.stack(snaps), np.array(targets), keys=keys)
                else:
                    self.learner.learn_pending(np.stack(snaps), np.array(targets))
            except NonFiniteStateError as exc:  # the learner names the event; these labels do not vanish
                for i in (i for i, ok in zip(ids, learned) if ok):
                    self._dead_letter(i, "failed", f"learning this call's labels stopped: {exc}")
                raise
            self.n_learned += len(snaps)
        return learned

    def take_dead_letters(self) -> list[DeadLetter]:
        """The dead letters since the last call (expired predictions, late, unknown or bad labels)."""
        out, self._dead = self._dead, []
        return out

    def waiting(self, ids: Sequence[Hashable]) -> np.ndarray:
        """Which of ``ids`` have a prediction waiting for its label."""
        return np.array([i in self._pending for i in ids], dtype=bool)

    def _dead_letter(self, i: Hashable, kind: str, reason: str, info: Any = None) -> None:
        self._dead.append(DeadLetter(i, kind, reason, info))
        self.n_dead += 1

    def _expire(self) -> None:
        oldest = self._seq - 1 - self.horizon  # a prediction expires once more than horizon events follow it
        while self._pending:
            i, (seq, _, info, _) = next(iter(self._pending.items()))
            if seq >= oldest:
                break
            del self._pending[i]
            self._expired[i] = self._seq
            self.n_expired += 1
            self._dead_letter(i, "expired", f"no label within the horizon ({self.horizon} events); the prediction expired",
                              info)
        while self._expired:  # remember expired ids for one more horizon, to say why a late label is refused
            i, seq = next(iter(self._expired.items()))
            if seq >= self._seq - self.horizon:
                break
            del self._expired[i]

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The learner's state and every waiting snapshot (a resumed run equals an uninterrupted one)."""
        width = self._width
        pending = list(self._pending.items())
        return {
            "format": FORMAT, "learner": self.learner.state_dict(), "horizon": self.horizon, "seq": self._seq,
            "pending_ids": [i for i, _ in pending],
            # tensors: checkpoints load with torch's safe loader, which takes no numpy arrays
            "pending_seq": torch.tensor([s for _, (s, _, _, _) in pending], dtype=torch.int64),
            "pending_snapshots": torch.from_numpy(np.stack([v for _, (_, v, _, _) in pending]) if pending
                                                  else np.empty((0, width))),
            "pending_info": [f for _, (_, _, f, _) in pending],
            "pending_keys": [k for _, (_, _, _, k) in pending],
            "expired": dict(self._expired), "dead_letters": [(d.id, d.kind, d.reason, d.info) for d in self._dead],
            "counters": {"n_learned": self.n_learned, "n_expired": self.n_expired, "n_dead": self.n_dead},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the learner, then the waiting snapshots); refuses a foreign one."""
        if not isinstance(sd, Mapping) or sd.get("format") != FORMAT:
            found = sd.get("format") if isinstance(sd, Mapping) else type(sd).__name__
            raise CheckpointError(f"DelayedLabels.load_state_dict: not a delayed-labels checkpoint (format {found!r}, "
                                  f"expected {FORMAT!r}); nothing was loaded.")
        missing = sorted(set(_STATE_KEYS) - set(sd))
        if missing:
            raise CheckpointError(f"DelayedLabels.load_state_dict: the checkpoint has no {', '.join(missing)}; it is "
                                  "corrupt or from another version. Nothing was loaded.")
        ids, seqs, snaps = list(sd["pending_ids"]), _array(sd["pending_seq"]), _array(sd["pending_snapshots"])
        width = self._width
        counts = {len(ids), seqs.shape[0], snaps.shape[0], len(sd["pending_info"]), len(sd["pending_keys"])}
        if len(counts) != 1 or (len(ids) and snaps.shape[1] != width):
            raise CheckpointError(f"DelayedLabels.load_state_dict: {len(ids)} pending id(s), {seqs.shape[0]} sequence "
                                  f"number(s) and snapshots of shape {snaps.shape} (this learner's width: {width}) do "
                                  "not match; the checkpoint is corrupt or from another model. Nothing was loaded.")
        self.learner.load_state_dict(sd["learner"])
        self.horizon, self._seq = int(sd["horizon"]), int(sd["seq"])
        infos, keys = list(sd["pending_info"]), list(sd["pending_keys"])
        self._pending = {i: (int(s), np.array(v, dtype=np.float64), f, k)
                         for i, s, v, f, k in zip(ids, seqs, snaps, infos, keys)}
        self._expired = dict(sd["expired"])
        self._dead = [DeadLetter(*d) for d in sd["dead_letters"]]
        c = sd["counters"]
        self.n_learned, self.n_expired, self.n_dead = int(c["n_learned"]), int(c["n_expired"]), int(c["n_dead"])


def _array(v: Any) -> np.ndarray:
    return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
