"""PSANN sine activation and the stateful sine layer.

The activation is psann's ``a = A * exp(-d * |z|) * sin(f * z)`` with per-unit amplitude ``A``,
frequency ``f`` and decay ``d``, each kept positive through ``softplus`` of a raw parameter. Because
``exp(-d|z|) <= 1`` and ``|sin| <= 1``, ``|a| <= A`` for every input: the activation is bounded by
its amplitude, which is the ``G`` of the state bounds (docs/stability.md).

The stateful layer is ``z = W x + b; a = act(z); s_t = update(s_{t-1}, a); y = out(a, s)``, with the
update and output rule of :mod:`psann_stream.state`. The layer's ``forward`` is pure: it takes the
state and returns the new one. The layer also *holds* one committed state per stream in the
buffer ``state`` (``[streams, units]``), which travels with ``state_dict()``; the rollout backend
(:mod:`psann_stream.rollout`) is the one place that commits to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError, StateShapeError
from .state import (StateBounds, StateConfig, bounds_for, carry, check_dtype, check_restored_state, rate_from_raw, raw_phases,
                    raw_rates, update_state)

__all__ = ["LayerLipschitz", "SineActivation", "StatefulSineLayer"]

_DECAY_FLOOR = 1e-6  # keeps d > 0 after float32 softplus underflow, so a -> 0 as |z| -> inf


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class SineActivation(nn.Module):
    """``a = A * exp(-d * |z|) * sin(f * z)`` per unit, with ``A, f, d`` learnable and positive.

    Args:
        features: number of units (the last dimension of ``z``).
        amplitude_init, frequency_init, decay_init: initial ``A``, ``f``, ``d`` (all > 0).

    Shapes: ``z`` is ``[..., features]``; the output has the same shape and ``|a| <= A``.
    Where ``f * z`` overflows (only for absurd inputs or weights) the output is 0, the activation's
    limit as ``|z| -> inf`` (the envelope ``exp(-d|z|)`` vanishes), so it stays finite.

    >>> act = SineActivation(2, amplitude_init=2.0, decay_init=1e-3)
    >>> bool((act(torch.tensor([[1e30, -3.0]])).abs() <= 2.0).all())
    True
    """

    def __init__(
        self,
        features: int,
        *,
        amplitude_init: float = 1.0,
        frequency_init: float = 1.0,
        decay_init: float = 0.1,
    ) -> None:
        super().__init__()
        for name, v in (("amplitude_init", amplitude_init), ("frequency_init", frequency_init), ("decay_init", decay_init)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"SineActivation.{name} = {v!r} is out of range: need a finite value > 0.")
        self.features = features
        self.raw_amplitude = nn.Parameter(torch.full((features,), _softplus_inverse(amplitude_init)))
        self.raw_frequency = nn.Parameter(torch.full((features,), _softplus_inverse(frequency_init)))
        self.raw_decay = nn.Parameter(torch.full((features,), _softplus_inverse(decay_init)))

    @property
    def amplitude(self) -> torch.Tensor:
        return F.softplus(self.raw_amplitude)

    @property
    def frequency(self) -> torch.Tensor:
        return F.softplus(self.raw_frequency)

    @property
    def decay(self) -> torch.Tensor:
        return F.softplus(self.raw_decay) + _DECAY_FLOOR

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        a = self.amplitude * torch.exp(-self.decay * z.abs()) * torch.sin(self.frequency * z)
        # sin(inf) = NaN while its envelope is exactly 0: take the limit, 0.
        return torch.nan_to_num(a, nan=0.0)

    def extra_repr(self) -> str:
        return f"features={self.features}"


@dataclass(frozen=True)
class LayerLipschitz:
    """Lipschitz constants of one layer's step at its current parameters (l2 norms per stream),
    the pieces of :meth:`StatefulNet.gap_bound`.

    Attributes:
        rate: ``L``: ``norm(ds_t) <= L norm(ds_{t-1})`` for the same activation.
        drive: ``max_i (1 - rho_i) beta``: the state's Lipschitz constant in the activation.
        activation: ``max_i A_i (f_i + d_i) * sigma_max(W)``: the activation's in the layer input.
        out_activation, out_state: the output's in the activation and in the state (trace:
            ``1`` and ``max |gamma|``; gain, whose state is ``>= 0``: ``max |gamma| / gain_eps`` and
            ``max |gamma| G / gain_eps^2``).
    """

    rate: float
    drive: float
    activation: float
    out_activation: float
    out_state: float


class StatefulSineLayer(nn.Module):
    """Linear map, PSANN sine activation, and a persistent per-stream, per-unit state.

    Args:
        in_features, out_features: widths.
        state: the :class:`~psann_stream.state.StateConfig` of the state.
        w0: SIREN frequency scale. Weights are drawn from ``U(+-sqrt(6 / in_features) / w0)`` and
            the frequency starts at ``w0``, so ``f * z`` has SIREN's distribution for any ``w0``.
        generator: random generator for the initialisation (reproducible models).

    ``forward(x, s)`` with ``x: [streams, in_features]`` and ``s: [streams, out_features]`` returns
    ``(y, s_new)``, both ``[streams, out_features]``, and changes nothing (the held ``state``
    buffer included).
    """

    state: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        state: StateConfig,
        w0: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if state.bound == "ball" and abs(state.init) * math.sqrt(out_features) > state.max_abs:
            raise ConfigError(
                f"StateConfig.init = {state.init!r} is out of range for bound='ball' and {out_features} units: the "
                f"initial state's norm |init|*sqrt({out_features}) = {abs(state.init) * math.sqrt(out_features):.4g} "
                f"exceeds max_abs = {state.max_abs!r}; use |init| <= {state.max_abs / math.sqrt(out_features):.4g}."
            )
        if state.oscillatory and out_features % 2:
            raise ConfigError(
                f"StateConfig.oscillatory pairs the units of a layer, but this layer has {out_features} units; "
                "use an even width, e.g. hidden=(32, 32)."
            )
        self.in_features = in_features
        self.out_features = out_features
        self.config = state
        self.linear = nn.Linear(in_features, out_features)
        bound = math.sqrt(6.0 / in_features) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=generator)
            b = 1.0 / math.sqrt(in_features)
            self.linear.bias.uniform_(-b, b, generator=generator)
        self.activation = SineActivation(out_features, frequency_init=w0)
        if state.learnable_gain:
            theta = math.atanh(state.gain / state.gain_max)
            self.raw_gain = nn.Parameter(torch.full((out_features,), theta))
        else:
            # built in float64 and cast: a value beyond float32 becomes inf here and is refused, with
            # its reason, by state.check_dtype at the first step (the model may still go to float64)
            self.register_buffer("fixed_gain", torch.full((out_features,), state.gain, dtype=torch.float64).to(torch.get_default_dtype()))
        groups = out_features // 2 if state.oscillatory else out_features  # a rate per pair, or per unit
        if state.learnable_rate:
            self.raw_rate = nn.Parameter(raw_rates(state, groups).to(torch.get_default_dtype()))
        if state.oscillatory:
            self.raw_phase = nn.Parameter(raw_phases(groups).to(torch.get_default_dtype()))
        self.register_buffer("state", torch.full((1, out_features), state.init, dtype=torch.float64).to(torch.get_default_dtype()))

    # ------------------------------------------------------------------ parameters
    @property
    def gain(self) -> torch.Tensor:
        """``gamma`` per unit: ``gain_max * tanh(raw_gain)`` when learnable, so ``|gamma| < gain_max``."""
        if self.config.learnable_gain:
            return self.config.gain_max * torch.tanh(self.raw_gain)
        return self.fixed_gain

    @property
    def rate(self) -> torch.Tensor | None:
        """Each unit's rate ``rho_i`` (each pair's when oscillatory) with learnable rates, or ``None``
        when every unit uses ``config.rho``."""
        return rate_from_raw(self.raw_rate) if self.config.learnable_rate else None

    @property
    def phase(self) -> torch.Tensor | None:
        """Each oscillatory pair's rotation angle ``theta_k`` (``None`` unless oscillatory)."""
        return self.raw_phase if self.config.oscillatory else None

    # ------------------------------------------------------------------ the step
    def forward(
        self, x: torch.Tensor, s: torch.Tensor, activations: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; if ``activations`` is a list, the activation ``a`` is appended to it."""
        cfg = self.config
        a = self.activation(self.linear(x))
        if activations is not None:
            activations.append(a)
        s_new = update_state(s, a, cfg, self.rate, self.phase)
        if cfg.mode == "trace":
            y = a + self.gain * s_new
        elif cfg.mode == "gain":
            y = self.gain * a / (cfg.gain_eps + s_new)
        else:
            y = self.gain * a * carry(s, cfg)
        return y, s_new

    # ------------------------------------------------------------------ held state
    def initial_state(self, n_streams: int) -> torch.Tensor:
        """A fresh ``[n_streams, out_features]`` state filled with ``init``."""
        check_dtype(self.config, self.state.dtype)
        return torch.full(
            (n_streams, self.out_features), self.config.init, dtype=self.state.dtype, device=self.state.device
        )

    def reset_state(self, streams: Sequence[int] | torch.Tensor | None = None, *, n_streams: int | None = None) -> None:
        """Set the held state of all streams (or of the given stream indices) to ``init``.

        ``n_streams`` resizes the held state to that many streams first (all at ``init``).
        """
        with torch.no_grad():
            if n_streams is not None:
                self.state = self.initial_state(n_streams)
            elif streams is None:
                self.state = self.initial_state(self.state.shape[0])
            else:
                idx = torch.as_tensor(streams, dtype=torch.long, device=self.state.device)
                n = self.state.shape[0]
                if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
                    raise StateShapeError(
                        f"reset_state: stream index out of range for {n} held stream(s): {idx.tolist()}."
                    )
                state = self.state.detach().clone()
                state[idx] = self.config.init
                self.state = state

    def commit_state(self, s: torch.Tensor, *, force_detach: bool = False) -> None:
        """Make ``s`` the held state (detached if the config says so, or if forced)."""
        self.state = carry(s, self.config, force_detach=force_detach)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> StatefulSineLayer:
        super()._apply(fn, *args, **kwargs)
        # A float32 build stores an init or fixed gain beyond float32's range as inf (__init__); once
        # the dtype holds them (model.double()), rebuild them from the config.
        for name, value in (("state", self.config.init), ("fixed_gain", self.config.gain)):
            t = getattr(self, name, None)
            if isinstance(t, torch.Tensor) and t.is_floating_point() and bool(torch.isinf(t).any()) \
                    and math.isfinite(float(torch.tensor(value, dtype=torch.float64).to(t.dtype))):
                setattr(self, name, torch.full_like(t, value))
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The held state's stream count is data, not architecture: adopt the checkpoint's shape.
        saved = state_dict.get(prefix + "state")
        if isinstance(saved, torch.Tensor) and saved.dim() == 2 and saved.shape[1] == self.out_features:
            check_restored_state(self.config, None, saved.detach().cpu(), f"loading {prefix}state")
            self.state = torch.empty_like(saved, dtype=self.state.dtype, device=self.state.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ theory
    def state_bounds(self) -> StateBounds:
        """The bounds of :mod:`psann_stream.state` evaluated at this layer's current parameters."""
        rate = self.rate
        return bounds_for(self.config, float(self.activation.amplitude.detach().max()),
                          None if rate is None else float(rate.detach().max()), self.out_features)

    def lipschitz(self) -> LayerLipschitz:
        """:class:`LayerLipschitz` at the current parameters (float64). Legacy mode has none: its
        drive contains the state (``ConfigError``)."""
        cfg = self.config
        if not cfg.contractive:
            raise ConfigError("mode='psann_legacy' feeds the state into its own drive: the layer is not a contraction, "
                              "so it has no gap bound (docs/stability.md section 7). Use mode='trace' or 'gain'.")
        with torch.no_grad():
            act = self.activation
            amp = act.amplitude.double()
            rates = self.rate
            rate = cfg.rho if rates is None else float(rates.double().max())
            low = cfg.rho if rates is None else float(rates.double().min())
            sigma = float(torch.linalg.matrix_norm(self.linear.weight.double(), ord=2))
            k = float((amp * (act.frequency.double() + act.decay.double())).max()) * sigma
            gam = float(self.gain.double().abs().max())
            g = float(amp.max())
        if cfg.mode == "trace":
            out_a, out_s = 1.0, gam
        else:
            out_a, out_s = gam / cfg.gain_eps, gam * g / cfg.gain_eps / cfg.gain_eps  # (eps**2 may underflow to 0)
        return LayerLipschitz(rate=rate, drive=(1.0 - low) * cfg.beta, activation=k, out_activation=out_a, out_state=out_s)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.config.mode!r}"
