"""Exact online gradients through the state: eligibility traces (real-time recurrent learning within
a layer), the torch reference of the compiled loop's traced learning.

Every unit's state depends on its own previous state only (the update is elementwise for the clip
and tanh bounds), so the sensitivity of a layer's state to that layer's parameters is one trace per
parameter, carried forward by the recursion (docs/stability.md, "Traced learning")

    e_t = D_t * (rho * e_{t-1} + (1 - rho) * beta * phi'(a_t) * da_t/dtheta)

with ``D_t = B'(v_t)`` the bound's derivative at the pre-bound state ``v_t``. The traced gradient
of an output at step ``t`` is the one-step gradient with ``e_t`` in place of its truncated value
``e_{t-1} = 0``. Between layers the gradient is the one-step backpropagation (Zucchet et al. 2023,
"Online learning of long-range dependencies"): exact for a single stateful layer, an approximation
that drops the cross-layer traces for deeper nets.

How this reference gets the traces from autograd without writing the recursion a second time: the
previous state enters the step as a *surrogate* ``s + sum_theta e * (theta - stop_grad(theta))``,
whose value is ``s`` and whose gradient with respect to the layer's own parameters is ``e_{t-1}``.
Autograd of the step then yields the traced gradient of the prediction, and the gradient of the sum
of a layer's new state with respect to that layer's parameters is the new trace (each unit's state
depends on its own row of ``W`` and its own ``b, A, f, d`` only, so the sum separates them).
"""

from __future__ import annotations

from typing import Literal

import torch

from .errors import ConfigError
from .model import State, StatefulNet
from .state import StateConfig

__all__ = ["StateGrad", "StateTraces", "check_state_grad"]

StateGrad = Literal["truncated", "traced"]
STATE_GRADS: tuple[str, ...] = ("truncated", "traced")


def check_state_grad(state_grad: object, cfg: StateConfig, owner: str) -> None:
    """Raise a :class:`ConfigError` when ``state_grad`` is not a known value, or is ``"traced"`` for a
    configuration whose state is not elementwise-contractive (legacy mode, the ball bound)."""
    if state_grad not in STATE_GRADS:
        raise ConfigError(f"{owner}.state_grad = {state_grad!r} is not one of {', '.join(map(repr, STATE_GRADS))}.")
    if state_grad != "traced":
        return
    if cfg.mode == "psann_legacy":
        raise ConfigError(
            f"{owner}(state_grad='traced') needs mode 'trace' or 'gain': psann_legacy's state feeds its own drive, "
            "so its traces grow whenever beta * G > 1. Use mode='trace' or state_grad='truncated'."
        )
    if cfg.bound == "ball":
        raise ConfigError(
            f"{owner}(state_grad='traced') needs bound 'clip' or 'tanh': the ball bound couples the units of a layer, "
            "so one trace per parameter is not exact. Use bound='tanh' or state_grad='truncated'."
        )


def traced_parameters(model: StatefulNet) -> list[list[torch.nn.Parameter]]:
    """Per stateful layer, the parameters its state depends on: ``W, b``, the raw amplitude,
    frequency and decay, and the raw rates when learnable (the gain only scales the output, so it
    carries no trace)."""
    return [[layer.linear.weight, layer.linear.bias, layer.activation.raw_amplitude,
             layer.activation.raw_frequency, layer.activation.raw_decay]
            + ([layer.raw_rate] if layer.config.learnable_rate else [])
            + ([layer.raw_phase] if layer.config.oscillatory else []) for layer in model.layers]


