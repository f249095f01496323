"""StatefulNet: stacked stateful sine layers and a linear head."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, StateShapeError
from .layers import StatefulSineLayer
from .state import StateBounds, StateConfig

__all__ = ["StatefulNet", "State"]

State = tuple[torch.Tensor, ...]
"""One ``[streams, units]`` tensor per stateful layer, in layer order."""


class StatefulNet(nn.Module):
    """A stack of :class:`~psann_stream.layers.StatefulSineLayer` and a linear head.

    Args:
        in_features: input width ``F``.
        out_features: output width ``O``.
        hidden: widths of the stateful layers, in order (at least one).
        state: the state configuration shared by every layer (a :class:`StateConfig` or a mapping
            accepted by :meth:`StateConfig.from_mapping`).
        seed: seed of the initialisation; ``None`` draws from torch's global generator.
        w0: SIREN frequency scale of every layer (see :class:`StatefulSineLayer`).

    The model is a step function: ``forward(x, state)`` maps ``x: [streams, F]`` and a
    :data:`State` to ``(y: [streams, O], new_state)`` and changes nothing. It also holds one
    committed state per stream (``held_state()``, saved by ``state_dict()``); sequences are run,
    and the held state advanced, by :mod:`psann_stream.rollout`.

    >>> net = StatefulNet(3, hidden=(8, 8), seed=0)
    >>> y, s = net(torch.zeros(5, 3), net.initial_state(5))
    >>> tuple(y.shape), [tuple(t.shape) for t in s]
    ((5, 1), [(5, 8), (5, 8)])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        hidden: Sequence[int] = (32, 32),
        state: StateConfig | Mapping[str, object] = StateConfig(),
        seed: int | None = None,
        *,
        w0: float = 1.0,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"StatefulNet.{name} = {v!r} is out of range: need an integer >= 1.")
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(
                f"StatefulNet.hidden = {hidden!r} is invalid: need a non-empty sequence of integers >= 1, e.g. (32, 32)."
            )
        if not (isinstance(w0, (int, float)) and math.isfinite(w0) and w0 > 0):
            raise ConfigError(f"StatefulNet.w0 = {w0!r} is out of range: need a finite value > 0.")
        self.state_config = StateConfig.from_mapping(state)
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = hidden
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(int(seed))
        widths = (in_features, *hidden)
        self.layers = nn.ModuleList(
            StatefulSineLayer(widths[i], widths[i + 1], state=self.state_config, w0=w0, generator=gen)
            for i in range(len(hidden))
        )
        self.head = nn.Linear(hidden[-1], out_features)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(hidden[-1])
            self.head.weight.uniform_(-bound, bound, generator=gen)
            self.head.bias.zero_()

    # ------------------------------------------------------------------ the step
    def forward(
        self, x: torch.Tensor, state: State, activations: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, State]:
        """One step for every stream: ``x: [streams, F]`` -> ``(y: [streams, O], new_state)``.

        If ``activations`` is a list, each layer's activation ``[streams, units]`` is appended to it
        (the monitor reads them).
        """
        if len(state) != len(self.layers):
            raise StateShapeError(
                f"StatefulNet.forward got a state of {len(state)} tensor(s) for {len(self.layers)} stateful layer(s); "
                "build it with model.initial_state(n_streams) or model.held_state()."
            )
        h = x
        new: list[torch.Tensor] = []
        for layer, s in zip(self.layers, state):
            h, s_new = layer(h, s, activations)
            new.append(s_new)
        return self.head(h), tuple(new)

    # ------------------------------------------------------------------ state management
    @property
    def n_streams(self) -> int:
        """Number of streams the held state is sized for."""
        return int(self.layers[0].state.shape[0])

    def initial_state(self, n_streams: int) -> State:
        """A fresh state for ``n_streams`` streams, every unit at ``init`` (the held state is untouched)."""
        return tuple(layer.initial_state(n_streams) for layer in self.layers)

    def held_state(self) -> State:
        """The committed state, one ``[n_streams, units]`` tensor per layer."""
        return tuple(layer.state for layer in self.layers)

    def commit_state(self, state: State, *, force_detach: bool = False) -> None:
        """Make ``state`` the held state; its graph is kept only if ``detach`` is off and not forced."""
        for layer, s in zip(self.layers, state):
            layer.commit_state(s, force_detach=force_detach)

    def reset_state(self, streams: Sequence[int] | torch.Tensor | None = None, *, n_streams: int | None = None) -> None:
        """Reset the held state of every stream, or of the given stream indices, to ``init``.

        ``n_streams`` resizes the held state first. After a reset the model's outputs on any
        sequence equal those of a freshly built model with the same weights.
        """
        for layer in self.layers:
            layer.reset_state(streams, n_streams=n_streams)

    def state_bounds(self) -> list[StateBounds]:
        """Per layer, what the theory guarantees at the current parameters (see :class:`StateBounds`)."""
        return [layer.state_bounds() for layer in self.layers]

    def gap_bound(self, steps: int) -> np.ndarray:
        """How far apart two trajectories of the whole state can stay: ``[steps + 1]`` factors ``c_t``
        with ``norm(s_t - s'_t) <= c_t norm(s_0 - s'_0)`` for two initial states driven by the same
        inputs (l2 over all layers' units of one stream; current parameters; trace and gain mode).

        Each layer contracts at its rate ``L`` for a fixed activation, but a gap in layer ``j`` moves
        the activations of the layers above it at the same step. With ``e_l`` layer ``l``'s gap,
        ``e_t <= L T e_{t-1}`` elementwise, where ``T = (I - N)^-1`` and ``N`` (strictly lower
        triangular, from :meth:`StatefulSineLayer.lipschitz`) says how much of layer ``j``'s gap
        reaches layer ``l``'s drive. So ``c_t = L^t norm(T^t)_2``: ``L^t`` for one layer, and
        ``L^t`` times a polynomial of degree ``depth - 1`` in ``t`` otherwise (docs/stability.md
        section 4): every network forgets its initial state, but the gap may first grow.

        >>> net = StatefulNet(2, hidden=(4,), state=StateConfig(rho=0.5), seed=0)
        >>> net.gap_bound(3).round(3).tolist()
        [1.0, 0.5, 0.25, 0.125]
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"gap_bound(steps={steps!r}): need an integer >= 0.")
        lip = [layer.lipschitz() for layer in self.layers]
        depth = len(lip)
        # U[l, j]: how much of layer j's state gap reaches layer l's output (j <= l).
        U = np.zeros((depth, depth))
        N = np.zeros((depth, depth))
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing constant makes the bound inf
            for l, p in enumerate(lip):
                if l > 0:
                    N[l, :l] = p.drive * p.activation * U[l - 1, :l]
                    U[l, :l] = p.out_activation * p.activation * U[l - 1, :l]
                U[l, l] = p.out_state
        rate = max(p.rate for p in lip)
        out = np.full(steps + 1, np.inf)
        out[0] = 1.0
        if not np.isfinite(N).all():  # a layer's Lipschitz constant overflows: no finite bound at these parameters
            return out
        T = np.linalg.inv(np.eye(depth) - N)  # = I + N + ... + N^(depth-1) >= 0 elementwise
        power = np.eye(depth)
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(steps + 1):
                if not np.isfinite(power).all():
                    break  # the rest stays inf
                out[t] = rate**t * np.linalg.norm(power, 2)
                power = power @ T
        return out
