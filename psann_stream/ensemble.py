"""Ensemble: several learners on the same events, predicting with an online mixture of them that
follows whichever predicts best now (fixed-share exponentially weighted averaging).

No single configuration wins every stream (measured in docs/scenarios.md): traced memory wins on
chaotic and regime-switching streams, Adam on a drifting static regression, persistence on slow
real series. An :class:`Ensemble` runs K members side by side, each in its own compiled loop, and
for every event predicts ``sum_k w_k p_k`` with weights learned from the members' past errors:

1. each member predicts the event (its own prequential prediction) and learns it, as it would alone
   (the members never see the mixture; they learn the same events whatever the weights);
2. the members' predictions are limited to ``mean_y +- prediction_clip * std_y`` (the running target
   statistics before the event): one member's absurd prediction cannot move the mixture further;
3. ``y_hat = sum_k w_k p_k`` with the weights before the event;
4. with the losses ``l_k = ((p_k - y) / std_y)^2 / s``: squared error in target standard deviations,
   over ``s``, the mixture's own recent squared error in the same units (an exponential average,
   ``LOSS_SCALE_DECAY`` 0.99 per event, limited to ``[1e-6, 1]``): ``v_k = w_k exp(-eta l_k)``,
   normalised, then ``w_k = (1 - share) v_k + share / K`` (fixed share, Herbster & Warmuth 1998);
   ``y`` is folded into the target statistics and the mixture's error into ``s``. An event that every
   member misses by more than ``prediction_clip`` standard deviations (an outlier target) leaves the
   weights and ``s`` as they were, and is counted (:attr:`Ensemble.n_missed_by_all`): its losses
   would differ by amounts proportional to the outlier, so it would hand the weights to whichever
   member happened to predict highest (or lowest), and the outlier's error would hold ``s`` at its
   cap for hundreds of events (keyed shock copies: post-change MAE 0.031 -> 0.018, docs/scenarios.md).

Why ``s``: it makes ``eta`` mean the same on an easy stream as on a hard one. Without it a mixture
whose members err by 0.03 standard deviations sees their losses differ by ~1e-3 per event, and the
weights need thousands of events to follow the best member (Mackey-Glass one step ahead: the mixture
2.7x worse than its best member; with ``s``: 1.04x; docs/scenarios.md).

What the share guarantees: every weight stays ``>= share / K`` however long its member was worse.
With two members, once one predicts better by a margin of at least ``g`` per event in squared target
standard deviations (``s <= 1`` only makes the losses' margin larger), its weight
passes one half within ``floor(ln((2 - share) / share) / (eta g)) + 1`` events, whatever came before
(its odds start at ``share / (2 - share)`` or better and grow by ``exp(eta g)`` per event; the share
step only pulls a weight below one half up). Without the share, a member that lost for T events
needs about T events to recover. The weights always sum to 1. (Both tested.)

Several targets: members that predict ``T`` targets per event (``n_outputs = T``, all the same) make
an ensemble of ``T`` targets. Each target runs steps 2-4 on the members' predictions of it with its
own weights, loss scale and target statistics, so a member can lead on one target and trail on
another; it equals ``T`` one-target mixtures, bit for bit (tested), at the cost of one set of members.

Threads: the members learn a batch at the same time, one thread each (up to ``threads``); their
compiled loops release the GIL, so on several cores the members' costs overlap instead of adding up
(docs/learner.md has the measured rates). Each member computes what it would alone, so the results
are the same bit for bit with any number of threads. Keyed members with shared weights learn their
events in order, as unkeyed ones do, and run in threads the same way; an ensemble with a member that
learns per-key weights runs its members one after the other (that member's loop spreads its keys
over the cores itself, and numba's default threading layer runs one such loop at a time).

Events whose input or target is not finite never reach a member (``on_nonfinite``: ``"raise"``, or
``"skip"`` with a NaN prediction and nothing changed). A member that raises (e.g. a non-finite
update) stops the batch with that member named; the other members may have learned the batch.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from numba import njit

from . import _fastpath as fp
from .errors import CheckpointError, ConfigError
from .experts import Change, LinearRLS, Persistence
from .keyed import KeyedLearner
from .keys import EncodedKeys
from .inputs import as_float64, as_targets, nonfinite_rows, predictions
from .learner import Learner
from .model import StatefulNet
from .monitor import Alert
from .normalize import RunningStats
from .reservoir import EchoState
from .state import StateConfig

__all__ = ["DEFAULT_ETA", "DEFAULT_SHARE", "Ensemble", "default_ensemble", "describe_weights"]

DEFAULT_ETA = 0.5  # learning rate of the weights, per unit of the scaled loss (chosen on the suite)
LOSS_SCALE_DECAY = 0.99  # the exponential average of the mixture's squared error that scales the losses
LOSS_SCALE_FLOOR = 1e-6  # ... and its floor: a mixture that is exact for a while does not divide by 0
DEFAULT_SHARE = 0.01  # fixed share: the weight every member keeps, times K
FORMAT = "psann_stream.ensemble/1"
MAX_LAGS = 32  # default_ensemble's lagged linear member: events of inputs it regresses on, at most
LAGGED_WIDTH = 64  # ... and regressors at most (lags = min(MAX_LAGS, LAGGED_WIDTH // in_features))
ECHO_UNITS = 50  # default_ensemble's echo-state member: reservoir units (100 cost 8.9 us per event against 2.3)


@njit(cache=True, error_model="numpy")
def _mix_events(P, Y, learn, w, scale, ym, ym2, yws, yf, ye, nclip, eta, share, pclip, out, W, loss, sd, missed):
    """The mixture over the members' predictions ``P [N, T, K]`` of consecutive events (module doc,
    steps 2-4), one per target ``t``: ``out[n, t]`` is event ``n``'s prediction with the weights
    ``W[n, t] = w[t]`` held before it; with ``learn`` the weights ``w [T, K]``, the loss scales
    ``scale [T]`` and the target statistics (``ym, ym2 [T], yws``) then take ``Y[n] [T]``, except
    that a target every member missed by more than ``pclip`` standard deviations leaves ``w[t]`` and
    ``scale[t]`` as they were and counts in ``missed[t]``."""
    N, T, K = P.shape
    for n in range(N):
        for t in range(T):
            sy = fp._std(ym, ym2, yws, yf, ye, t)
            sd[t] = sy
            my = ym[t]
            limit = pclip > 0.0 and yws[1] >= 2.0
            acc = 0.0
            for k in range(K):
                p = P[n, t, k]
                if limit:
                    p = min(max(p, my - pclip * sy), my + pclip * sy)
                loss[k] = p
                W[n, t, k] = w[t, k]
                acc += w[t, k] * p
            out[n, t] = acc
            if not learn:
                continue
            s = min(max(scale[t], LOSS_SCALE_FLOOR), 1.0)
            low = math.inf
            for k in range(K):
                r = (loss[k] - Y[n, t]) / sy
                loss[k] = r * r / s
                low = min(low, loss[k])
            if limit and low * s > pclip * pclip:  # every member missed it by > pclip deviations: an outlier
                missed[t] += 1
                continue
            total = 0.0
            for k in range(K):
                w[t, k] *= math.exp(-eta * (loss[k] - low))  # the best member's factor is 1: no underflow to 0/0
                total += w[t, k]
            for k in range(K):
                w[t, k] = (1.0 - share) * (w[t, k] / total) + share / K
            r = (acc - Y[n, t]) / sy
            scale[t] = LOSS_SCALE_DECAY * scale[t] + (1.0 - LOSS_SCALE_DECAY) * r * r
        if learn:
            fp._stats_update(ym, ym2, yws, yf, nclip, Y[n], sd)


def describe_weights(names: Sequence[str], weights: Any, targets: Sequence[str] | None = None) -> list[str]:
    """What the mixture leans on, for people: ``"memory 0.612, linear 0.201, ..."`` (highest first),
    one line, or one per target (``weights [T, K]``; each line starts with ``targets[t]`` or ``t``).
    ``weights`` as :attr:`Ensemble.weight_matrix` or a checkpoint's ``"weights"`` holds them."""
    W = as_float64(weights).reshape(-1, len(names))
    lines = []
    for t, row in enumerate(W):
        text = ", ".join(f"{names[k]} {row[k]:.3f}" for k in np.argsort(-row, kind="stable"))
        lines.append(text if W.shape[0] == 1 else f"{targets[t] if targets else t}: {text}")
    return lines


