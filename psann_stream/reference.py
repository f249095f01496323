"""The torch autograd reference learner: the same prequential steps as the compiled loop, written with
autograd, :mod:`psann_stream.optim` and :class:`~psann_stream.normalize.RunningStats`.

It is what the compiled loop is tested against (``tests/test_fastpath.py``), and what a
:class:`~psann_stream.learner.Learner` runs for models the loop does not cover (another module type,
several outputs, the ball bound). :class:`ReferencePath` and the compiled path of
:mod:`psann_stream.learner` answer the same private calls; the Learner picks one at construction.

:func:`learn_batched` (one step per batch along the mean gradient) is a torch computation for both
paths.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import _fastpath as fp
from ._packing import Layout, flat_state, optimizer_state_from_torch, optimizer_state_to_torch
from .drift import fresh_detector
from .state import StateBounds
from .model import StatefulNet
from .normalize import RunningStats
from .optim import make_optimizer
from .readout import initial_readout_matrix
from .traces import StateTraces

__all__ = ["Fail", "ReferencePath", "learn_batched"]

Fail = Callable[[int, int], None]  # (event index in the call, status 1 prediction / 2 update): raises


def _target_scale(ys: RunningStats, normalize_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each output's target scale and mean (``[T]``; 1 and 0 without the target normaliser)."""
    T = ys.n_features
    return (np.array(ys.std, dtype=np.float64), np.array(ys.mean, dtype=np.float64)) if normalize_y else (np.ones(T), np.zeros(T))


def _error_direction(D: np.ndarray) -> tuple[float, np.ndarray]:
    """The optimiser's error and the output weights ``u`` of the gradient (``_fastpath`` module doc):
    one output, the error itself and ``u = 1``; several, ``||D||`` and ``D / ||D||`` (0 if ``D = 0``)."""
    if D.shape[0] == 1:
        return float(D[0]), np.ones(1)
    dn = float(np.sqrt(D @ D))
    return dn, (D / dn if dn > 0 else np.zeros_like(D))


def _shaped(preds: list[np.ndarray]) -> np.ndarray:
    """Per-event prediction rows ``[T]`` as the learners return them: ``[N]`` for one output."""
    out = np.array(preds, dtype=np.float64).reshape(len(preds), -1)
    return out[:, 0].copy() if out.shape[1] == 1 else out