class StateTraces:
    """The eligibility traces of one stream of a :class:`StatefulNet` (float64 reference).

    ``traces[l][k]`` has the shape of ``traced_parameters(model)[l][k]``: row ``i`` of the weight
    trace and entry ``i`` of the others belong to unit ``i``. With oscillatory pairs a parameter moves
    both states of its pair, so its trace has a leading axis of 2: the sensitivity of the pair's
    even unit, then of its odd unit. A step is::

        prev = traces.surrogate(model.held_state())   # value = held state, grad = e_{t-1}
        y, new_state = model(x, prev)
        traces.advance(new_state)                      # e_t, before any parameter changes
        y.backward()                                   # traced gradient of y in p.grad

    >>> from psann_stream import StatefulNet
    >>> net = StatefulNet(2, hidden=(3,), seed=0).double()
    >>> tr = StateTraces(net)
    >>> y, s = net(torch.ones(1, 2, dtype=torch.float64), tr.surrogate(net.held_state()))
    >>> tr.advance(s)
    >>> [tuple(t.shape) for t in tr.traces[0]]
    [(3, 2), (3,), (3,), (3,), (3,)]
    """

    def __init__(self, model: StatefulNet) -> None:
        check_state_grad("traced", model.state_config, "StateTraces")
        self.paired = model.state_config.oscillatory
        self.params = traced_parameters(model)
        lead = (2,) if self.paired else ()
        self.traces = [[torch.zeros(lead + tuple(p.shape), dtype=torch.float64) for p in group] for group in self.params]

    def reset(self) -> None:
        """Zero every trace (the state was reset: its past no longer depends on the parameters)."""
        for group in self.traces:
            for e in group:
                e.zero_()

    @staticmethod
    def _per_group(moved: torch.Tensor, groups: int) -> torch.Tensor:
        """Sum a per-parameter product down to one value per state group (unit, or pair)."""
        if moved.dim() == 2:  # a weight matrix: row i belongs to unit i
            moved = moved.sum(dim=1)
        return moved.reshape(groups, -1).sum(dim=1)

    def surrogate(self, state: State) -> State:
        """One-stream states whose value is ``state`` and whose gradient with respect to each layer's
        traced parameters is that layer's traces."""
        out = []
        for s, group, traces in zip(state, self.params, self.traces):
            if s.shape[0] != 1:
                raise ConfigError(f"StateTraces follows one stream; the state holds {s.shape[0]}.")
            h = s.shape[1]
            if self.paired:
                extra = [torch.zeros(h // 2, dtype=s.dtype), torch.zeros(h // 2, dtype=s.dtype)]
                for p, e in zip(group, traces):
                    delta = (p - p.detach()).to(e.dtype)
                    for m in (0, 1):
                        extra[m] = extra[m] + self._per_group(e[m] * delta, h // 2)
                extra_units = torch.stack(extra, dim=-1).reshape(h)
            else:
                extra_units = torch.zeros(h, dtype=s.dtype)
                for p, e in zip(group, traces):
                    extra_units = extra_units + self._per_group((p - p.detach()).to(e.dtype) * e, h)
            out.append(s.detach() + extra_units[None, :])
        return tuple(out)

    def advance(self, new_state: State) -> None:
        """Replace the traces by those of ``new_state`` (the output of a step from :meth:`surrogate`);
        keeps the step's graph for a later backward."""
        for l, (s, group) in enumerate(zip(new_state, self.params)):
            parts = (s[..., 0::2], s[..., 1::2]) if self.paired else (s,)
            grads = [torch.autograd.grad(part.sum(), group, retain_graph=True, allow_unused=True) for part in parts]
            new = []
            for k, p in enumerate(group):
                per = [torch.zeros(p.shape, dtype=torch.float64) if g[k] is None else g[k].detach().to(torch.float64)
                       for g in grads]
                new.append(torch.stack(per) if self.paired else per[0])
            self.traces[l] = new

    def flat(self, model: StatefulNet) -> torch.Tensor:
        """The traces laid out like ``model.parameters()`` flattened (the compiled loop's layout; with
        oscillatory pairs the even units' sensitivities, then the odd units'): zero for the
        parameters that carry none (gains, head)."""
        by_id = {id(p): e for group, traces in zip(self.params, self.traces) for p, e in zip(group, traces)}
        comps = (0, 1) if self.paired else (None,)
        out = []
        for m in comps:
            for p in model.parameters():
                e = by_id.get(id(p))
                if e is None:
                    out.append(torch.zeros(p.numel(), dtype=torch.float64))
                else:
                    out.append((e if m is None else e[m]).reshape(-1))
        return torch.cat(out)

    def load_flat(self, model: StatefulNet, flat: torch.Tensor) -> None:
        """Set the traces from :meth:`flat`'s layout."""
        n = sum(p.numel() for p in model.parameters())
        comps = 2 if self.paired else 1
        if flat.numel() != comps * n:
            raise ConfigError(f"StateTraces.load_flat: {flat.numel()} values for {comps} x {n} traced parameters.")
        by_id, off = {}, 0
        for p in model.parameters():
            parts = [flat[m * n + off: m * n + off + p.numel()].reshape(p.shape) for m in range(comps)]
            by_id[id(p)] = torch.stack(parts) if self.paired else parts[0]
            off += p.numel()
        self.traces = [[by_id[id(p)].detach().clone().to(torch.float64) for p in group] for group in self.params]
