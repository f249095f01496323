"""Learner: a StatefulNet, a streaming optimiser, online normalisers and a monitor, learning one
stream prequentially (each event is predicted with the model as it was, then learned).

Per learned event, in this order (both backends):

1. ``x_n = (x - mean_x) / std_x`` with the input statistics *before* this event;
2. forward with the held state: ``y_hat_n``, reported as ``y_hat = y_hat_n * std_y + mean_y``;
3. ``delta = (y - mean_y) / std_y - y_hat_n``; one value-form optimiser step with ``grad y_hat_n``
   (several targets: the error vector's norm along ``grad(u . y_hat_n)``, ``u`` its direction):
   with ``state_grad="truncated"`` (default) the state's past is detached at every step; with
   ``"traced"`` the gradient reaches it through eligibility traces (exact within each layer,
   :mod:`psann_stream.traces`), which advance with the state;
4. the held state becomes this event's new state; ``x`` and ``y`` are folded into the statistics;
5. the monitor's statistics are updated; every ``check_every`` events the monitor is consulted.

Backends, chosen once at construction: ``"numba"`` runs steps 1-5 in compiled code over a whole
batch of events, as the one-row case of the learning core (:mod:`psann_stream.core`); ``"torch"``
runs them with autograd and the optimisers of :mod:`psann_stream.optim`
(:mod:`psann_stream.reference`: the reference, and the path for models the compiled loop does not
cover). ``"auto"`` picks numba when it can. Both work in float64 and agree to rounding
(``tests/test_fastpath.py``).

Bad values: an event whose ``x`` or ``y`` holds NaN or inf never reaches the weights, the state or
the statistics. ``on_nonfinite="raise"`` stops with an error naming the event and the column;
``"skip"`` leaves the event out (prediction NaN) and counts it in :attr:`Learner.n_skipped` (C12).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch

from . import _fastpath as fp
from ._packing import (
    fast_path_unsupported,
    flat_params,
    flat_state,
    layer_bounds,
    layout,
    load_flat_params,
    load_flat_state,
    optimizer_settings,
    optimizer_state_from_torch,
    optimizer_state_to_torch,
    restart_buffer,
)
from .core import Core, CoreSpec
from .drift import DriftPolicy, fresh_detector
from .errors import CheckpointError, ConfigError, NonFiniteInputError, NonFiniteStateError
from .inputs import NOT_LEARNED, as_float64, as_rows, as_targets, check_common, checked_pending, nonfinite_rows, predictions
from .model import StatefulNet
from .monitor import Alert, Monitor, monitor_size
from .normalize import RunningStats
from .optim import make_optimizer
from .readout import RLS_HINT, Readout, readout_config
from .reference import Fail, ReferencePath, learn_batched
from .state import StateBounds, check_restored_state
from .traces import StateGrad, check_state_grad

__all__ = ["Learner"]

Backend = Literal["auto", "numba", "torch"]
FORMAT = "psann_stream.learner/1"


class _CompiledPath:
    """A learner's arrays and steps in the compiled loop: a one-row :class:`~psann_stream.core.Core`,
    packed into one buffer, in which the learner's :class:`RunningStats` keep their accumulators.
    Answers the same private calls as :class:`~psann_stream.reference.ReferencePath`."""

    def __init__(self, model: StatefulNet, spec: CoreSpec, xs: RunningStats, ys: RunningStats, *,
                 rls_prior: float, settings: Mapping[str, Any], monitor: bool) -> None:
        self._model, self.spec, self.xs, self.ys = model, spec, xs, ys
        self.settings = dict(settings)
        self.core = Core(spec, spec.fresh_row(model, rls_prior), per_row=(), capacity=1)
        self.core.set_row(0)
        self.monitor = monitor
        self._pack()

    def _pack(self) -> None:
        """One buffer for every array (``Core.pack``), so that one event per call reaches the loop
        with eight arguments (``_fastpath.run_packed``); the normalisers keep their accumulators in
        it. Preallocated one-event arrays and scratch."""
        core, L = self.core, self.spec.layout
        self.F, self.I = core.pack(monitor=self.monitor)
        self.xs.adopt(core.shared["xm"], core.shared["xm2"], core.shared["xws"])
        self.ys.adopt(core.shared["ym"], core.shared["ym2"], core.shared["yws"])
        F, T = self._model.in_features, L.n_outputs
        self.x1, self.y1 = np.empty((1, F)), np.empty((1, T))
        self._out1, self._skip1, self.drifted1 = np.empty((1, T)), np.zeros(1, dtype=np.bool_), np.zeros(1, dtype=np.bool_)
        self._work = np.empty((L.lay.shape[0], fp.W_ROWS, int(L.lay[:, 1].max())))
        self._NS, self._YS, self.pred1 = np.empty((2, F)), np.empty((4, T)), np.empty(T)
        self.y1_flat, self.out1_flat = self.y1.reshape(-1), self._out1.reshape(-1)  # views: one output's fast path

    def __getstate__(self) -> dict[str, Any]:
        # a pickled view is a copy: the buffer is packed again on the other side instead
        return {k: v for k, v in self.__dict__.items() if k not in ("F", "I")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pack()

    # ------------------------------------------------------------------ inspection
    @property
    def theta(self) -> np.ndarray:
        return self.core.shared["theta"]

    @property
    def state(self) -> np.ndarray:
        """The held state (the core's row: writes go to the learner)."""
        return self.core.rows["state"][0]

    @property
    def traces(self) -> np.ndarray:
        return self.core.rows["traces"]

    @property
    def mon(self) -> np.ndarray:
        return self.core.shared["mon"]

    @property
    def P(self) -> np.ndarray:
        return self.core.shared["rls"]

    @property
    def model(self) -> StatefulNet:
        """The torch model with the loop's parameters and state written into it."""
        load_flat_params(self._model, self.theta)
        load_flat_state(self._model, self.state)
        return self._model

    def bounds(self) -> list[StateBounds]:
        return layer_bounds(self.spec.layout.lay, self.theta, self._model.state_config)

    # ------------------------------------------------------------------ steps
    def learn_one(self) -> tuple[int, int]:
        """The event in ``x1``/``y1`` (written by the caller)."""
        return fp.run_packed(self.F, self.I, self.x1, self.y1, True, self._skip1, self._out1, self.drifted1)

    def predict_one(self) -> float:
        """The prediction of the event in ``x1`` (written by the caller): its first output; all ``T``
        are in ``pred1`` (a buffer of the path's, overwritten by the next call). Changes nothing."""
        return fp.predict_packed(self.F, self.I, self.x1[0], self._work, self._NS, self._YS, self.pred1)

    def predict(self, X: np.ndarray, *, advance: bool, fail: Fail) -> np.ndarray:
        out = predictions(X.shape[0], self.spec.layout.n_outputs)
        core = self.core
        saved = None if advance else (core.row(0), *(a.copy() for a in self.xs.arrays))
        N = X.shape[0]
        done, status = core.run(np.zeros(N, dtype=np.int64), X, np.zeros(out.shape), learn=False,
                                skip=np.zeros(N, dtype=np.bool_), out=out, drifted=np.zeros(N, dtype=np.bool_),
                                monitor=False)
        if saved is not None:
            core.set_row(0, saved[0])
            for a, b in zip(self.xs.arrays, saved[1:]):
                a[:] = b
        if status:
            fail(done, status)
        return out

    def predict_snapshots(self, X: np.ndarray, *, fail: Fail) -> tuple[np.ndarray, np.ndarray]:
        """Predict and advance (as :meth:`predict` with ``advance``), keeping each event's snapshot."""
        N = X.shape[0]
        out, snaps = predictions(N, self.spec.layout.n_outputs), np.empty((N, self.core.snapshot_width))
        done, status = self.core.predict_snapshots(np.zeros(N, dtype=np.int64), X, out=out, snapshots=snaps)
        if status:
            fail(done, status)
        return out, snaps

    def learn_snapshots(self, S: np.ndarray, Y: np.ndarray, skip: np.ndarray, out: np.ndarray, drifted: np.ndarray, *,
                        monitor: bool, fail: Fail) -> None:
        """Learn events from their snapshots ``S`` (``Core.learn_snapshots``); ``skip`` and ``drifted``
        are not used (labels are checked before, and there is no drift test)."""
        done, status = self.core.learn_snapshots(S, Y, out=out, monitor=monitor)
        if status:
            fail(done, status)

    def learn(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray, out: np.ndarray, drifted: np.ndarray, *,
              monitor: bool, fail: Fail) -> None:
        done, status = self.core.run(np.zeros(X.shape[0], dtype=np.int64), X, Y, learn=True, skip=skip, out=out,
                                     drifted=drifted, monitor=monitor)
        if status:
            fail(done, status)

    def learn_batched(self, X: np.ndarray, Y: np.ndarray) -> list[float]:
        """Through torch (one step per batch): the model and optimiser state go over and come back."""
        model = self.model
        opt = make_optimizer(self.spec.optimizer, model.parameters(), **self.settings)
        optimizer_state_to_torch(opt, model, self.export()["optimizer"])
        preds = learn_batched(model, opt, self.xs, self.ys, self.spec.normalize_x, self.spec.normalize_y, X, Y)
        self.theta[:] = flat_params(model)
        self.state[:] = flat_state(model)
        for k, v in optimizer_state_from_torch(opt, model).items():
            self.core.shared[k][:] = v
        return preds

    # ------------------------------------------------------------------ reset and persistence
    def reset(self, *, state: bool, optimizer: bool) -> None:
        core = self.core
        if state:
            core.rows["state"][0] = self.spec.init
            core.rows["traces"][0] = 0.0
        if optimizer:
            core.shared[restart_buffer(self.spec.optimizer)][:] = 0.0
            core.shared["rls"][:] = core.template["rls"]

    def export(self) -> dict[str, Any]:
        s = self.core.shared
        return {"optimizer": {k: s[k].copy() for k in ("buf1", "buf2", "scal")},
                "traces": self.core.rows["traces"][0].copy(), "P": s["rls"].copy(), "ph": self.core.rows["ph"].copy()}

    def restore(self, opt_state: Mapping[str, np.ndarray], traces: np.ndarray, P: np.ndarray, ph: np.ndarray) -> None:
        """Continue from the torch model (restored by the learner) and saved arrays (checked for shape
        by the learner); written in place, so the packed buffer stays the learner's."""
        s, rows = self.core.shared, self.core.rows
        s["theta"][:] = flat_params(self._model)
        rows["state"][0] = flat_state(self._model)
        for k in ("buf1", "buf2", "scal"):
            s[k][:] = opt_state[k]
        rows["traces"][0] = traces
        s["rls"][:] = P
        rows["ph"][:] = ph


class Learner:
    """Prequential online learning of one stream with a StatefulNet (see module doc).

    Args:
        model: the network; the learner owns it and converts it to float64. Its ``out_features``
            is the number of targets learned per event (several: ``Y [N, T]``, one trunk and a head
            per target; :mod:`psann_stream._fastpath` documents the step).
        optimizer: ``"obgd"`` (default), ``"intentional"`` or ``"adam"``.
        optimizer_kwargs: settings overriding the optimiser's defaults (ObGD ``lr=1.0, kappa=1.25``;
            intentional ``lr=0.5``; Adam ``lr=1e-3``).
        normalize_x, normalize_y: normalise inputs / targets online (recommended: unscaled
            targets are the main reason deep models lose to linear ones on streams).
        forget: forgetting factor of both normalisers, ``(0, 1]``; 1 = cumulative.
        normalize_clip: limit each value folded into the normalisers to ``mean +- clip * std``
            (``None``: no limit), so outliers cannot poison the scale (``RunningStats(clip=...)``).
        monitor: ``True`` (a default :class:`~psann_stream.monitor.Monitor`), a Monitor, or ``False``.
        check_every: consult the monitor every this many learned events.
        on_nonfinite: ``"raise"`` or ``"skip"`` (module doc).
        backend: ``"auto"``, ``"numba"`` or ``"torch"``.
        drift: a :class:`~psann_stream.drift.DriftPolicy` (compiled backend): a Page-Hinkley test on
            the error that resets the state and/or the optimiser at the event of detection
            (:attr:`last_drifted` marks the events of the last batch that triggered one).
        state_grad: ``"truncated"`` (default: the gradient stops at the previous state) or
            ``"traced"`` (exact online gradients through the state by eligibility traces, so the
            state learns a memory; modes 'trace' and 'gain', bounds 'clip' and 'tanh').
        readout: ``"gradient"`` (default: the optimiser learns the output layer with the rest) or
            ``"rls"`` (recursive least squares on the last layer's outputs, :mod:`psann_stream.readout`;
            the optimiser learns the layers below).
        rls_forgetting: RLS forgetting factor, ``(0, 1]`` (memory ``1 / (1 - forgetting)`` events).
        rls_prior: RLS's initial ``P = prior * I``; also caps ``trace(P)`` at the prior's trace.
        rls_error_clip: limit the error RLS learns to this many RMS of its past errors (``None``: no limit).

    >>> from psann_stream import StatefulNet
    >>> lrn = Learner(StatefulNet(2, hidden=(8,), seed=0))
    >>> xs = np.random.default_rng(0).standard_normal((500, 2))
    >>> preds = lrn.learn_batch(xs, xs.sum(axis=1))
    >>> float(np.abs(preds[-100:] - xs[-100:].sum(axis=1)).mean()) < 0.5
    True
    """

    keyed = False  # the engine passes keys to learn_batch/predict_batch when True

    def __init__(
        self,
        model: StatefulNet,
        *,
        optimizer: str = "obgd",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        normalize_x: bool = True,
        normalize_y: bool = True,
        forget: float = 1.0,
        normalize_clip: float | None = 10.0,
        monitor: bool | Monitor = True,
        check_every: int = 1000,
        on_nonfinite: Literal["raise", "skip"] = "raise",
        backend: Backend = "auto",
        drift: DriftPolicy | None = None,
        state_grad: StateGrad = "truncated",
        readout: Readout = "gradient",
        rls_forgetting: float = 0.999,
        rls_prior: float = 10.0,
        rls_error_clip: float | None = 10.0,
    ) -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "state_config"):
            raise ConfigError(f"Learner needs a StatefulNet, got {type(model).__name__}.")
        rcfg = readout_config(readout, rls_forgetting, rls_prior, rls_error_clip, model.hidden[-1], "Learner")
        self.readout, self.rls_prior = readout, float(rls_prior)
        check_state_grad(state_grad, model.state_config, "Learner")
        self.state_grad = state_grad
        check_common("Learner", on_nonfinite=on_nonfinite, check_every=check_every, forget=forget,
                     normalize_clip=normalize_clip, drift=drift)
        if backend not in ("auto", "numba", "torch"):
            raise ConfigError(f"Learner.backend = {backend!r} is not one of 'auto', 'numba', 'torch'.")
        why = fast_path_unsupported(model)
        if backend == "numba" and why:
            raise ConfigError(f"backend='numba' cannot run this model: {why}. Use backend='torch'.")
        self.backend = "torch" if (backend == "torch" or why) else "numba"
        if drift is not None and self.backend != "numba":
            raise ConfigError(
                "Learner(drift=...) runs its detector in the compiled loop, which this learner does not use "
                f"({why or 'backend=torch'}); drop drift or use a model the compiled loop covers."
            )
        self.drift = drift
        self.last_drifted: np.ndarray | None = None  # [N] bool of the last learn_batch, with a drift policy
        self._model = model.double()
        self._model.reset_state(n_streams=1)
        self._n_outputs = int(model.out_features)
        self.optimizer_name = optimizer
        self.optimizer_settings = optimizer_settings(optimizer, optimizer_kwargs)
        self.normalize_x = bool(normalize_x)
        self.normalize_y = bool(normalize_y)
        self.x_stats = RunningStats(model.in_features, forget=forget, clip=normalize_clip)
        self.y_stats = RunningStats(model.out_features, forget=forget, clip=normalize_clip)
        self.monitor: Monitor | None = Monitor() if monitor is True else (monitor or None)
        self.check_every = check_every
        self.on_nonfinite = on_nonfinite
        self.n_learned = 0
        self.n_skipped = 0
        self._since_check = 0
        self._traced = state_grad == "traced"
        self._rcfg = rcfg
        self._path = self._new_path()

    def _new_path(self) -> "_CompiledPath | ReferencePath":
        """The compiled or the reference path for the current model and normalisers."""
        model, xs = self._model, self.x_stats
        if self.backend == "numba":
            spec = CoreSpec.build(model, optimizer=self.optimizer_name, settings=self.optimizer_settings,
                                  normalize_x=self.normalize_x, normalize_y=self.normalize_y, forget=xs.forget,
                                  eps=xs.eps, clip=xs.clip, traced=self._traced, readout=self.readout,
                                  rcfg=self._rcfg, drift=self.drift)
            return _CompiledPath(model, spec, xs, self.y_stats, rls_prior=self.rls_prior,
                                 settings=self.optimizer_settings, monitor=self.monitor is not None)
        lay = layout(model)
        return ReferencePath(model, lay, xs, self.y_stats, optimizer=self.optimizer_name,
                             settings=self.optimizer_settings, normalize_x=self.normalize_x,
                             normalize_y=self.normalize_y, traced=self._traced, readout=self.readout, rcfg=self._rcfg,
                             rls_prior=self.rls_prior, mon=np.zeros(monitor_size(lay.widths)))

    # ------------------------------------------------------------------ model access
    @property
    def model(self) -> StatefulNet:
        """The torch model with the current weights and held state (a view for inspection; changes
        to it are picked up only by the torch backend)."""
        return self._path.model

    @property
    def in_features(self) -> int:
        """Width of the model's input."""
        return int(self._model.in_features)

    @property
    def n_outputs(self) -> int:
        """Targets learned per event (the model's ``out_features``): predictions are ``[N]`` for one,
        ``[N, T]`` for several."""
        return self._n_outputs

    @property
    def alerts(self) -> list[Alert]:
        return self.monitor.alerts if self.monitor else []

    # ------------------------------------------------------------------ prediction and learning
    def predict_one(self, x: Any) -> float | np.ndarray:
        """The prediction for ``x`` with the current weights and held state (a float; with several
        outputs an array ``[T]``); changes nothing."""
        path = self._path
        if not (type(path) is _CompiledPath and type(x) is np.ndarray and x.shape == path.x1.shape[1:]
                and x.dtype == np.float64 and math.isfinite(float(x.dot(x)))):
            X = as_rows("x", x, self._model.in_features, one_event=True)
            if not np.isfinite(X).all():
                raise NonFiniteInputError(f"predict_one: x holds a non-finite value ({X[0].tolist()}); clean the input.")
            if type(path) is not _CompiledPath:
                pred = path.predict(X, advance=False, fail=self._failed_at(0))[0]
                return float(pred) if self.n_outputs == 1 else pred
            x = X[0]
        path.x1[0] = x
        p = path.predict_one()
        if self._n_outputs == 1:
            if not math.isfinite(p):
                self._failed_at(0)(0, 1)
            return p
        if not np.isfinite(path.pred1).all():
            self._failed_at(0)(0, 1)
        return path.pred1.copy()

    def predict_batch(self, X: Any, *, advance: bool = True) -> np.ndarray:
        """Predictions for consecutive events without targets, the state advancing through them.

        ``advance=True`` keeps the state (and input statistics) where the last event left them —
        for events that will not be learned; ``advance=False`` restores them afterwards.
        """
        X = as_rows("X", X, self._model.in_features, one_event=False)
        if not np.isfinite(X).all():
            raise NonFiniteInputError("predict_batch: X holds non-finite values; clean the input.")
        return self._path.predict(X, advance=advance, fail=self._failed_at(0))

    def learn_one(self, x: Any, y: Any) -> float | np.ndarray:
        """Predict ``x`` with the model as it is, then learn ``y`` (a number; with several outputs a
        sequence of ``T``); returns the prediction (a float; several outputs: an array ``[T]``).

        The compiled path takes a float64 ``x`` of shape ``[F]`` and a float ``y`` straight to the loop
        through preallocated arrays (one event per call costs little more than the loop's own step);
        anything else goes through the checks of :meth:`learn_batch`."""
        path = self._path
        if (type(path) is _CompiledPath and type(x) is np.ndarray and x.shape == path.x1.shape[1:]
                and x.dtype == np.float64 and type(y) in (float, np.float64) and self._n_outputs == 1
                and self._since_check + 1 < self.check_every):
            X1 = path.x1
            X1[0] = x
            path.y1_flat[0] = y
            if math.isfinite(float(x.dot(x)) + y * y):
                done, status = path.learn_one()
                if status:
                    self._failed_at(0)(done, status)
                self.n_learned += 1
                self._since_check += 1
                self.last_drifted = path.drifted1.copy() if self.drift is not None else None
                return float(path.out1_flat[0])
        X = as_rows("x", x, self._model.in_features, one_event=True)
        Y = as_targets("learn_one", y, 1, self.n_outputs)
        pred = self._learn_rows(X, Y, nonfinite_rows(X, Y, self.on_nonfinite, self.n_learned, NOT_LEARNED))[0]
        return float(pred) if self.n_outputs == 1 else pred

    def learn_batch(self, X: Any, Y: Any, *, mode: Literal["exact", "batched"] = "exact") -> np.ndarray:
        """Learn consecutive events ``X [N, F]``, ``Y [N]`` (several outputs: ``[N, T]``); returns the
        prequential predictions, shaped as ``Y``.

        ``mode="exact"``: event by event (predict, learn, advance), identical to ``learn_one`` in a
        loop. ``mode="batched"``: predict the whole batch with the current weights (the state
        advancing event by event, exactly as :meth:`predict_batch`), then fold the targets into
        the statistics and take one step along the mean of ``delta_n * grad y_hat_n`` (a value-form
        step with unit error). Fewer optimiser steps for large batches; the predictions of events
        ``2..N`` then do not benefit from events ``1..N-1``.
        """
        X = as_rows("X", X, self._model.in_features, one_event=False)
        Y = as_targets("learn_batch", Y, X.shape[0], self.n_outputs)
        if mode not in ("exact", "batched"):
            raise ConfigError(f"learn_batch: mode = {mode!r} is not one of 'exact', 'batched'.")
        skip = nonfinite_rows(X, Y, self.on_nonfinite, self.n_learned, NOT_LEARNED)
        if mode == "batched":
            if self._traced or self.readout != "gradient":
                raise ConfigError("learn_batch(mode='batched') takes one gradient step per batch: it supports neither "
                                  "state_grad='traced' nor readout='rls'; use mode='exact'.")
            if self.drift is not None:
                raise ConfigError("learn_batch(mode='batched') has no per-event errors to test for drift; use mode='exact'.")
            return self._learn_batched(X, Y, skip)
        return self._learn_rows(X, Y, skip)

    @property
    def snapshot_width(self) -> int:
        """Values in one event's snapshot from :meth:`predict_pending`."""
        return self._pending_path().core.snapshot_width

    def _pending_path(self) -> _CompiledPath:
        if type(self._path) is not _CompiledPath:
            raise ConfigError("delayed labels run in the compiled loop; this learner uses the torch reference path "
                              "(backend='torch' or a model the loop does not cover).")
        return self._path

    def predict_pending(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Predict consecutive events whose targets arrive later: the state (and input statistics)
        advance through them as in :meth:`predict_batch`. Returns the predictions ``[N]`` and each
        event's snapshot ``[N, W]`` (the state before the event, every layer's units; its normalised
        input; with ``state_grad="traced"`` its eligibility traces: ``W = units + F (+ traces)``
        float64 values), from which :meth:`learn_pending` learns the event when its target arrives. :class:`~psann_stream.delayed.DelayedLabels` keeps the snapshots for you
        (ids, expiry, checkpoints). Compiled path only."""
        path = self._pending_path()
        X = as_rows("X", X, self._model.in_features, one_event=False)
        if not np.isfinite(X).all():
            raise NonFiniteInputError("predict_pending: X holds non-finite values; clean the input.")
        return path.predict_snapshots(X, fail=self._failed_at(0))

    def learn_pending(self, snapshots: np.ndarray, Y: Any) -> np.ndarray:
        """Learn events predicted by :meth:`predict_pending`, from their snapshots, in the order given
        (the order their targets arrived): each from the state it saw and its input, with the weights,
        optimiser and target statistics as they are now. The held state does not move. A target that
        arrives right after its prediction is learned exactly as :meth:`learn_batch` would (tested);
        a later one sees the weights of its arrival time. No drift test runs on these events. Returns
        the predictions with the weights before each step."""
        S, Y = checked_pending(snapshots, Y, self.snapshot_width, self.n_outputs)
        return self._learn_rows(S, Y, np.zeros(Y.shape[0], dtype=np.bool_), step=self._path.learn_snapshots)

    def _learn_rows(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray, step: Any = None) -> np.ndarray:
        """Exact-mode learning of checked rows, consulting the monitor every ``check_every`` events
        (``step``: the path's call that learns a chunk; its ``learn`` unless given)."""
        step = self._path.learn if step is None else step
        out = predictions(X.shape[0], self.n_outputs)
        drifted = np.zeros(X.shape[0], dtype=np.bool_)
        start = 0
        while start < X.shape[0]:
            stop = min(X.shape[0], start + self.check_every - self._since_check)
            step(X[start:stop], Y[start:stop], skip[start:stop], out[start:stop], drifted[start:stop],
                 monitor=self.monitor is not None, fail=self._failed_at(start))
            skipped = int(np.count_nonzero(skip[start:stop]))
            self.n_learned += stop - start - skipped
            self.n_skipped += skipped
            self._since_check += stop - start
            if self._since_check >= self.check_every:
                self._since_check = 0
                self._check_monitor()
            start = stop
        self.last_drifted = drifted if self.drift is not None else None
        return out

    def _learn_batched(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray) -> np.ndarray:
        """Predict the batch with fixed weights, then one step along mean(delta_n grad y_hat_n)."""
        keep = ~skip
        out = predictions(X.shape[0], self.n_outputs)
        out[~keep] = np.nan
        if keep.any():
            out[keep] = self._path.learn_batched(X[keep], Y[keep])
            self.n_learned += int(keep.sum())
        self.n_skipped += int(skip.sum())
        return out

    def _failed_at(self, offset: int) -> Fail:
        """A callback raising :class:`NonFiniteStateError` for event ``offset + n`` of the batch."""
        def fail(n: int, status: int) -> None:
            what = "the prediction" if status == 1 else "the update"
            raise NonFiniteStateError(
                f"event {offset + n} of this batch (learned events so far: {self.n_learned}): {what} became non-finite "
                f"from finite data; the event was not learned and the learner is unchanged since the previous event. "
                f"Lower the learning rate (optimizer={self.optimizer_name!r}, settings {self.optimizer_settings}) or use "
                "optimizer='obgd', whose steps are bounded" + (RLS_HINT if self.readout == "rls" else ".")
            )
        return fail


    def grow_inputs(self, in_features: int) -> None:
        """Widen the model's input to ``in_features`` (>= the current width) without losing anything
        learned: new inputs enter with zero weights (predictions are unchanged until they carry
        values); weights, state, optimiser state and target statistics are kept.

        Needs ``normalize_x=False``: the input statistics share one count, so a feature that appears
        later cannot start its own (normalise features upstream, as the river adapter does).
        """
        old = self._model.in_features
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < old:
            raise ConfigError(f"grow_inputs: in_features = {in_features!r} must be an integer >= the current {old}.")
        if in_features == old:
            return
        if self.normalize_x:
            raise ConfigError("grow_inputs needs normalize_x=False: normalise the inputs upstream when features can appear.")
        sd = self.state_dict()
        # position of every new flat parameter in the old flat vector (-1: a new, zero weight)
        pieces, off = [], 0
        for name, p in self._model.named_parameters():
            idx = torch.arange(p.numel(), dtype=torch.int64) + off
            if name == "layers.0.linear.weight":
                h = p.shape[0]
                idx = torch.cat([idx.reshape(h, old), torch.full((h, in_features - old), -1)], dim=1).reshape(-1)
                sd["model"][name] = torch.cat([sd["model"][name], torch.zeros(h, in_features - old, dtype=p.dtype)], dim=1)
            pieces.append(idx)
            off += p.numel()
        index = torch.cat(pieces)
        keep = index >= 0
        def grow(flat: torch.Tensor) -> torch.Tensor:
            grown = torch.zeros(index.shape[0], dtype=torch.float64)
            grown[keep] = flat[index[keep]]
            return grown

        for key in ("buf1", "buf2"):
            sd["optimizer"][key] = grow(sd["optimizer"][key])
        if self._traced:  # one block per trace component (two with oscillatory pairs)
            sd["traces"] = torch.cat([grow(part) for part in sd["traces"].reshape(-1, int(keep.sum()))])
        sd["x_stats"] = {**sd["x_stats"], "n_features": in_features,
                         "mean": torch.zeros(in_features, dtype=torch.float64), "m2": torch.zeros(in_features, dtype=torch.float64)}
        m = self._model
        self._model = StatefulNet(in_features, m.out_features, m.hidden, m.state_config).double()
        self._model.reset_state(n_streams=1)
        self.x_stats = RunningStats(in_features, forget=self.x_stats.forget, eps=self.x_stats.eps, clip=self.x_stats.clip)
        self._path = self._new_path()
        self.load_state_dict(sd)

    def permute_inputs(self, order: Sequence[int]) -> None:
        """Reorder the model's inputs: input ``j`` becomes what input ``order[j]`` was (a permutation
        of ``range(in_features)``), with everything learned about it: the first layer's weight
        column, its optimiser state and eligibility traces, and its input statistics. Predictions
        for inputs permuted the same way are unchanged."""
        F = self._model.in_features
        perm = [int(i) for i in order]
        if sorted(perm) != list(range(F)):
            raise ConfigError(f"permute_inputs: order must be a permutation of range({F}), got {list(order)!r}.")
        sd = self.state_dict()
        name = "layers.0.linear.weight"
        w = sd["model"][name]
        sd["model"][name] = w[:, perm]
        offset = 0
        for n, p in self._model.named_parameters():
            if n == name:
                break
            offset += p.numel()
        n_params = sd["optimizer"]["buf1"].numel()
        flats = [sd["optimizer"]["buf1"], sd["optimizer"]["buf2"]]
        flats += list(sd["traces"].reshape(-1, n_params)) if sd["traces"].numel() else []  # views: one per component
        for flat in flats:
            block = flat[offset : offset + w.numel()].reshape(w.shape[0], F)
            flat[offset : offset + w.numel()] = block[:, perm].reshape(-1)
        for k in ("mean", "m2"):
            sd["x_stats"][k] = sd["x_stats"][k][perm]
        self.load_state_dict(sd)

    # ------------------------------------------------------------------ monitor, reset, persistence
    def _check_monitor(self) -> None:
        if self.monitor is None:
            return
        self.monitor.check(
            self._path.mon, config=self._model.state_config, bounds=self._path.bounds(),
            widths=tuple(self._model.hidden), optimizer=self.optimizer_name, settings=self.optimizer_settings,
            step=self.n_learned,
        )
        self._path.mon[-1] = 0.0  # the max effective step is per check window

    def reset(self, *, state: bool = True, optimizer: bool = False) -> None:
        """Reset the held state to ``init`` (and zero its eligibility traces) and/or restart the
        optimiser (ObGD: traces; intentional: error RMS; Adam: bias correction, moments kept) and the
        RLS readout (its prior)."""
        self._path.reset(state=state, optimizer=optimizer)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: weights and held state, optimiser state,
        normalisers, monitor statistics and counters (plain tensors, arrays and numbers)."""
        model = self.model
        saved = self._path.export()
        tensor = lambda v: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v  # noqa: E731
        return {
            "format": FORMAT,
            "backend": self.backend,
            "state_config": model.state_config.to_dict(),
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": {"name": self.optimizer_name, **{k: tensor(v) for k, v in saved["optimizer"].items()}},
            "x_stats": {k: tensor(v) for k, v in self.x_stats.state_dict().items()},
            "y_stats": {k: tensor(v) for k, v in self.y_stats.state_dict().items()},
            "monitor": tensor(self._path.mon),
            "drift": tensor(saved["ph"]),
            "state_grad": self.state_grad,
            "traces": tensor(saved["traces"]),
            "readout": {"kind": self.readout, "P": tensor(saved["P"])},
            "counters": {"n_learned": self.n_learned, "n_skipped": self.n_skipped, "since_check": self._since_check},
        }

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the learner must have been built with the same architecture."""
        n_traces = self._path.export()["traces"].shape[0]
        mon_shape, ph_shape = self._path.mon.shape, self._path.export()["ph"].shape
        try:
            if sd.get("format") != FORMAT:
                raise CheckpointError(f"unknown learner state format {sd.get('format')!r}; expected {FORMAT!r}. A state "
                                      "saved by another kind of learner (an ensemble, say) loads into that kind only "
                                      "(psann-stream run: --model).")
            if sd["optimizer"]["name"] != self.optimizer_name:
                raise CheckpointError(
                    f"the saved optimiser is {sd['optimizer']['name']!r} but this learner uses {self.optimizer_name!r}; "
                    "build the Learner with the same optimizer."
                )
            check_restored_state(self._model.state_config, sd.get("state_config"), [], "Learner.load_state_dict")
            self._model.load_state_dict(sd["model"])  # the layers check every saved |s| <= max_abs
            self._model.double()
            opt_state = {k: as_float64(sd["optimizer"][k]) for k in ("buf1", "buf2", "scal")}
            stats = {}
            for name, here in (("x_stats", self.x_stats), ("y_stats", self.y_stats)):
                loaded = RunningStats(here.n_features)
                loaded.load_state_dict({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in sd[name].items()})
                if loaded.arrays[0].shape != here.arrays[0].shape:
                    raise ValueError(f"{name} holds {loaded.arrays[0].shape[0]} feature(s); expected {here.n_features}")
                stats[name] = loaded.state_dict()
            mon = as_float64(sd["monitor"])
            ph = as_float64(sd["drift"]) if "drift" in sd else fresh_detector()[None, :]  # older states: no detector
            saved_grad = sd.get("state_grad", "truncated")  # older states: truncated learning
            saved_readout = sd.get("readout", {"kind": "gradient", "P": torch.zeros(0)})  # older states: gradient
            readout_kind, P = saved_readout["kind"], as_float64(saved_readout["P"])
            traces = as_float64(sd["traces"]) if "traces" in sd else np.zeros(0)
            counters = sd["counters"]
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"the learner state cannot be loaded: {exc}. Was it saved by Learner.state_dict() "
                                  "for a model of the same architecture?") from None
        n_params = sum(p.numel() for p in self._model.parameters())
        if opt_state["buf1"].shape[0] != n_params or mon.shape != mon_shape:
            raise CheckpointError("the saved learner has a different architecture (parameter count differs).")
        if ph.shape != ph_shape:
            raise CheckpointError(f"the saved drift detector has shape {tuple(ph.shape)}; expected {ph_shape}.")
        if saved_grad != self.state_grad:
            raise CheckpointError(
                f"the saved learner used state_grad={saved_grad!r} but this one uses {self.state_grad!r}; build the "
                "Learner with the same state_grad (the traces are part of what it continues from)."
            )
        P_here = self._path.export()["P"]
        if readout_kind != self.readout or P.shape != P_here.shape:
            raise CheckpointError(
                f"the saved learner used readout={readout_kind!r} (a readout matrix of {P.shape[0]} values) but this one "
                f"uses readout={self.readout!r} ({P_here.shape[0]}); build the Learner with the same readout and widths."
            )
        if traces.shape[0] != n_traces:
            raise CheckpointError(f"the saved traces hold {traces.shape[0]} values; expected {n_traces}.")
        self._path.restore(opt_state, traces, P, ph)
        self.x_stats.load_state_dict(stats["x_stats"])  # in place: the compiled loop holds these arrays
        self.y_stats.load_state_dict(stats["y_stats"])
        self._path.mon[:] = mon
        self.n_learned, self.n_skipped = int(counters["n_learned"]), int(counters["n_skipped"])
        self._since_check = int(counters["since_check"])
