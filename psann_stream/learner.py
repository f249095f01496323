"""Learner: a StatefulNet, a streaming optimiser, online normalisers and a monitor, learning one
stream prequentially (each event is predicted with the model as it was, then learned).

Per learned event, in this order (both backends):

1. ``x_n = (x - mean_x) / std_x`` with the input statistics *before* this event;
2. forward with the held state: ``y_hat_n``, reported as ``y_hat = y_hat_n * std_y + mean_y``;
3. ``delta = (y - mean_y) / std_y - y_hat_n``; one value-form optimiser step with ``grad y_hat_n``:
   with ``state_grad="truncated"`` (default) the state's past is detached at every step; with
   ``"traced"`` the gradient reaches it through eligibility traces (exact within each layer,
   :mod:`psann_stream.traces`), which advance with the state;
4. the held state becomes this event's new state; ``x`` and ``y`` are folded into the statistics;
5. the monitor's statistics are updated; every ``check_every`` events the monitor is consulted.

Backends: ``"numba"`` runs steps 1-5 in compiled code over a whole batch of events
(:mod:`psann_stream._fastpath`); ``"torch"`` runs them with autograd and the optimisers of
:mod:`psann_stream.optim` (the reference, and the path for models the compiled loop does not
cover). ``"auto"`` picks numba when it can. Both work in float64 and agree to rounding
(``tests/test_fastpath.py``).

Bad values: an event whose ``x`` or ``y`` holds NaN or inf never reaches the weights, the state or
the statistics. ``on_nonfinite="raise"`` stops with an error naming the event and the column;
``"skip"`` leaves the event out (prediction NaN) and counts it in :attr:`Learner.n_skipped` (C12).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, Mapping

import numpy as np
import torch

from . import _fastpath as fp
from ._packing import (
    OPT_KINDS,
    Layout,
    empty_optimizer_state,
    fast_path_unsupported,
    flat_params,
    layer_bounds,
    layout,
    load_flat_params,
    optimizer_hyper,
    restart_buffer,
    optimizer_settings,
    optimizer_state_from_torch,
    optimizer_state_to_torch,
)
from .drift import DriftPolicy, drift_kernel_args, fresh_detector
from .errors import CheckpointError, ConfigError, NonFiniteInputError, NonFiniteStateError
from .model import StatefulNet
from .monitor import Alert, Monitor, monitor_size
from .normalize import RunningStats
from .optim import make_optimizer
from .readout import RLS_HINT, Readout, initial_readout_matrix, readout_config
from .state import check_restored_state
from .traces import StateGrad, StateTraces, check_state_grad

__all__ = ["Learner"]

Backend = Literal["auto", "numba", "torch"]
FORMAT = "psann_stream.learner/1"


def _np(v: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor or array-like."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().numpy().copy()
    return np.array(v, dtype=np.float64)


def _as_rows(name: str, x: Any, width: int, *, one_event: bool) -> np.ndarray:
    """Inputs as a C-contiguous float64 ``[N, width]`` array. A 1-D input is one event
    (``one_event``) or, for a one-feature model, a column of events."""
    try:
        a = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} cannot be read as numbers ({exc}).") from None
    if a.ndim == 1:
        a = a[None, :] if one_event or width > 1 else a[:, None]
    if a.ndim != 2 or a.shape[1] != width:
        raise ConfigError(f"{name} has shape {np.shape(x)}; need rows of {width} value(s).")
    return np.ascontiguousarray(a)


_NOT_LEARNED = "nothing was learned from it or after it"


def nonfinite_rows(X: np.ndarray, Y: np.ndarray | None, on_nonfinite: str, learned: int, consequence: str) -> np.ndarray:
    """The ``[N]`` mask of events whose ``x`` row or target ``y`` holds NaN or inf. Under
    ``on_nonfinite="raise"`` the first such event raises :class:`NonFiniteInputError` naming the event,
    the column and its value, ``learned`` (events learned so far) and ``consequence`` (what was not
    learned)."""
    # a finite sum of squares means every value is finite (any NaN or inf makes it NaN or inf); one
    # that overflows from finite values only takes the exact path below. A dot product, not
    # X.sum(): ~0.5 us instead of ~1.7 us for one event, which learn_one pays every call
    flat = X.reshape(-1)
    if math.isfinite(float(flat.dot(flat)) + (0.0 if Y is None else float(Y.dot(Y)))):
        return np.zeros(X.shape[0], dtype=np.bool_)
    bad = ~np.isfinite(X).all(axis=1)
    if Y is not None:
        bad |= ~np.isfinite(Y)
    if bad.any() and on_nonfinite == "raise":
        n = int(np.argmax(bad))
        if not np.isfinite(X[n]).all():
            col = int(np.argmax(~np.isfinite(X[n])))
            what = f"x column {col} is {float(X[n, col])!r}"
        else:
            what = f"y is {float(Y[n])!r}"  # type: ignore[index]
        raise NonFiniteInputError(
            f"event {n} of this batch (learned events so far: {learned}): {what}; {consequence}. Clean the data, "
            "or use on_nonfinite='skip' to leave such events out."
        )
    return bad


class Learner:
    """Prequential online learning of one stream with a StatefulNet (see module doc).

    Args:
        model: the network (one output); the learner owns it and converts it to float64.
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
        self._rcfg = readout_config(readout, rls_forgetting, rls_prior, rls_error_clip, model.hidden[-1], "Learner")
        self.readout, self.rls_prior = readout, float(rls_prior)
        check_state_grad(state_grad, model.state_config, "Learner")
        self.state_grad = state_grad
        if model.out_features != 1:
            raise ConfigError(
                f"Learner learns one target but the model has out_features={model.out_features}; "
                "use one Learner per target."
            )
        if on_nonfinite not in ("raise", "skip"):
            raise ConfigError(f"Learner.on_nonfinite = {on_nonfinite!r} is not one of 'raise', 'skip'.")
        if backend not in ("auto", "numba", "torch"):
            raise ConfigError(f"Learner.backend = {backend!r} is not one of 'auto', 'numba', 'torch'.")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ConfigError(f"Learner.check_every = {check_every!r} is out of range: need an integer >= 1.")
        why = fast_path_unsupported(model)
        if backend == "numba" and why:
            raise ConfigError(f"backend='numba' cannot run this model: {why}. Use backend='torch'.")
        self.backend = "torch" if (backend == "torch" or why) else "numba"
        if drift is not None and self.backend != "numba":
            raise ConfigError(
                "Learner(drift=...) runs its detector in the compiled loop, which this learner does not use "
                f"({why or 'backend=torch'}); drop drift or use a model the compiled loop covers."
            )
        if drift is not None and not isinstance(drift, DriftPolicy):
            raise ConfigError(f"Learner.drift must be a DriftPolicy or None, got {type(drift).__name__}.")
        self.drift = drift
        self._ph = fresh_detector()[None, :]
        self._xws, self._yws = np.zeros(2), np.zeros(2)  # the normalisers' [weight, count] for the kernel
        self.last_drifted: np.ndarray | None = None  # [N] bool of the last learn_batch, with a drift policy
        self._model = model.double()
        self._model.reset_state(n_streams=1)
        self.optimizer_name = optimizer
        self.optimizer_settings = optimizer_settings(optimizer, optimizer_kwargs)
        self._opt_kind = OPT_KINDS[optimizer]
        self._hyper = optimizer_hyper(optimizer, self.optimizer_settings)
        self.normalize_x = bool(normalize_x)
        self.normalize_y = bool(normalize_y)
        self.x_stats = RunningStats(model.in_features, forget=forget, clip=normalize_clip)
        self.y_stats = RunningStats(1, forget=forget, clip=normalize_clip)
        self.monitor: Monitor | None = Monitor() if monitor is True else (monitor or None)
        self.check_every = check_every
        self.on_nonfinite = on_nonfinite
        self.n_learned = 0
        self.n_skipped = 0
        self._layout: Layout = layout(model)
        self._mon = np.zeros(monitor_size(self._layout.widths))
        self._since_check = 0
        self._traced = state_grad == "traced"
        self._traces_ref: StateTraces | None = None
        self._P = initial_readout_matrix(readout, model.hidden[-1], self.rls_prior)
        if self.backend == "numba":
            self._theta = flat_params(model)
            self._state = self._flat_state()
            self._opt_state = empty_optimizer_state(self._layout.n_params)
            self._opt = None
            self._traces = np.zeros((1, self._layout.n_traces if self._traced else 0))
        else:
            self._opt = make_optimizer(optimizer, self._model.parameters(), **self.optimizer_settings)
            self._traces_ref = StateTraces(self._model) if self._traced else None

    # ------------------------------------------------------------------ model access
    def _flat_state(self) -> np.ndarray:
        return np.concatenate([s.detach().double().reshape(-1).numpy() for s in self._model.held_state()]).copy()

    def _sync_model(self) -> None:
        """Write the compiled loop's parameters and state into the torch model."""
        if self.backend != "numba":
            return
        load_flat_params(self._model, self._theta)
        parts, off = [], 0
        for layer in self._model.layers:
            h = layer.out_features
            parts.append(torch.from_numpy(self._state[off : off + h].copy())[None, :])
            off += h
        self._model.commit_state(tuple(parts))

    @property
    def model(self) -> StatefulNet:
        """The torch model with the current weights and held state (a view for inspection; changes
        to it are picked up only by the torch backend)."""
        self._sync_model()
        return self._model

    @property
    def in_features(self) -> int:
        """Width of the model's input."""
        return int(self._model.in_features)

    @property
    def alerts(self) -> list[Alert]:
        return self.monitor.alerts if self.monitor else []

    # ------------------------------------------------------------------ prediction and learning
    def predict_one(self, x: Any) -> float:
        """The prediction for ``x`` with the current weights and held state; changes nothing."""
        X = _as_rows("x", x, self._model.in_features, one_event=True)
        if not np.isfinite(X).all():
            raise NonFiniteInputError(f"predict_one: x holds a non-finite value ({X[0].tolist()}); clean the input.")
        return float(self._predict(X, advance=False)[0])

    def predict_batch(self, X: Any, *, advance: bool = True) -> np.ndarray:
        """Predictions for consecutive events without targets, the state advancing through them.

        ``advance=True`` keeps the state (and input statistics) where the last event left them —
        for events that will not be learned; ``advance=False`` restores them afterwards.
        """
        X = _as_rows("X", X, self._model.in_features, one_event=False)
        if not np.isfinite(X).all():
            raise NonFiniteInputError("predict_batch: X holds non-finite values; clean the input.")
        return self._predict(X, advance=advance)

    def learn_one(self, x: Any, y: float) -> float:
        """Predict ``x`` with the model as it is, then learn ``y``; returns the prediction."""
        try:
            target = float(y)
        except (TypeError, ValueError):
            raise ConfigError(f"learn_one: the target y = {y!r} is not a number; nothing was learned.") from None
        X = _as_rows("x", x, self._model.in_features, one_event=True)
        Y = np.array([target])
        return float(self._learn_rows(X, Y, nonfinite_rows(X, Y, self.on_nonfinite, self.n_learned, _NOT_LEARNED))[0])

    def learn_batch(self, X: Any, Y: Any, *, mode: Literal["exact", "batched"] = "exact") -> np.ndarray:
        """Learn consecutive events ``X [N, F]``, ``Y [N]``; returns the prequential predictions.

        ``mode="exact"``: event by event (predict, learn, advance), identical to ``learn_one`` in a
        loop. ``mode="batched"``: predict the whole batch with the current weights (the state
        advancing event by event, exactly as :meth:`predict_batch`), then fold the targets into
        the statistics and take one step along the mean of ``delta_n * grad y_hat_n`` (a value-form
        step with unit error). Fewer optimiser steps for large batches; the predictions of events
        ``2..N`` then do not benefit from events ``1..N-1``.
        """
        X = _as_rows("X", X, self._model.in_features, one_event=False)
        Y = np.ascontiguousarray(np.asarray(Y, dtype=np.float64).reshape(-1))
        if Y.shape[0] != X.shape[0]:
            raise ConfigError(f"learn_batch: X has {X.shape[0]} row(s) but Y has {Y.shape[0]}.")
        if mode not in ("exact", "batched"):
            raise ConfigError(f"learn_batch: mode = {mode!r} is not one of 'exact', 'batched'.")
        skip = nonfinite_rows(X, Y, self.on_nonfinite, self.n_learned, _NOT_LEARNED)
        if mode == "batched":
            if self._traced or self.readout != "gradient":
                raise ConfigError("learn_batch(mode='batched') takes one gradient step per batch: it supports neither "
                                  "state_grad='traced' nor readout='rls'; use mode='exact'.")
            if self.drift is not None:
                raise ConfigError("learn_batch(mode='batched') has no per-event errors to test for drift; use mode='exact'.")
            return self._learn_batched(X, Y, skip)
        return self._learn_rows(X, Y, skip)

    def _learn_rows(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray) -> np.ndarray:
        """Exact-mode learning of checked rows, consulting the monitor every ``check_every`` events."""
        out = np.empty(X.shape[0])
        drifted = np.zeros(X.shape[0], dtype=np.bool_)
        start = 0
        while start < X.shape[0]:
            stop = min(X.shape[0], start + self.check_every - self._since_check)
            self._learn_exact(X[start:stop], Y[start:stop], skip[start:stop], out[start:stop], drifted[start:stop],
                              offset=start)
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

    # ------------------------------------------------------------------ backends
    def _kernel_args(self) -> tuple[Any, ...]:
        xs, ys = self.x_stats, self.y_stats
        self._xws[0], self._xws[1] = xs.weight, xs.count
        self._yws[0], self._yws[1] = ys.weight, ys.count
        o = self._opt_state
        return (
            self._opt_kind, self._hyper, o["buf1"], o["buf2"], o["scal"],
            xs._mean, xs._m2, self._xws, xs.forget, xs.eps, self.normalize_x,
            ys._mean, ys._m2, self._yws, ys.forget, ys.eps, self.normalize_y, ys.clip or 0.0,
            self._mon, self.monitor is not None,
        )

    def _after_kernel(self) -> None:
        self.x_stats.weight, self.x_stats.count = float(self._xws[0]), int(self._xws[1])
        self.y_stats.weight, self.y_stats.count = float(self._yws[0]), int(self._yws[1])

    def _raise_state_error(self, n: int, status: int, offset: int) -> None:
        what = "the prediction" if status == 1 else "the update"
        raise NonFiniteStateError(
            f"event {offset + n} of this batch (learned events so far: {self.n_learned}): {what} became non-finite "
            f"from finite data; the event was not learned and the learner is unchanged since the previous event. "
            f"Lower the learning rate (optimizer={self.optimizer_name!r}, settings {self.optimizer_settings}) or use "
            "optimizer='obgd', whose steps are bounded" + (RLS_HINT if self.readout == "rls" else ".")
        )

    def _drift_args(self, drifted: np.ndarray) -> tuple[Any, ...]:
        return drift_kernel_args(self.drift, self._ph, self._model.state_config.init, drifted)

    def _readout_args(self) -> tuple[Any, ...]:
        return self.readout == "rls", self._P, self._rcfg

    def _learn_exact(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray, out: np.ndarray, drifted: np.ndarray, *,
                     offset: int) -> None:
        if self.backend == "numba":
            L = self._layout
            args = self._kernel_args()
            done, status = fp.run_events(self._theta, L.lay, L.head, L.fixed_gain, L.cfg, L.mode, L.bound,
                                         self._state[None, :], self._traces, self._traced,
                                         np.zeros(X.shape[0], dtype=np.int64), X, Y, True, skip,
                                         *args, out, *self._drift_args(drifted), *self._readout_args())
            self._after_kernel()
            if status:
                self._raise_state_error(done, status, offset)
            return
        for n in range(X.shape[0]):
            if skip[n]:
                out[n] = np.nan
                continue
            out[n] = self._torch_event(X[n], float(Y[n]), offset + n)

    def _torch_event(self, x: np.ndarray, y: float, index: int) -> float:
        model, xs, ys, traces = self._model, self.x_stats, self.y_stats, self._traces_ref
        xn = xs.transform(x) if self.normalize_x else x
        acts: list[torch.Tensor] = []
        acts_out: list[np.ndarray] = []  # the readout's input, for RLS
        hook = (model.head.register_forward_pre_hook(lambda m, inp: acts_out.append(inp[0].detach().numpy()[0].copy()))
                if self.readout == "rls" else None)
        try:
            with torch.enable_grad():
                held = model.held_state() if traces is None else traces.surrogate(model.held_state())
                pred, new_state = model(torch.from_numpy(np.asarray(xn, dtype=np.float64))[None, :], held, acts)
        finally:
            if hook is not None:
                hook.remove()
        sy = float(ys.std[0]) if self.normalize_y else 1.0
        my = float(ys.mean[0]) if self.normalize_y else 0.0
        yh = float(pred.detach())
        p = yh * sy + my
        if not np.isfinite(p):
            self._raise_state_error(index, 1, 0)
        delta = (y - my) / sy - yh
        readout_learns = self.readout == "rls" and (not self.normalize_y or ys.count >= self._rcfg[3])
        if readout_learns and not self._rls_gain_ok(acts_out[0]):
            self._raise_state_error(index, 2, 0)  # checked before anything moves, as the compiled loop does
        params = list(model.parameters())
        before = [q.detach().clone() for q in params]
        traces_before = None if traces is None else [list(group) for group in traces.traces]
        if traces is not None:
            traces.advance(new_state)
        self._opt.zero_grad(set_to_none=True)
        pred.sum().backward()
        if self.readout == "rls":  # the optimiser moves everything but the readout
            for q in (model.head.weight, model.head.bias):
                q.grad.zero_()
        try:
            self._opt.step(delta=delta)
            failed = not np.isfinite(self._opt.last_update_l1)
        except ValueError:
            failed = True
        if failed:
            with torch.no_grad():
                for q, b in zip(params, before):
                    q.copy_(b)
            if traces is not None:
                traces.traces = traces_before
            self._raise_state_error(index, 2, 0)
        if readout_learns:
            self._rls_reference(acts_out[0], delta)
        model.commit_state(new_state, force_detach=True)
        if self.normalize_x:
            xs.update(x)
        if self.normalize_y:
            ys.update(np.array([y]))
        if self.monitor is not None:
            gsq = sum(float((q.grad * q.grad).sum()) for q in params if q.grad is not None)
            tl1 = sum(float(q.detach().abs().sum()) for q in params)
            fp._monitor.py_func(
                self._mon, self._layout.lay,
                torch.cat([s.reshape(-1) for s in model.held_state()]).numpy(),
                torch.cat([a.detach().reshape(-1) for a in acts]).numpy(),
                self._model.state_config.max_abs, gsq, tl1,
                self._opt.last_update_l1, self._opt.effective_step, len(model.layers),
            )
        return p

    def _rls_gain_ok(self, h: np.ndarray) -> bool:
        """Whether the RLS step on readout input ``h`` has a finite, positive denominator."""
        z = np.append(h, 1.0)
        n = z.shape[0]
        d = self._rcfg[0] + z @ (self._P[: n * n].reshape(n, n) @ z)
        return bool(np.isfinite(d) and d > 0)

    def _rls_reference(self, h: np.ndarray, e: float) -> None:
        """The torch backend's RLS readout step, written from the textbook equations (module doc of
        :mod:`psann_stream.readout`) in numpy float64, independently of the compiled loop's."""
        z = np.append(h, 1.0)
        n = z.shape[0]
        P, (err_sq, err_w) = self._P[: n * n].reshape(n, n), self._P[n * n:]
        lam, cap, clip = self._rcfg[:3]
        a = P @ z
        d = lam + z @ a  # finite and positive: _rls_gain_ok checked it before the optimiser step
        if clip > 0 and err_w > 0:
            e = float(np.clip(e, -clip * np.sqrt(err_sq / err_w), clip * np.sqrt(err_sq / err_w)))
        head = self._model.head
        with torch.no_grad():
            head.weight += torch.from_numpy(a[:-1] * (e / d))[None, :]
            head.bias += float(a[-1] * (e / d))
        P = P - np.outer(a, a) / d
        P = P / max(lam, np.trace(P) / cap)
        self._P = np.concatenate([P.reshape(-1), [0.999 * err_sq + e * e, 0.999 * err_w + 1.0]])

    def _predict(self, X: np.ndarray, *, advance: bool) -> np.ndarray:
        out = np.empty(X.shape[0])
        if self.backend == "numba":
            L = self._layout
            state = self._state if advance else self._state.copy()
            traces = self._traces if advance else self._traces.copy()
            saved = None if advance else (self.x_stats._mean.copy(), self.x_stats._m2.copy(), self.x_stats.weight, self.x_stats.count)
            args = self._kernel_args()
            done, status = fp.run_events(self._theta, L.lay, L.head, L.fixed_gain, L.cfg, L.mode, L.bound,
                                         state[None, :], traces, self._traced,
                                         np.zeros(X.shape[0], dtype=np.int64), X, np.zeros(X.shape[0]),
                                         False, np.zeros(X.shape[0], dtype=np.bool_), *args, out,
                                         *self._drift_args(np.zeros(X.shape[0], dtype=np.bool_)), *self._readout_args())
            self._after_kernel()
            if saved is not None:
                self.x_stats._mean, self.x_stats._m2, self.x_stats.weight, self.x_stats.count = saved
            if status:
                self._raise_state_error(done, status, 0)
            return out
        model, traces = self._model, (self._traces_ref if advance else None)
        held = model.held_state()
        saved = copy.deepcopy(self.x_stats.state_dict())
        state = held
        with torch.set_grad_enabled(traces is not None):  # traces advance with the state they follow
            for n in range(X.shape[0]):
                xn = self.x_stats.transform(X[n]) if self.normalize_x else X[n]
                prev = state if traces is None else traces.surrogate(state)
                pred, state = model(torch.from_numpy(np.asarray(xn, dtype=np.float64))[None, :], prev)
                if traces is not None:
                    traces.advance(state)
                    state = tuple(t.detach() for t in state)
                pred = pred.detach()
                sy = float(self.y_stats.std[0]) if self.normalize_y else 1.0
                my = float(self.y_stats.mean[0]) if self.normalize_y else 0.0
                out[n] = float(pred) * sy + my
                if self.normalize_x:
                    self.x_stats.update(X[n])
        if advance:
            model.commit_state(state, force_detach=True)
        else:
            self.x_stats.load_state_dict(saved)
        return out

    def _learn_batched(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray) -> np.ndarray:
        """Predict the batch with fixed weights, then one step along mean(delta_n grad y_hat_n)."""
        model = self.model  # synced
        keep = ~skip
        Xk, Yk = X[keep], Y[keep]
        out = np.full(X.shape[0], np.nan)
        if not len(Xk):
            self.n_skipped += int(skip.sum())
            return out
        xs, ys = self.x_stats, self.y_stats
        state = model.held_state()
        total = torch.zeros((), dtype=torch.float64)
        preds = []
        with torch.enable_grad():
            for n in range(Xk.shape[0]):
                xn = xs.transform(Xk[n]) if self.normalize_x else Xk[n]
                pred, state = model(torch.from_numpy(np.asarray(xn, dtype=np.float64))[None, :], state)
                state = tuple(s.detach() for s in state)
                sy = float(ys.std[0]) if self.normalize_y else 1.0
                my = float(ys.mean[0]) if self.normalize_y else 0.0
                yh = float(pred.detach())
                preds.append(yh * sy + my)
                delta = (Yk[n] - my) / sy - yh
                total = total + pred.sum() * (delta / len(Xk))
                if self.normalize_x:
                    xs.update(Xk[n])
        if self.normalize_y:  # targets become known after the whole batch was predicted
            ys.update(Yk[:, None])
        opt = self._opt if self.backend == "torch" else make_optimizer(self.optimizer_name, model.parameters(), **self.optimizer_settings)
        if self.backend == "numba":
            optimizer_state_to_torch(opt, model, self._opt_state)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step(delta=1.0)
        model.commit_state(state, force_detach=True)
        if self.backend == "numba":
            self._theta = flat_params(model)
            self._state = self._flat_state()
            self._opt_state = optimizer_state_from_torch(opt, model)
        out[keep] = preds
        self.n_learned += int(keep.sum())
        self.n_skipped += int(skip.sum())
        return out

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
        self._layout = layout(self._model)
        self.x_stats = RunningStats(in_features, forget=self.x_stats.forget, eps=self.x_stats.eps, clip=self.x_stats.clip)
        if self.backend == "torch":
            self._opt = make_optimizer(self.optimizer_name, self._model.parameters(), **self.optimizer_settings)
            self._traces_ref = StateTraces(self._model) if self._traced else None
        else:
            self._traces = np.zeros((1, self._layout.n_traces if self._traced else 0))
        self.load_state_dict(sd)

    # ------------------------------------------------------------------ monitor, reset, persistence
    def _check_monitor(self) -> None:
        if self.monitor is None:
            return
        cfg = self._model.state_config
        bounds = layer_bounds(self._layout.lay, self._theta, cfg) if self.backend == "numba" else self._model.state_bounds()
        self.monitor.check(
            self._mon, config=cfg, bounds=bounds, widths=self._layout.widths,
            optimizer=self.optimizer_name, settings=self.optimizer_settings, step=self.n_learned,
        )
        self._mon[-1] = 0.0  # the max effective step is per check window

    def reset(self, *, state: bool = True, optimizer: bool = False) -> None:
        """Reset the held state to ``init`` (and zero its eligibility traces) and/or restart the
        optimiser (ObGD: traces; intentional: error RMS; Adam: bias correction, moments kept)."""
        if state:
            if self.backend == "numba":
                self._state[:] = self._model.state_config.init
                self._traces[:] = 0.0
            else:
                self._model.reset_state()
                if self._traces_ref is not None:
                    self._traces_ref.reset()
        if optimizer:
            if self.backend == "numba":
                self._opt_state[restart_buffer(self.optimizer_name)][:] = 0.0
            else:
                self._opt.reset()
            self._P = initial_readout_matrix(self.readout, self._model.hidden[-1], self.rls_prior)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: weights and held state, optimiser state,
        normalisers, monitor statistics and counters (plain tensors, arrays and numbers)."""
        model = self.model
        opt_state = self._opt_state if self.backend == "numba" else optimizer_state_from_torch(self._opt, model)
        return {
            "format": FORMAT,
            "backend": self.backend,
            "state_config": model.state_config.to_dict(),
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": {"name": self.optimizer_name, **{k: torch.from_numpy(v.copy()) for k, v in opt_state.items()}},
            "x_stats": {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v) for k, v in self.x_stats.state_dict().items()},
            "y_stats": {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v) for k, v in self.y_stats.state_dict().items()},
            "monitor": torch.from_numpy(self._mon.copy()),
            "drift": torch.from_numpy(self._ph.copy()),
            "state_grad": self.state_grad,
            "traces": self._flat_traces(),
            "readout": {"kind": self.readout, "P": torch.from_numpy(self._P.copy())},
            "counters": {"n_learned": self.n_learned, "n_skipped": self.n_skipped, "since_check": self._since_check},
        }

    def _flat_traces(self) -> torch.Tensor:
        """The eligibility traces laid out like the parameters (empty when truncated)."""
        if not self._traced:
            return torch.zeros(0, dtype=torch.float64)
        if self._traces_ref is not None:
            return self._traces_ref.flat(self._model)
        return torch.from_numpy(self._traces[0].copy())

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the learner must have been built with the same architecture."""
        try:
            if sd.get("format") != FORMAT:
                raise CheckpointError(f"unknown learner state format {sd.get('format')!r}; expected {FORMAT!r}.")
            if sd["optimizer"]["name"] != self.optimizer_name:
                raise CheckpointError(
                    f"the saved optimiser is {sd['optimizer']['name']!r} but this learner uses {self.optimizer_name!r}; "
                    "build the Learner with the same optimizer."
                )
            check_restored_state(self._model.state_config, sd.get("state_config"), [], "Learner.load_state_dict")
            self._model.load_state_dict(sd["model"])  # the layers check every saved |s| <= max_abs
            self._model.double()
            opt_state = {k: _np(sd["optimizer"][k]) for k in ("buf1", "buf2", "scal")}
            for name, stats in (("x_stats", self.x_stats), ("y_stats", self.y_stats)):
                stats.load_state_dict({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in sd[name].items()})
            mon = _np(sd["monitor"])
            ph = _np(sd["drift"]) if "drift" in sd else fresh_detector()[None, :]  # older states: no detector
            saved_grad = sd.get("state_grad", "truncated")  # older states: truncated learning
            saved_readout = sd.get("readout", {"kind": "gradient", "P": torch.zeros(0)})  # older states: gradient
            readout_kind, P = saved_readout["kind"], _np(saved_readout["P"])
            traces = _np(sd["traces"]) if "traces" in sd else np.zeros(0)
            counters = sd["counters"]
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"the learner state cannot be loaded: {exc}. Was it saved by Learner.state_dict() "
                                  "for a model of the same architecture?") from None
        if opt_state["buf1"].shape[0] != self._layout.n_params or mon.shape != self._mon.shape:
            raise CheckpointError("the saved learner has a different architecture (parameter count differs).")
        if ph.shape != self._ph.shape:
            raise CheckpointError(f"the saved drift detector has shape {tuple(ph.shape)}; expected {self._ph.shape}.")
        if saved_grad != self.state_grad:
            raise CheckpointError(
                f"the saved learner used state_grad={saved_grad!r} but this one uses {self.state_grad!r}; build the "
                "Learner with the same state_grad (the traces are part of what it continues from)."
            )
        if readout_kind != self.readout or P.shape != self._P.shape:
            raise CheckpointError(
                f"the saved learner used readout={readout_kind!r} (a readout matrix of {P.shape[0]} values) but this one "
                f"uses readout={self.readout!r} ({self._P.shape[0]}); build the Learner with the same readout and widths."
            )
        if traces.shape[0] != (self._layout.n_traces if self._traced else 0):
            raise CheckpointError(f"the saved traces hold {traces.shape[0]} values; expected "
                                  f"{self._layout.n_traces if self._traced else 0}.")
        self._mon, self._ph, self._P = mon, ph, P.copy()
        self.n_learned, self.n_skipped = int(counters["n_learned"]), int(counters["n_skipped"])
        self._since_check = int(counters["since_check"])
        if self.backend == "numba":
            self._theta = flat_params(self._model)
            self._state = self._flat_state()
            self._opt_state = opt_state
            self._traces = traces.reshape(1, -1).copy()
        else:
            optimizer_state_to_torch(self._opt, self._model, opt_state)
            if self._traces_ref is not None:
                self._traces_ref.load_flat(self._model, torch.from_numpy(traces))