def _spreads_its_keys(member: Any) -> bool:
    """Whether ``member`` (or the learner a :class:`~psann_stream.experts.Change` wraps) runs its keys
    in parallel itself: a :class:`~psann_stream.keyed.KeyedLearner` with per-key weights."""
    return bool(getattr(getattr(member, "member", member), "per_key_weights", False))


def _number(owner: str, name: str, v: object, low: float, high: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not low < v <= high:
        raise ConfigError(f"{owner}.{name} = {v!r} is out of range: need {low} < {name} <= {high:.12g}.")
    return float(v)


class Ensemble:
    """Learners side by side on the same events, predicting with an online fixed-share mixture
    (module doc). ``members`` maps a name to a learner: a :class:`~psann_stream.learner.Learner`, a
    :class:`~psann_stream.keyed.KeyedLearner`, an expert of :mod:`psann_stream.experts`, or any object
    with ``in_features``, ``keyed``, ``learn_batch``, ``predict_batch``, ``state_dict`` and
    ``load_state_dict``. The ensemble is keyed when a member is: then ``learn_batch(keys, X, Y)`` and
    ``predict_batch(keys, X)``, keyed members get the keys and the others the events in order; the
    mixture weights are shared by all keys.

    Args:
        members: name -> learner, at least two, all with the same ``in_features``.
        eta: how fast the weights follow the errors (per unit of the scaled loss: module doc), > 0.
        share: fixed share in ``(0, 1)``: each weight stays ``>= share / K``, so a member that was
            worse for long can lead again soon after a change (a tiny share, e.g. 1e-9, is close to
            plain exponential weighting).
        prediction_clip: limit each member's prediction to ``mean_y +- clip * std_y`` before it is
            mixed (``None``: no limit).
        on_nonfinite: ``"raise"`` or ``"skip"`` for events holding NaN or inf (module doc).
        threads: members learning at once (module doc); ``None``: one per member, at most the CPU
            count; 1: one after the other.

    >>> from psann_stream.experts import LinearRLS, Persistence
    >>> X = np.random.default_rng(0).standard_normal((2000, 2))
    >>> ens = Ensemble({"last": Persistence(2, column=0), "linear": LinearRLS(2)})
    >>> _ = ens.learn_batch(X, 2 * X[:, 1])  # the linear member is right, persistence is not
    >>> ens.weights["linear"] > 0.98
    True
    """

    def __init__(self, members: Mapping[str, Any], *, eta: float = DEFAULT_ETA, share: float = DEFAULT_SHARE,
                 prediction_clip: float | None = 10.0, on_nonfinite: Literal["raise", "skip"] = "raise",
                 threads: int | None = None) -> None:
        if not isinstance(members, Mapping) or len(members) < 2:
            raise ConfigError("Ensemble needs a mapping of at least two named members (name -> learner), "
                              f"got {type(members).__name__} of {len(members) if hasattr(members, '__len__') else '?'}.")
        for name, m in members.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"Ensemble member names must be non-empty strings, got {name!r}.")
            lacking = [a for a in ("in_features", "learn_batch", "predict_batch", "state_dict", "load_state_dict")
                       if not hasattr(m, a)]
            if lacking:
                raise ConfigError(f"Ensemble member {name!r} ({type(m).__name__}) lacks {', '.join(lacking)}: a member must "
                                  "follow the learner protocol (Learner, KeyedLearner, psann_stream.experts).")
        outputs = {name: int(getattr(m, "n_outputs", 1)) for name, m in members.items()}
        if len(set(outputs.values())) != 1:
            raise ConfigError(f"Ensemble members learn different numbers of targets {outputs}; every member must predict "
                              "the same targets (build each with the same n_outputs / out_features).")
        widths = {name: int(m.in_features) for name, m in members.items()}
        if len(set(widths.values())) != 1:
            raise ConfigError(f"Ensemble members take different input widths {widths}; every member must see the same events.")
        self.members: dict[str, Any] = dict(members)
        self.names = list(self.members)
        self.eta = _number("Ensemble", "eta", eta, 0.0, math.inf)
        # share > 0 keeps the best member's weight > 0, so the normalisation never divides 0 by 0
        self.share = _number("Ensemble", "share", share, 0.0, 1.0 - 1e-12)
        if prediction_clip is not None:
            prediction_clip = _number("Ensemble", "prediction_clip", prediction_clip, 0.0, math.inf)
        self.prediction_clip = prediction_clip
        if on_nonfinite not in ("raise", "skip"):
            raise ConfigError(f"Ensemble.on_nonfinite = {on_nonfinite!r} is not one of 'raise', 'skip'.")
        self.on_nonfinite = on_nonfinite
        self.keyed = any(getattr(m, "keyed", False) for m in self.members.values())
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"Ensemble.threads = {threads!r} is out of range: need None or an integer >= 1.")
        alone = any(_spreads_its_keys(m) for m in self.members.values())
        self.threads = 1 if alone else min(len(self.names), threads or os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._seconds = np.zeros(len(self.names))  # each member's time on the last batch (thread scheduling)
        self.n_outputs = next(iter(outputs.values()))
        T, K = self.n_outputs, len(self.names)
        self.y_stats = RunningStats(T, clip=10.0)
        self._w = np.full((T, K), 1.0 / K)  # one mixture per target
        self._scale = np.ones(T)  # the loss scales s (module doc)
        self._missed = np.zeros(T, dtype=np.int64)  # per target: events every member missed (module doc)
        self._yws = np.zeros(2)
        self._alerts: list[Alert] = []
        self._seen = {name: 0 for name in self.names}
        self.n_learned = 0
        self.n_skipped = 0
        # [N, K] ([N, T, K] for several targets): the weights each event of the last batch was mixed with
        self.last_weights: np.ndarray | None = None
        self.last_drifted = None

    # ------------------------------------------------------------------ inspection
    @property
    def in_features(self) -> int:
        return int(next(iter(self.members.values())).in_features)

    @property
    def weights(self) -> dict[str, Any]:
        """The mixture weights the next event will be predicted with: name -> weight (they sum to 1);
        for several targets name -> one weight per target (for each target they sum to 1)."""
        if self.n_outputs == 1:
            return {name: float(v) for name, v in zip(self.names, self._w[0])}
        return {name: self._w[:, k].tolist() for k, name in enumerate(self.names)}

    @property
    def weight_matrix(self) -> np.ndarray:
        """``[T, K]`` (a copy): row ``t`` the weights of target ``t``'s mixture, members in :attr:`names` order."""
        return self._w.copy()

    @property
    def n_missed_by_all(self) -> int | list[int]:
        """Events whose target every member missed by more than ``prediction_clip`` target standard
        deviations (outliers): the members learned them, the mixture's weights and loss scale did
        not move (module doc). One count, or one per target."""
        return int(self._missed[0]) if self.n_outputs == 1 else self._missed.tolist()

    def _saved_form(self, a: np.ndarray) -> np.ndarray:
        """``[T, ...]`` per-target arrays as users and checkpoints see them: without the target axis
        for one target (the shapes of before several targets existed)."""
        return a[0] if self.n_outputs == 1 else a

    @property
    def alerts(self) -> list[Alert]:
        """The members' alerts in the order they were raised (each names its member's model)."""
        return self._alerts

    # ------------------------------------------------------------------ learning
    def _split(self, args: Sequence[Any], learn: bool) -> tuple[Any, np.ndarray, np.ndarray | None]:
        want = (3 if learn else 2) if self.keyed else (2 if learn else 1)
        call = "learn_batch" if learn else "predict_batch"
        if len(args) != want:
            form = ("keys, X, Y" if learn else "keys, X") if self.keyed else ("X, Y" if learn else "X")
            raise ConfigError(f"Ensemble.{call} takes ({form}) for this {'keyed ' if self.keyed else ''}ensemble; "
                              f"got {len(args)} argument(s).")
        keys = args[0] if self.keyed else None
        X = np.ascontiguousarray(np.asarray(args[1 if self.keyed else 0], dtype=np.float64))
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ConfigError(f"Ensemble.{call}: X must have shape [N, {self.in_features}], got {X.shape}.")
        Y = as_targets("Ensemble.learn_batch", args[-1], X.shape[0], self.n_outputs) if learn else None
        if keys is not None and len(keys) != X.shape[0]:
            raise ConfigError(f"Ensemble.{call}: {len(keys)} key(s) for {X.shape[0]} row(s).")
        return keys, X, Y

    def _run(self, args: Sequence[Any], learn: bool, advance: bool = True) -> np.ndarray:
        keys, X, Y = self._split(args, learn)
        bad = nonfinite_rows(X, Y, self.on_nonfinite, self.n_learned, "no member learned this batch")
        good = ~bad
        skipped = int(np.count_nonzero(bad))
        if skipped:
            X, Y = X[good], None if Y is None else Y[good]
            if keys is not None:
                keys = keys[good] if isinstance(keys, EncodedKeys) else np.asarray(keys, dtype=object)[good]
        N, T, K = X.shape[0], self.n_outputs, len(self.names)
        P = np.empty((N, T, K))

        members = list(self.members.values())

        def member(k: int) -> None:
            m, start = members[k], time.perf_counter()
            with_keys = getattr(m, "keyed", False)
            if learn:
                p = m.learn_batch(keys, X, Y) if with_keys else m.learn_batch(X, Y)
            else:
                p = m.predict_batch(keys, X) if with_keys else m.predict_batch(X)
            P[:, :, k] = np.reshape(p, (N, T))
            self._seconds[k] = time.perf_counter() - start

        if N == 1 and keys is None and (learn or not advance):
            self._one_event(P, X, Y, learn)
        elif self.threads > 1 and N > 1:  # one event: handing it to threads costs more than the members' work
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="psann-ensemble")
            # the slowest members (last batch) first, so the threads finish together; the order of
            # submission changes no result
            jobs = {k: self._pool.submit(member, k) for k in np.argsort(-self._seconds, kind="stable").tolist()}
            wait(jobs.values())
            for k in range(len(members)):
                jobs[k].result()  # the first member's error, in member order, once all have finished
        else:
            for k in range(len(members)):
                member(k)
        for name, m in self.members.items():
            new = m.alerts[self._seen[name]:]
            self._alerts.extend(new)
            self._seen[name] += len(new)
        mixed = predictions(N, T)
        W = np.empty_like(P)
        ys = self.y_stats
        self._yws[0], self._yws[1] = ys.weight, ys.count
        _mix_events(P, np.zeros((0, T)) if Y is None else Y.reshape(N, T), learn, self._w, self._scale, ys._mean, ys._m2,
                    self._yws, ys.forget, ys.eps, ys.clip or 0.0, self.eta, self.share, self.prediction_clip or 0.0,
                    mixed.reshape(N, T), W, np.empty(K), np.empty(T), self._missed)
        ys.weight, ys.count = float(self._yws[0]), int(self._yws[1])
        out, self.last_weights = mixed, W
        if skipped:  # NaN rows where the skipped events were
            out = np.full((good.shape[0],) + mixed.shape[1:], np.nan)
            out[good] = mixed
            self.last_weights = np.full((good.shape[0], T, K), np.nan)
            self.last_weights[good] = W
        if T == 1:
            self.last_weights = self.last_weights[:, 0]
        if learn:
            self.n_learned += good.shape[0] - skipped
            self.n_skipped += skipped
        return out

    def _one_event(self, P: np.ndarray, X: np.ndarray, Y: np.ndarray | None, learn: bool) -> None:
        """One unkeyed event, each member's own one-event call in this thread: a Learner's
        ``learn_one``/``predict_one`` reach its loop through preallocated arrays, and handing one event
        to threads costs more than the members' work (measured: docs/learner.md). Without a target
        each member predicts and changes nothing (``predict_one``; a member without it:
        ``predict_batch(X, advance=False)``)."""
        x = X[0]
        y = None if Y is None else (Y[0] if self.n_outputs == 1 else Y[0].copy())
        for k, m in enumerate(self.members.values()):
            if learn:
                p = m.learn_one(x, y) if hasattr(m, "learn_one") else m.learn_batch(X, Y)
            else:
                p = m.predict_one(x) if hasattr(m, "predict_one") else m.predict_batch(X, advance=False)
            P[0, :, k] = np.reshape(p, -1)

    def learn_batch(self, *args: Any) -> np.ndarray:
        """``(X [N, F], Y [N])`` (``Y [N, T]`` for several targets), or ``(keys [N], X, Y)`` when keyed:
        every member learns the events in order; returns the mixture's prequential predictions
        (``[N]`` or ``[N, T]``; NaN for skipped events)."""
        return self._run(args, True)

    def predict_batch(self, *args: Any) -> np.ndarray:
        """``(X)``, or ``(keys, X)`` when keyed: the mixture's predictions without targets; each
        member advances as its own ``predict_batch`` does; the weights do not change."""
        return self._run(args, False)

    def learn_one(self, *args: Any) -> float | np.ndarray:
        """``(x, y)``, or ``(key, x, y)`` when keyed: one event (``y`` a number, or ``T`` of them);
        returns its prediction (a float, or ``[T]``)."""
        if len(args) != (3 if self.keyed else 2):
            raise ConfigError(f"Ensemble.learn_one takes ({'key, x, y' if self.keyed else 'x, y'}); got {len(args)} argument(s).")
        *key, x, y = args
        X = np.asarray(x, dtype=np.float64).reshape(1, -1)
        Y = as_targets("Ensemble.learn_one", y, 1, self.n_outputs)
        return self._one(self.learn_batch(*([[key[0]]] if key else []), X, Y))

    def predict_one(self, *args: Any) -> float | np.ndarray:
        """``(x)``, or ``(key, x)`` when keyed: the prediction for one event (a float, or ``[T]``) with
        the weights as they are. Unkeyed, it changes nothing (every member's ``predict_one``), so
        ``predict_one(x)`` then ``learn_one(x, y)`` learns the event once; keyed, the members advance
        the key's state as their ``predict_batch`` does."""
        if len(args) != (2 if self.keyed else 1):
            raise ConfigError(f"Ensemble.predict_one takes ({'key, x' if self.keyed else 'x'}); got {len(args)} argument(s).")
        X = np.asarray(args[-1], dtype=np.float64).reshape(1, -1)
        return self._one(self._run([[args[0]], X] if self.keyed else [X], False, advance=False))

    def _one(self, out: np.ndarray) -> float | np.ndarray:
        return float(out[0]) if self.n_outputs == 1 else out[0]

    def reset(self, keys: Sequence[Any] | None = None, *, state: bool = True, optimizer: bool = False) -> None:
        """Forward a reset to every member (``keys`` to the keyed ones; the others reset whole);
        ``optimizer=True`` also returns the mixture to equal weights and its loss scale to 1."""
        for m in self.members.values():
            if getattr(m, "keyed", False):
                m.reset(keys, state=state, optimizer=optimizer)
            else:
                m.reset(state=state, optimizer=optimizer)
        if optimizer:
            self._w[:] = 1.0 / len(self.names)
            self._scale[:] = 1.0

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The mixture (weights, loss scale, target statistics, settings, counters) and every member's own state."""
        return {
            "format": FORMAT,
            "names": list(self.names),
            "weights": torch.from_numpy(self._saved_form(self._w).copy()),
            "loss_scale": self._saved_form(self._scale).tolist(),
            "settings": {"eta": self.eta, "share": self.share, "prediction_clip": self.prediction_clip},
            "y_stats": {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v)
                        for k, v in self.y_stats.state_dict().items()},
            "counters": {"n_learned": self.n_learned, "n_skipped": self.n_skipped,
                         "n_missed_by_all": self._missed.tolist()},
            "members": {name: m.state_dict() for name, m in self.members.items()},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into an ensemble built with the same members (names and
        learners); the settings may differ (they change how it goes on, not what it saved). All or
        nothing: when a member refuses its state, the members loaded before it are put back."""
        try:
            if sd.get("format") != FORMAT:
                raise CheckpointError(f"unknown ensemble state format {sd.get('format')!r}; expected {FORMAT!r}. A state "
                                      "saved by one learner loads into that learner, not an ensemble (psann-stream run: "
                                      "--model learner; runs without it build an ensemble).")
            saved = list(sd["names"])
            if saved != self.names:
                added, missing = [n for n in self.names if n not in saved], [n for n in saved if n not in self.names]
                diff = "; ".join(part for part in (f"this one adds {added}" if added else "",
                                                    f"lacks {missing}" if missing else "") if part) or "another order"
                raise CheckpointError(f"the saved ensemble has members {saved} but this one has {self.names} ({diff}); "
                                      "build it with the same members in the same order (default_ensemble's members "
                                      "change when measurement says so: docs/learner.md).")
            T, K = self._w.shape
            w = as_float64(sd["weights"]).reshape(-1)
            if (w.shape[0] != T * K or not np.isfinite(w).all() or (w < 0).any()
                    or np.abs(w.reshape(T, K).sum(axis=1) - 1.0).max() > 1e-9):
                per = "" if T == 1 else f" for each of {T} targets"
                raise CheckpointError(f"the saved mixture weights {w.tolist()} are not {K} weights summing to 1{per}; "
                                      "was it saved by an ensemble with the same members and targets?")
            y_stats = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in sd["y_stats"].items()}
            scale = as_float64(sd["loss_scale"]).reshape(-1)
            if scale.shape[0] != T or not (np.isfinite(scale).all() and (scale >= 0.0).all()):
                raise CheckpointError(f"the saved loss scale {scale.tolist()} is not {T} finite value(s) >= 0.")
            counters = {k: int(sd["counters"][k]) for k in ("n_learned", "n_skipped")}
            missed = np.asarray(sd["counters"].get("n_missed_by_all", [0] * T), dtype=np.int64).reshape(-1)  # older: none
            if missed.shape[0] != T or (missed < 0).any():
                raise CheckpointError(f"the saved count of events missed by every member {missed.tolist()} is not "
                                      f"{T} count(s) >= 0.")
            states = {name: sd["members"][name] for name in self.names}
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"the ensemble state cannot be loaded: {exc!r}; was it saved by Ensemble.state_dict()?") from None
        before = {name: m.state_dict() for name, m in self.members.items()}
        for name, m in self.members.items():
            try:
                m.load_state_dict(states[name])
            except Exception as exc:  # all or nothing: members loaded before this one go back to where they were
                for done, old in before.items():
                    if done == name:
                        break
                    self.members[done].load_state_dict(old)
                raise CheckpointError(f"ensemble member {name!r}: {exc} Nothing was loaded.") from None
        self.y_stats.load_state_dict(y_stats)
        self._w = w.reshape(T, K).copy()
        self._scale[:] = scale
        self.n_learned, self.n_skipped = counters["n_learned"], counters["n_skipped"]
        self._missed[:] = missed


def default_ensemble(in_features: int, *, keyed: bool = False, persistence_column: int | Sequence[int] | None = None,
                     n_outputs: int | None = None, seed: int = 0, target: Literal["level", "change"] = "level",
                     eta: float = DEFAULT_ETA, share: float = DEFAULT_SHARE) -> Ensemble:
    """The ensemble chosen by measurement over the scenario suite (docs/scenarios.md, "Choosing the
    default"; keyed: over the suite's keyed copies, "The keyed default"): three StatefulNet learners
    that win on different kinds of stream, two linear models, an echo-state network, and persistence
    of ``persistence_column`` when the inputs carry the target's last value. Chosen to keep
    ``learn_batch`` above 50,000 events/s on two cores as well: adding the recommended single learner
    (32x32 oscillatory pairs, traced, RLS) lowers NARMA10's error by 8-9% and costs a fifth of the
    throughput (docs/scenarios.md, "Within 50,000 events/s").

    * ``wide memory``: one layer of 128 oscillatory units (64 pairs) with retention ``rho = 0.85``,
      RLS readout; unkeyed, traced gradients through the state (the member that holds the last
      events' values: docs/scenarios.md; one member at 0.85 in place of two at 0.9 and 0.8, at
      0.96-1.17x their error); keyed, truncated: traces are ``2 x`` its parameters per key (16-35 KB),
      and beside the keyed ``lagged linear`` they lowered no keyed copy's error by more than 5%;
    * ``fixed state``: 32x32 with the default fixed-rate state, truncated gradient, RLS readout; with
      ``persistence_column`` it learns the change from the last value instead (``fixed state
      (change)``): lower error on every scenario that has such a column, at the same cost
      (docs/scenarios.md, "The ensemble");
    * ``adam``: 32x32, truncated gradient, Adam (lr 3e-3) on every weight;
    * ``linear``: :class:`~psann_stream.experts.LinearRLS`;
    * ``lagged linear``: :class:`~psann_stream.experts.LinearRLS` on the inputs of the last
      ``lags = min(32, 64 // in_features)`` events (an ARX model; only when ``lags >= 2``; keyed: a
      window per key): a memory of ``lags - 1`` events back, learned in tens of events (delayed
      copies; docs/scenarios.md);
    * ``echo state``: :class:`~psann_stream.reservoir.EchoState`, a fixed reservoir of ``ECHO_UNITS = 50``
      tanh units (a state per key when keyed) and an RLS readout: a state that is a nonlinear function
      of the past, read out in tens of events (keyed-switch: 0.86 of the error after its changes
      without it, and the lowest of all models there; docs/scenarios.md);
    * ``persistence``: :class:`~psann_stream.experts.Persistence` (only with ``persistence_column``).

    ``keyed=True`` builds keyed members: :class:`~psann_stream.keyed.KeyedLearner` s (a state per
    key, shared weights), a window and a reservoir state per key: ~4.5 KB per key in all, resident
    (a ``KeyedLearner``'s 0.74 KB by the same measure; docs/learner.md). ``target="change"`` (needs
    ``persistence_column``) teaches every learning member the change from the last known value
    (:class:`~psann_stream.experts.Change`) instead of the level: better on slow real series (ETTh1,
    docs/scenarios.md). Cost: the members' costs added (docs/learner.md has the measured events/s).

    Several targets: every member predicts ``n_outputs`` targets at once (one model with that many
    outputs) and each target has its own mixture weights. ``persistence_column`` is then a sequence
    of one input column per target (target ``k``'s last value in ``persistence_column[k]``), which
    also gives ``n_outputs``.
    """
    if target not in ("level", "change"):
        raise ConfigError(f"default_ensemble: target = {target!r} is not one of 'level', 'change'.")
    if target == "change" and persistence_column is None:
        raise ConfigError("default_ensemble(target='change') learns the change from the last known value: name the "
                          "input column that holds it with persistence_column.")
    columns = len(persistence_column) if isinstance(persistence_column, (list, tuple)) else 1
    T = columns if n_outputs is None else n_outputs
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ConfigError(f"default_ensemble: n_outputs = {n_outputs!r} must be an integer >= 1.")
    if persistence_column is not None and columns != T:
        raise ConfigError(f"default_ensemble: persistence_column names {columns} column(s) for n_outputs = {T} targets; "
                          "give one column per target (the input holding that target's last value).")
    make = KeyedLearner if keyed else Learner

    def net(hidden: tuple[int, ...], **state: Any) -> StatefulNet:
        return StatefulNet(in_features, T, hidden=hidden, state=StateConfig(mode="trace", **state), seed=seed)

    fixed_name, fixed = "fixed state", make(net((32, 32)), readout="rls")
    if target == "level" and persistence_column is not None:
        fixed_name, fixed = "fixed state (change)", Change(fixed, column=persistence_column)  # type: ignore[arg-type]
    members: dict[str, Any] = {
        "wide memory": make(net((128,), oscillatory=True, rho=0.85), state_grad="truncated" if keyed else "traced",
                            readout="rls"),
        fixed_name: fixed,
        # Adam at this rate overshoots now and then by design (it is here for fast, large moves); the mixture
        # discounts it when it does, so its monitor would only repeat warnings the user cannot act on
        "adam": make(net((32, 32)), optimizer="adam", optimizer_kwargs={"lr": 3e-3}, monitor=False),
        "linear": LinearRLS(in_features, n_outputs=T),
    }
    lags = min(MAX_LAGS, LAGGED_WIDTH // in_features)
    if lags >= 2:
        members["lagged linear"] = LinearRLS(in_features, n_outputs=T, lags=lags, keyed=keyed)
    members["echo state"] = EchoState(in_features, n_outputs=T, keyed=keyed, units=ECHO_UNITS, seed=seed)
    if target == "change":
        members = {name: Change(m, column=persistence_column) for name, m in members.items()}  # type: ignore[arg-type]
    if persistence_column is not None:
        members["persistence"] = Persistence(in_features, column=persistence_column)
    return Ensemble(members, eta=eta, share=share)