def learn_batched(model: StatefulNet, opt: torch.optim.Optimizer, xs: RunningStats, ys: RunningStats,
                  normalize_x: bool, normalize_y: bool, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Predict the rows ``X`` with fixed weights (the state advancing event by event), fold the targets
    into ``ys``, then one optimiser step along ``mean(delta_n . grad y_hat_n)`` with unit error; the
    model holds the last event's state. Returns the predictions in target units (``[N]``, or
    ``[N, T]`` for several outputs)."""
    Y = Y.reshape(X.shape[0], -1)
    state = model.held_state()
    total = torch.zeros((), dtype=torch.float64)
    preds = []
    with torch.enable_grad():
        for n in range(X.shape[0]):
            xn = xs.transform(X[n]) if normalize_x else X[n]
            pred, state = model(torch.from_numpy(np.asarray(xn, dtype=np.float64))[None, :], state)
            state = tuple(s.detach() for s in state)
            sy, my = _target_scale(ys, normalize_y)
            yh = pred.detach().numpy()[0]
            preds.append(yh * sy + my)
            D = (Y[n] - my) / sy - yh
            if D.shape[0] == 1:
                total = total + pred.sum() * (float(D[0]) / len(X))
            else:
                total = total + (pred[0] * torch.from_numpy(D / len(X))).sum()
            if normalize_x:
                xs.update(X[n])
    if normalize_y:  # targets become known after the whole batch was predicted
        ys.update(Y)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step(delta=1.0)
    model.commit_state(state, force_detach=True)
    return _shaped(preds)


class ReferencePath:
    """A learner's arrays and steps in torch (see the module doc). ``xs``/``ys`` are the learner's
    normalisers; ``mon`` the monitor statistics (layout of :mod:`psann_stream.monitor`), ``P`` the
    readout matrix with RLS, ``ph`` an idle drift detector (the reference has no drift test)."""

    def __init__(self, model: StatefulNet, layout: Layout, xs: RunningStats, ys: RunningStats, *, optimizer: str,
                 settings: Mapping[str, Any], normalize_x: bool, normalize_y: bool, traced: bool, readout: str,
                 rcfg: np.ndarray, rls_prior: float, mon: np.ndarray) -> None:
        self._model, self.layout, self.xs, self.ys = model, layout, xs, ys
        self.optimizer, self.settings = optimizer, dict(settings)
        self.normalize_x, self.normalize_y = normalize_x, normalize_y
        self.readout, self.rcfg, self.rls_prior = readout, rcfg, rls_prior
        self.opt = make_optimizer(optimizer, model.parameters(), **self.settings)
        self.trace_ref = StateTraces(model) if traced else None
        self.mon, self.ph = mon, fresh_detector()[None, :]
        self.P = initial_readout_matrix(readout, model.hidden[-1], rls_prior)

    # ------------------------------------------------------------------ inspection
    @property
    def model(self) -> StatefulNet:
        return self._model

    @property
    def state(self) -> np.ndarray:
        """The held state, all layers concatenated (a copy)."""
        return flat_state(self._model)

    def bounds(self) -> list[StateBounds]:
        return self._model.state_bounds()

    # ------------------------------------------------------------------ steps
    def predict(self, X: np.ndarray, *, advance: bool, fail: Fail) -> np.ndarray:
        out = np.empty((X.shape[0], self._model.out_features))
        model, traces = self._model, (self.trace_ref if advance else None)
        saved = copy.deepcopy(self.xs.state_dict())
        state = model.held_state()
        with torch.set_grad_enabled(traces is not None):  # traces advance with the state they follow
            for n in range(X.shape[0]):
                xn = self.xs.transform(X[n]) if self.normalize_x else X[n]
                prev = state if traces is None else traces.surrogate(state)
                pred, state = model(torch.from_numpy(np.asarray(xn, dtype=np.float64))[None, :], prev)
                if traces is not None:
                    traces.advance(state)
                    state = tuple(t.detach() for t in state)
                sy, my = _target_scale(self.ys, self.normalize_y)
                out[n] = pred.detach().numpy()[0] * sy + my
                if self.normalize_x:
                    self.xs.update(X[n])
        if advance:
            model.commit_state(state, force_detach=True)
        else:
            self.xs.load_state_dict(saved)
        return _shaped(list(out))

    def learn(self, X: np.ndarray, Y: np.ndarray, skip: np.ndarray, out: np.ndarray, drifted: np.ndarray, *,
              monitor: bool, fail: Fail) -> None:
        for n in range(X.shape[0]):
            if skip[n]:
                out[n] = np.nan
                continue
            p = self._event(X[n], np.atleast_1d(Y[n]).astype(np.float64), n, monitor, fail)
            out[n] = p[0] if out.ndim == 1 else p

    def learn_batched(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        return learn_batched(self._model, self.opt, self.xs, self.ys, self.normalize_x, self.normalize_y, X, Y)

    def _event(self, x: np.ndarray, y: np.ndarray, index: int, monitor: bool, fail: Fail) -> np.ndarray:
        """One event (``y``: ``[T]``); returns its prediction ``[T]`` in target units."""
        model, xs, ys, traces = self._model, self.xs, self.ys, self.trace_ref
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
        sy, my = _target_scale(ys, self.normalize_y)
        yh = pred.detach().numpy()[0].copy()
        p = yh * sy + my
        if not np.isfinite(p).all():
            fail(index, 1)
        D = (y - my) / sy - yh
        delta, u = _error_direction(D)
        readout_learns = self.readout == "rls" and (not self.normalize_y or ys.count >= self.rcfg[3])
        if readout_learns and not self._rls_gain_ok(acts_out[0]):
            fail(index, 2)  # checked before anything moves, as the compiled loop does
        params = list(model.parameters())
        before = [q.detach().clone() for q in params]
        traces_before = None if traces is None else [list(group) for group in traces.traces]
        if traces is not None:
            traces.advance(new_state)
        self.opt.zero_grad(set_to_none=True)
        (pred.sum() if u.shape[0] == 1 else (pred[0] * torch.from_numpy(u)).sum()).backward()
        if self.readout == "rls":  # the optimiser moves everything but the readout
            for q in (model.head.weight, model.head.bias):
                q.grad.zero_()
        try:
            self.opt.step(delta=delta)
            failed = not np.isfinite(self.opt.last_update_l1)
        except ValueError:
            failed = True
        if failed:
            with torch.no_grad():
                for q, b in zip(params, before):
                    q.copy_(b)
            if traces is not None:
                traces.traces = traces_before
            fail(index, 2)
        # the monitor's update ratio takes ||theta||_1 after the optimiser's move and before the readout's
        # (as the compiled loop, whose optimiser returns it)
        tl1 = sum(float(q.detach().abs().sum()) for q in params) if monitor else 0.0
        if readout_learns:
            self._rls_step(acts_out[0], D)
        model.commit_state(new_state, force_detach=True)
        if self.normalize_x:
            xs.update(x)
        if self.normalize_y:
            ys.update(y[None, :])
        if monitor:
            gsq = sum(float((q.grad * q.grad).sum()) for q in params if q.grad is not None)
            fp._monitor.py_func(
                self.mon, self.layout.lay,
                torch.cat([s.reshape(-1) for s in model.held_state()]).numpy(),
                torch.cat([a.detach().reshape(-1) for a in acts]).numpy(),
                model.state_config.max_abs, gsq, tl1,
                self.opt.last_update_l1, self.opt.effective_step, len(model.layers),
            )
        return p

    def _rls_gain_ok(self, h: np.ndarray) -> bool:
        """Whether the RLS step on readout input ``h`` has a finite, positive denominator."""
        z = np.append(h, 1.0)
        n = z.shape[0]
        d = self.rcfg[0] + z @ (self.P[: n * n].reshape(n, n) @ z)
        return bool(np.isfinite(d) and d > 0)

    def _rls_step(self, h: np.ndarray, D: np.ndarray) -> None:
        """The RLS readout step for the errors ``D [T]`` of every output (one ``P``: they share their
        input), written from the textbook equations (module doc of :mod:`psann_stream.readout`) in numpy
        float64, independently of the compiled loop's."""
        z = np.append(h, 1.0)
        n = z.shape[0]
        P, (err_sq, err_w) = self.P[: n * n].reshape(n, n), self.P[n * n:]
        lam, cap, clip = self.rcfg[:3]
        a = P @ z
        d = lam + z @ a  # finite and positive: _rls_gain_ok checked it before the optimiser step
        e = D.astype(np.float64).copy()
        if clip > 0 and err_sq > 0:  # no limit before a non-zero error was learned
            e = np.clip(e, -clip * np.sqrt(err_sq / err_w), clip * np.sqrt(err_sq / err_w))
        head = self._model.head
        with torch.no_grad():
            head.weight += torch.from_numpy(np.outer(e / d, a[:-1]))
            head.bias += torch.from_numpy(a[-1] * (e / d))
        P = P - np.outer(a, a) / d
        P = P / max(lam, np.trace(P) / cap)
        self.P = np.concatenate([P.reshape(-1), [0.999 * err_sq + float(np.mean(e * e)), 0.999 * err_w + 1.0]])

    # ------------------------------------------------------------------ reset and persistence
    def reset(self, *, state: bool, optimizer: bool) -> None:
        if state:
            self._model.reset_state()
            if self.trace_ref is not None:
                self.trace_ref.reset()
        if optimizer:
            self.opt.reset()
            self.P = initial_readout_matrix(self.readout, self._model.hidden[-1], self.rls_prior)

    def export(self) -> dict[str, Any]:
        """The optimiser state (flat, the compiled loop's layout), traces (flat), ``P`` and ``ph``."""
        traces = (self.trace_ref.flat(self._model) if self.trace_ref is not None
                  else torch.zeros(0, dtype=torch.float64))
        return {"optimizer": optimizer_state_from_torch(self.opt, self._model), "traces": traces.numpy().copy(),
                "P": self.P.copy(), "ph": self.ph.copy()}

    def restore(self, opt_state: Mapping[str, np.ndarray], traces: np.ndarray, P: np.ndarray, ph: np.ndarray) -> None:
        """Continue from the torch model (restored by the learner) and saved arrays (checked for shape
        by the learner)."""
        optimizer_state_to_torch(self.opt, self._model, opt_state)
        if self.trace_ref is not None:
            self.trace_ref.load_flat(self._model, torch.from_numpy(traces))
        self.P, self.ph = P.copy(), ph.copy()
