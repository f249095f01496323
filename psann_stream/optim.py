"""Streaming optimisers: one sample at a time, no tuning per stream, bounded steps.

All three are ``torch.optim.Optimizer`` subclasses (``state_dict`` / ``load_state_dict`` /
``zero_grad`` as usual) with two calling forms of ``step``:

* **value form** — ``step(delta=d)``: ``p.grad`` holds the gradient of the *prediction*
  ``dy_hat/dtheta`` and ``d = y - y_hat`` is the error. This is the form of the papers below, and the
  one :class:`~psann_stream.learner.Learner` uses. After each value-form step,
  :attr:`effective_step` is the first-order fraction of the error the update removed,
  ``<dtheta, grad y_hat> / d`` (the NLMS / Autostep "effective step size"): 1 fits the sample
  exactly, 2 or more overshoots, and for a linear model diverges.
* **loss form** — ``step()``: ``p.grad`` holds the gradient of a loss, as with any torch
  optimiser, so ``ObGD`` or ``StreamingAdam`` replace ``Adam`` in existing code with one line.
  :attr:`effective_step` is NaN (it needs the error).

Every step also records :attr:`last_update_l1`, the l1 norm of the parameter change.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from .errors import ConfigError

__all__ = ["ObGD", "IntentionalSGD", "StreamingAdam", "make_optimizer", "optimizer_defaults", "OPTIMIZERS"]


def _check(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{low} {'<' if low_open else '<='}"
        hi = "" if high == math.inf else f" {'<' if high_open else '<='} {high}"
        raise ConfigError(f"{name} = {value!r} is out of range: need {lo} {name.split('.')[-1]}{hi}.")
    return float(value)


class _StreamingOptimizer(Optimizer):
    """Shared machinery: the two calling forms, the update's l1 norm and the effective step."""

    effective_step: float
    last_update_l1: float

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)
        self.effective_step = float("nan")
        self.last_update_l1 = 0.0

    def _params(self) -> list[tuple[dict[str, Any], torch.Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    def _direction(self, delta: float | None, pairs: list[tuple[dict[str, Any], torch.Tensor]]) -> list[torch.Tensor]:
        """The parameter change of this step, one tensor per (group, param) pair, before applying it."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None, *, delta: float | torch.Tensor | None = None) -> Any:  # type: ignore[override]
        """Take one step; ``delta`` selects the value form (see the module doc)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        d = None if delta is None else float(delta)
        if d is not None and not math.isfinite(d):
            raise ValueError(f"{type(self).__name__}.step: delta = {d!r} is not finite; nothing was updated.")
        pairs = self._params()
        if not pairs:
            return loss
        moves = self._direction(d, pairs)
        l1 = 0.0
        along = 0.0
        for (_, p), mv in zip(pairs, moves):
            l1 += float(mv.abs().sum())
            if d is not None:
                along += float((mv * p.grad).sum())
            p.add_(mv)
        self.last_update_l1 = l1
        self.effective_step = (along / d if d != 0 else 0.0) if d is not None else float("nan")
        return loss

    def reset(self) -> None:
        """Forget what is specific to the recent past (see each optimiser); hyper-parameters stay."""


class ObGD(_StreamingOptimizer):
    """Overshooting-bounded gradient descent (Elsayed, Vasan & Mahmood 2024, arXiv:2410.14606).

    Per step, with ``g`` the gradient (value form: of the prediction), ``d`` the error and the
    eligibility trace ``z`` (one per parameter, ``z = 0`` at start and after :meth:`reset`)::

        z      <- trace_decay * z + g
        d_bar  =  max(|d|, 1)
        M      =  lr * kappa * d_bar * ||z||_1          (l1 over all parameters)
        a_hat  =  lr / max(M, 1)
        theta  <- theta + a_hat * d * z                  (loss form: theta - a_hat * z, d_bar = 1)

    So every step moves the parameters by at most ``1 / kappa`` in l1 norm, whatever the gradient or
    the error (``a_hat |d| ||z||_1 <= |d| / (kappa d_bar) <= 1 / kappa``), and ``d = 0`` moves
    nothing. Re-implemented from the paper's equations.

    Args:
        lr: step size ``alpha`` (the paper uses 1.0).
        kappa: overshoot bound, ``> 0``: every move is at most ``1 / kappa`` in l1 (the paper uses 2 for
            value prediction; 1.25, the default here and the Learner's, was chosen on psann_stream's
            scenarios).
        trace_decay: ``gamma * lambda`` of the eligibility trace, in ``[0, 1)``; 0 for supervised
            streams: then ``z = g`` and no trace is stored.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = ObGD([w], lr=1.0, kappa=2.0)
    >>> w.grad = torch.tensor([3.0, 1.0])            # d y_hat / d w
    >>> opt.step(delta=10.0)                          # huge error: the move is capped
    >>> round(opt.last_update_l1, 6)
    0.5
    """

    def __init__(self, params: Iterable[Any], lr: float = 1.0, kappa: float = 1.25, trace_decay: float = 0.0) -> None:
        _check("ObGD.lr", lr, low=0.0, low_open=True)
        _check("ObGD.kappa", kappa, low=0.0, low_open=True)
        _check("ObGD.trace_decay", trace_decay, low=0.0, high=1.0, high_open=True)
        super().__init__(params, dict(lr=lr, kappa=kappa, trace_decay=trace_decay))

    def _direction(self, delta: float | None, pairs: list[tuple[dict[str, Any], torch.Tensor]]) -> list[torch.Tensor]:
        traces = []
        for group, p in pairs:
            if group["trace_decay"] == 0.0:  # z = g: no trace is kept
                traces.append(p.grad)
                continue
            st = self.state[p]
            if "trace" not in st:
                st["trace"] = torch.zeros_like(p)
            z = st["trace"]
            z.mul_(group["trace_decay"]).add_(p.grad)
            traces.append(z)
        z_l1 = sum(float(z.abs().sum()) for z in traces)
        d_bar = 1.0 if delta is None else max(abs(delta), 1.0)
        moves = []
        for (group, _), z in zip(pairs, traces):
            big_m = group["lr"] * group["kappa"] * d_bar * z_l1
            a_hat = group["lr"] / max(big_m, 1.0)
            moves.append(z * (a_hat * delta if delta is not None else -a_hat))
        return moves

    def reset(self) -> None:
        """Zero the eligibility traces (a stream or episode boundary)."""
        for st in self.state.values():
            if "trace" in st:
                st["trace"].zero_()


class IntentionalSGD(_StreamingOptimizer):
    """Normalised ("intentional") SGD: each step aims to remove a fraction ``eta`` of the error.

    Value form (NLMS on the prediction's gradient; Sharifnassab et al. 2026, arXiv:2604.19033)::

        d_c    = clip(d, +-error_clip * rms(d))           rms: EMA (decay 0.999) of past errors
        dtheta = eta * d_c * g / (eps + ||g||_2^2)
        dtheta *= min(1, 1 / (kappa * ||dtheta||_1))      the l1 move is at most 1 / kappa

    To first order the prediction moves by ``eta * d_c * ||g||^2 / (eps + ||g||^2) <= eta * d_c``:
    no overshoot for ``eta <= 1``, stable for ``0 < eta < 2`` (NLMS). The loss form is not
    defined (the step needs the error): call ``step(delta=...)``.

    Args:
        lr: ``eta`` in ``(0, 2)``.
        kappa: l1 cap ``1 / kappa`` on every move, ``> 0``.
        eps: regulariser of ``||g||^2``, ``> 0``.
        error_clip: clip errors at this many running RMS (``None``: never clip).

    >>> w = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    >>> opt = IntentionalSGD([w], lr=0.5, eps=1e-12)
    >>> w.grad = torch.tensor([1.0, 1.0])             # y_hat = w . x with x = (1, 1)
    >>> opt.step(delta=0.4)
    >>> round(opt.effective_step, 6)                  # half of the error removed
    0.5
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.5,
        kappa: float = 2.0,
        eps: float = 1e-8,
        error_clip: float | None = 10.0,
    ) -> None:
        _check("IntentionalSGD.lr", lr, low=0.0, high=2.0, low_open=True, high_open=True)
        _check("IntentionalSGD.kappa", kappa, low=0.0, low_open=True)
        _check("IntentionalSGD.eps", eps, low=0.0, low_open=True)
        if error_clip is not None:
            _check("IntentionalSGD.error_clip", error_clip, low=0.0, low_open=True)
        super().__init__(params, dict(lr=lr, kappa=kappa, eps=eps, error_clip=error_clip, err_sq=0.0, err_w=0.0))

    def _direction(self, delta: float | None, pairs: list[tuple[dict[str, Any], torch.Tensor]]) -> list[torch.Tensor]:
        if delta is None:
            raise ValueError(
                "IntentionalSGD.step needs the error: call step(delta=y - y_hat) with p.grad = d y_hat / d theta."
            )
        group = self.param_groups[0]
        d = delta
        if group["error_clip"] is not None and group["err_w"] > 0:
            limit = group["error_clip"] * math.sqrt(group["err_sq"] / group["err_w"])
            d = max(-limit, min(limit, d))
        group["err_sq"] = 0.999 * group["err_sq"] + delta * delta
        group["err_w"] = 0.999 * group["err_w"] + 1.0
        g_sq = sum(float((p.grad * p.grad).sum()) for _, p in pairs)
        moves = [p.grad * (grp["lr"] * d / (grp["eps"] + g_sq)) for grp, p in pairs]
        l1 = sum(float(m.abs().sum()) for m in moves)
        cap = 1.0 / (group["kappa"] * l1) if l1 > 0 else 1.0
        if cap < 1.0:
            moves = [m * cap for m in moves]
        return moves

    def reset(self) -> None:
        """Forget the running error RMS (its clip level is re-learned)."""
        for group in self.param_groups:
            group["err_sq"] = 0.0
            group["err_w"] = 0.0


class StreamingAdam(_StreamingOptimizer):
    """Adam (Kingma & Ba 2015) whose bias-correction counter restarts on drift (Adam-Rel, Ellis et al.
    2024, arXiv:2412.17113)::

        g      =  -d * grad(y_hat)   (value form, the gradient of d^2 / 2)   or p.grad (loss form)
        t     <-  t + 1;   m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        theta <-  theta - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    :meth:`reset` sets ``t = 0`` and keeps ``m`` and ``v``: the first steps after a change then weigh
    the new gradients fully without the step spike that a small ``v`` would cause.
    ``reset(moments=True)`` also zeroes the moments.

    >>> w = torch.nn.Parameter(torch.tensor([0.0]))
    >>> opt = StreamingAdam([w], lr=0.1)
    >>> w.grad = torch.tensor([2.0])
    >>> opt.step(delta=1.0)                        # g = -2: the first step is lr * sign(-g)
    >>> round(w.item(), 6)
    0.1
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        _check("StreamingAdam.lr", lr, low=0.0, low_open=True)
        _check("StreamingAdam.beta1", betas[0], low=0.0, high=1.0, high_open=True)
        _check("StreamingAdam.beta2", betas[1], low=0.0, high=1.0, high_open=True)
        _check("StreamingAdam.eps", eps, low=0.0, low_open=True)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, t=0))

    def _direction(self, delta: float | None, pairs: list[tuple[dict[str, Any], torch.Tensor]]) -> list[torch.Tensor]:
        for group in self.param_groups:
            group["t"] += 1
        moves = []
        for group, p in pairs:
            b1, b2 = group["betas"]
            t = group["t"]
            st = self.state[p]
            if "m" not in st:
                st["m"] = torch.zeros_like(p)
                st["v"] = torch.zeros_like(p)
            g = p.grad * (-delta) if delta is not None else p.grad
            st["m"].mul_(b1).add_(g, alpha=1 - b1)
            st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = st["m"] / (1 - b1**t)
            v_hat = st["v"] / (1 - b2**t)
            moves.append(-group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
        return moves

    def reset(self, moments: bool = False) -> None:
        """Restart bias correction (``t = 0``); with ``moments=True`` also zero ``m`` and ``v``."""
        for group in self.param_groups:
            group["t"] = 0
        if moments:
            for st in self.state.values():
                for k in ("m", "v"):
                    if k in st:
                        st[k].zero_()


OPTIMIZERS: dict[str, type[_StreamingOptimizer]] = {
    "obgd": ObGD,
    "intentional": IntentionalSGD,
    "adam": StreamingAdam,
}


def optimizer_defaults(name: str) -> dict[str, Any]:
    """The settings of optimiser ``name`` with their defaults: its class's signature is the one owner
    (the Learner, the compiled loop and the config file read them from here)."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(f"optimizer = {name!r} is not one of {', '.join(map(repr, OPTIMIZERS))}.") from None
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if k != "params"}


def make_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> _StreamingOptimizer:
    """Build a streaming optimiser by name (``"obgd"``, ``"intentional"``, ``"adam"``)."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(f"optimizer = {name!r} is not one of {', '.join(map(repr, OPTIMIZERS))}.") from None
    return cls(params, **kwargs)
