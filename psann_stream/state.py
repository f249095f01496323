"""The persistent state of a stateful sine layer: its configuration, its update, its proven bounds.

Every unit ``i`` of a stateful layer carries, per stream, a state ``s_i`` that follows

    s_t = B( rho * s_{t-1} + (1 - rho) * beta * phi(a_t, s_{t-1}) )

where ``a_t`` is the unit's activation at step ``t`` (``|a| <= G``), ``phi`` the drive and ``B`` the
bound. The three modes differ only in ``phi`` and in how the state reaches the layer's output:

=================  =====================  ==============================================
mode               drive ``phi``          layer output
=================  =====================  ==============================================
``trace``          ``a``                  ``a + gamma * s_t`` (a leaky memory fed forward)
``gain``           ``|a|``                ``gamma * a / (gain_eps + s_t)`` (automatic gain
                                          control: ``s`` tracks the mean ``|a|``)
``psann_legacy``   ``|a * s_{t-1}|``      ``gamma * a * s_{t-1}`` (psann 2.0.1, for
                                          compatibility only: bistable, see below)
=================  =====================  ==============================================

In ``trace`` and ``gain`` mode the drive does not depend on the state, so the map ``s -> s'`` is
``rho``-Lipschitz (``B`` is 1-Lipschitz) and the state is bounded, contractive and has a unique
fixed point ``B(beta * phi(a))`` for a constant activation (docs/stability.md, C1-C4). In
``psann_legacy`` mode the drive contains the state, the map is ``s' = B(g * s)`` with
``g = rho + (1 - rho) * beta * |a|`` and the state decays to the absorbing 0 (g < 1) or saturates
(g > 1).

This module holds the update (implemented once, for a leading stream dimension), the rule that
decides what crosses a step boundary (:func:`carry`) and the theory helpers that give, for given
parameters, the envelope, the fixed point and the contraction constant. It imports nothing from
the rest of the package but its error types.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Mapping

import numpy as np
import torch

from .errors import CheckpointError, ConfigError

__all__ = [
    "Bound",
    "StateBounds",
    "bounds_for",
    "Mode",
    "StateConfig",
    "apply_bound",
    "carry",
    "check_dtype",
    "check_restored_state",
    "contraction_constant",
    "envelope",
    "fixed_point",
    "rate_from_raw",
    "raw_phases",
    "raw_rates",
    "rotate_pairs",
    "steady_state_limit",
    "update_state",
]

Mode = Literal["trace", "gain", "psann_legacy"]
Bound = Literal["clip", "tanh", "ball"]

_MODES: tuple[str, ...] = ("trace", "gain", "psann_legacy")
_BOUNDS: tuple[str, ...] = ("clip", "tanh", "ball")
# Largest learnable rate: ``1 - 2**-20`` (a memory of ~10^6 events) is exact in float32 and float64,
# and a product with a factor <= 1 never rounds above it, so a learned rate is < 1 in every dtype.
RATE_CAP = 1.0 - 2.0**-20
_LEGACY_KEYS = frozenset({"rho", "beta", "init", "max_abs", "detach"})
# Keys of psann's architecture-level state policy that belong elsewhere in psann_stream.
_LEGACY_ELSEWHERE = {
    "reset": "state resets are explicit here: call model.reset_state() or pass reset=True to a rollout",
    "stream_lr": "the streaming learning rate belongs to the optimiser, not to the state",
}


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(
            f"StateConfig.{name} = {value!r} has type {type(value).__name__}; it must be a real number."
        )
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"StateConfig.{name} = {value!r} is not finite; it must be a finite real number.")
    return value


@dataclass(frozen=True)
class StateConfig:
    """Validated, immutable, hashable configuration of the state update of every stateful layer.

    Parameters
    ----------
    mode
        ``"trace"`` (default): the state is a leaky memory of the activation, added to the output.
        ``"gain"``: the state tracks the mean ``|a|`` and divides the output (automatic gain control).
        ``"psann_legacy"``: psann 2.0.1's multiplicative update, kept so old configs reproduce; it
        collapses to 0 or saturates (docs/stability.md section 5).
    rho
        Retention per step, ``0 <= rho < 1``. The memory's time constant is ``1 / (1 - rho)`` steps.
    beta
        Drive gain, ``beta >= 0``. With ``|a| <= G`` the state's limit is ``beta * G``.
    init
        Value every state takes at creation and at every reset, ``|init| <= max_abs``
        (``init >= 0`` in gain mode).
    max_abs
        The bound ``M > 0``: ``|s| <= M`` always (``||s||_2 <= M`` per stream with ``bound="ball"``).
    bound
        ``"clip"`` (default; identity inside the box, zero gradient when saturated), ``"tanh"``
        (``M * tanh(x / M)``; gradient never zero, shrinks values slightly) or ``"ball"``
        (projection of each stream's state vector onto the l2 ball of radius ``M``; keeps direction).
    detach
        ``True`` (default): no gradient crosses a step boundary; memory is flat in sequence length.
        ``False``: gradients flow through the state across the steps of one rollout (BPTT).
    gain
        Initial output gain ``gamma`` of every unit (the weight of the state in trace mode).
    learnable_gain
        Learn ``gamma`` per unit through ``gamma = gain_max * tanh(theta)``, so ``|gamma| < gain_max``
        for every value of the raw parameter ``theta``. Requires ``|gain| < gain_max``.
    gain_max
        Bound of the learnable gain, ``> 0``.
    gain_eps
        Gain mode only: the output is ``gamma * a / (gain_eps + s)``, ``gain_eps > 0``.
    learnable_rate
        Learn each unit's rate through ``rho_i = RATE_CAP * exp(-exp(nu_i))`` (``RATE_CAP = 1 -
        2**-20``), so ``0 <= rho_i < 1`` for every raw value ``nu_i`` in every dtype; ``rho`` is then
        unused. Modes 'trace' and 'gain'.
    memory_min, memory_max
        With ``learnable_rate``: the units' initial memories ``1 / (1 - rho_i)`` (events), spread
        geometrically from ``memory_min`` (first unit) to ``memory_max`` (last unit),
        ``1 < memory_min <= memory_max <= 10**5``.
    oscillatory
        Pair the units of every stateful layer (units ``2k``, ``2k + 1``; even widths): each pair's
        state is rotated by a learnable angle ``theta_k`` and shrunk by its rate ``r_k`` before the
        drive is added, ``s <- B(r_k R(theta_k) s + (1 - r_k) beta a)`` (a damped oscillator, which can
        hold a delayed value or a phase). Mode 'trace' only; ``r_k`` is ``rho`` or, with
        ``learnable_rate``, learned per pair.

    Examples
    --------
    >>> cfg = StateConfig(rho=0.75)
    >>> cfg.time_constant
    4.0
    >>> StateConfig.from_mapping(cfg.to_dict()) == cfg
    True
    >>> StateConfig(rho=1.0)
    Traceback (most recent call last):
    ...
    psann_stream.errors.ConfigError: StateConfig.rho = 1.0 is out of range: need 0 <= rho < 1 (rho = 1 is an integrator that only max_abs bounds; for a long memory use e.g. rho=0.999).
    """

    mode: Mode = "trace"
    rho: float = 0.9
    beta: float = 1.0
    init: float = 0.0
    max_abs: float = 3.0
    bound: Bound = "clip"
    detach: bool = True
    gain: float = 1.0
    learnable_gain: bool = True
    gain_max: float = 4.0
    gain_eps: float = 0.01
    learnable_rate: bool = False
    memory_min: float = 2.0
    memory_max: float = 500.0
    oscillatory: bool = False

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigError(f"StateConfig.mode = {self.mode!r} is not one of {', '.join(map(repr, _MODES))}.")
        if self.bound not in _BOUNDS:
            raise ConfigError(f"StateConfig.bound = {self.bound!r} is not one of {', '.join(map(repr, _BOUNDS))}.")
        for name in ("detach", "learnable_gain", "learnable_rate", "oscillatory"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"StateConfig.{name} = {getattr(self, name)!r} must be True or False.")
        for f in fields(self):
            if f.type in ("float",):
                object.__setattr__(self, f.name, _real(f.name, getattr(self, f.name)))
        rho, beta, init, m = self.rho, self.beta, self.init, self.max_abs
        if not 0.0 <= rho < 1.0:
            raise ConfigError(
                f"StateConfig.rho = {rho!r} is out of range: need 0 <= rho < 1 (rho = 1 is an integrator "
                "that only max_abs bounds; for a long memory use e.g. rho=0.999)."
            )
        if beta < 0.0:
            raise ConfigError(f"StateConfig.beta = {beta!r} is out of range: need beta >= 0.")
        if m <= 0.0:
            raise ConfigError(f"StateConfig.max_abs = {m!r} is out of range: need max_abs > 0.")
        if abs(init) > m:
            raise ConfigError(
                f"StateConfig.init = {init!r} is out of range: need |init| <= max_abs = {m!r}; "
                "raise max_abs or lower init."
            )
        if self.mode == "gain" and init < 0.0:
            raise ConfigError(
                f"StateConfig.init = {init!r} is out of range for mode='gain': the state tracks a mean "
                "absolute activation, need init >= 0."
            )
        if self.gain_max <= 0.0:
            raise ConfigError(f"StateConfig.gain_max = {self.gain_max!r} is out of range: need gain_max > 0.")
        if self.learnable_gain and abs(self.gain) >= self.gain_max:
            raise ConfigError(
                f"StateConfig.gain = {self.gain!r} is out of range: a learnable gain needs "
                f"|gain| < gain_max = {self.gain_max!r}; raise gain_max or set learnable_gain=False."
            )
        if self.gain_eps <= 0.0:
            raise ConfigError(f"StateConfig.gain_eps = {self.gain_eps!r} is out of range: need gain_eps > 0.")
        if not 1.0 < self.memory_min <= self.memory_max <= 1e5:
            raise ConfigError(
                f"StateConfig.memory_min = {self.memory_min!r}, memory_max = {self.memory_max!r} are out of range: need "
                "1 < memory_min <= memory_max <= 1e5 (events; a memory of 1 is no memory, rho = 0)."
            )
        if self.oscillatory and self.mode != "trace":
            raise ConfigError(
                f"StateConfig.oscillatory needs mode 'trace' (got {self.mode!r}): a rotated state takes both signs, so it "
                "cannot divide the output (gain) or feed its own drive (psann_legacy)."
            )
        if self.learnable_rate and self.mode == "psann_legacy":
            raise ConfigError(
                "StateConfig.learnable_rate needs mode 'trace' or 'gain': psann_legacy's growth factor depends on rho, "
                "so a learned rate could make it expand. Use mode='trace'."
            )
        check_dtype(self, torch.float64)  # the compiled loop's dtype; float32 is checked where it runs

    # ------------------------------------------------------------------ derived facts
    @property
    def time_constant(self) -> float:
        """Steps for the state's memory to fade by a factor e: ``1 / (1 - rho)``."""
        return 1.0 / (1.0 - self.rho)

    @property
    def rate_bound(self) -> float:
        """The largest rate any unit can have: ``rho``, or ``RATE_CAP`` with learnable rates."""
        return RATE_CAP if self.learnable_rate else self.rho

    @property
    def contractive(self) -> bool:
        """True when the update is a contraction for every parameter value (every mode but legacy)."""
        return self.mode != "psann_legacy"

    # ------------------------------------------------------------------ plain-dict round trip
    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python values; ``StateConfig.from_mapping(cfg.to_dict()) == cfg``."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | StateConfig) -> StateConfig:
        """Build a config from a plain mapping, including psann's legacy state dicts.

        A mapping with a ``mode`` key is read as a psann_stream config. A mapping without one is
        read as a psann dict ``{rho, beta, init, max_abs, detach}`` (its defaults apply to missing
        keys) and mapped to ``mode="gain"`` with psann's soft bound, which keeps psann's meaning of
        the state (a per-unit output gain) without its collapse. A :class:`UserWarning` says what
        changes and how to reproduce psann exactly (``mode="psann_legacy"``). psann's ``reset`` and
        ``stream_lr`` keys are dropped with a warning that says where they live here.
        """
        if isinstance(mapping, StateConfig):
            return mapping
        if not isinstance(mapping, Mapping):
            raise ConfigError(
                f"StateConfig.from_mapping needs a mapping or a StateConfig, got {type(mapping).__name__}."
            )
        data = dict(mapping)
        known = {f.name for f in fields(cls)}
        if "mode" in data:
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(
                    f"StateConfig has no field(s) {', '.join(map(repr, unknown))}; "
                    f"known fields: {', '.join(sorted(known))}."
                )
            return cls(**data)
        return cls._from_psann(data)

    @classmethod
    def _from_psann(cls, data: dict[str, Any]) -> StateConfig:
        for key, where in _LEGACY_ELSEWHERE.items():
            if key in data:
                warnings.warn(f"psann state key {key!r} is ignored: {where}.", UserWarning, stacklevel=3)
                data.pop(key)
        unknown = sorted(set(data) - _LEGACY_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(map(repr, unknown))} in a psann state mapping (no 'mode' key); "
                f"psann keys are {', '.join(sorted(_LEGACY_KEYS))}, or add 'mode' for a psann_stream config."
            )
        legacy = {"rho": 0.95, "beta": 1.0, "init": 1.0, "max_abs": 5.0, "detach": True, **data}
        if legacy["init"] is not None and _real("init", legacy["init"]) < 0.0:
            legacy["init"] = abs(float(legacy["init"]))
            warnings.warn(
                "psann init < 0 mapped to |init|: a gain-mode state tracks a mean absolute activation.",
                UserWarning,
                stacklevel=3,
            )
        cfg = cls(mode="gain", bound="tanh", learnable_gain=False, gain=1.0, **legacy)
        warnings.warn(
            "psann state config mapped to mode='gain': the state is now an EMA of |activation| that "
            "normalises the unit's output (a contraction with a stable fixed point). psann's update fed "
            "the state back into its own drive (|y*s|), which decays to 0 or saturates at max_abs. "
            "To reproduce psann exactly, pass {**cfg, 'mode': 'psann_legacy', 'bound': 'tanh', "
            "'learnable_gain': False}.",
            UserWarning,
            stacklevel=3,
        )
        return cfg


@functools.lru_cache(maxsize=256)
def check_dtype(cfg: StateConfig, dtype: torch.dtype) -> None:
    """Refuse a configuration that the floating-point type ``dtype`` cannot carry out as validated.

    :class:`StateConfig` validates real numbers; the update runs in the state's dtype, where a
    value can round to a different meaning. In float32 ``rho = 0.99999999`` rounds to 1.0 (the
    state becomes an integrator), ``beta = 1e40`` to ``inf`` (``inf * 0`` is NaN), ``max_abs = 1e-300``
    to 0 (``0 / 0`` in the tanh bound) and ``max_abs = 1e300`` overflows. Requirements, with
    ``finfo = torch.finfo(dtype)``: ``1 - rho >= finfo.eps`` (closer to 1, ``rho * s`` rounds back
    to ``s`` and the state stops decaying); ``beta``, ``max_abs``, ``gain_max`` and a fixed ``gain``
    are at most ``finfo.max``, and ``max_abs`` at most ``finfo.max / 4`` (headroom for the update's
    intermediate values); ``max_abs`` and ``gain_eps`` at least ``finfo.tiny`` (normal numbers).
    Then no valid configuration gives a NaN or non-finite state in that dtype. Cached per
    ``(cfg, dtype)``: the update calls it on every step for the price of a dictionary lookup.

    >>> check_dtype(StateConfig(rho=0.99999999), torch.float64)
    >>> check_dtype(StateConfig(rho=0.99999999), torch.float32)
    Traceback (most recent call last):
    ...
    psann_stream.errors.ConfigError: StateConfig.rho = 0.99999999 rounds to 1.0 in torch.float32, where the state would be an integrator that forgets nothing; use rho <= 0.9999998807907104 in float32, or run the model in float64 (model.double()).
    """
    if not dtype.is_floating_point:
        raise ConfigError(f"the state must be a floating-point tensor, got {dtype}; use torch.float32 or torch.float64.")
    finfo = torch.finfo(dtype)
    fix = "or run the model in float64 (model.double())" if finfo.bits < 64 else "or change the value"
    rho = float(torch.tensor(cfg.rho, dtype=dtype))
    if rho >= 1.0:
        raise ConfigError(
            f"StateConfig.rho = {cfg.rho!r} rounds to 1.0 in {dtype}, where the state would be an integrator that "
            f"forgets nothing; use rho <= {1.0 - finfo.eps!r} in {str(dtype).replace('torch.', '')}, {fix}."
        )
    if 1.0 - rho < finfo.eps:
        raise ConfigError(
            f"StateConfig.rho = {cfg.rho!r} is closer to 1 than {dtype} resolves (1 - rho < eps = {finfo.eps:.3g}): "
            f"rho * s rounds back to s, so the state neither decays nor contracts; use rho <= {1.0 - finfo.eps!r} "
            f"in {str(dtype).replace('torch.', '')}, {fix}."
        )
    fixed = () if cfg.learnable_gain else ("gain",)
    for name in ("beta", "max_abs", "gain_max", *fixed):
        value = getattr(cfg, name)
        if abs(value) > finfo.max:
            raise ConfigError(
                f"StateConfig.{name} = {value!r} overflows {dtype} (largest {finfo.max:.4g}), where the update would "
                f"produce inf or NaN; use {name} <= {finfo.max:.4g}, {fix}."
            )
    if cfg.max_abs > finfo.max / 4:
        raise ConfigError(
            f"StateConfig.max_abs = {cfg.max_abs!r} leaves no headroom in {dtype}: the update's intermediate values (an "
            f"oscillatory pair rotated at the bound reaches sqrt(2) max_abs; rho s plus an overflowing drive must still "
            f"exceed max_abs) must stay below its largest value {finfo.max:.4g}; use max_abs <= {finfo.max / 4:.4g}, {fix}."
        )
    for name in ("max_abs", "gain_eps"):
        value = getattr(cfg, name)
        if value < finfo.tiny:
            raise ConfigError(
                f"StateConfig.{name} = {value!r} is below the smallest normal number of {dtype} ({finfo.tiny:.4g}), "
                f"where it rounds to 0 or loses its precision and the update divides 0 by 0; use {name} >= "
                f"{finfo.tiny:.4g}, {fix}."
            )


def check_restored_state(cfg: StateConfig, saved_config: Mapping[str, Any] | None, states: Any, where: str) -> None:
    """Refuse to continue from a saved state that this configuration's contract does not cover.

    Args:
        cfg: the configuration of the learner or model that loads the state.
        saved_config: ``StateConfig.to_dict()`` as saved with the state (``None``: not saved, e.g.
            by an older version; then only the values are checked).
        states: every saved state value (any array-like; all streams, keys and layers).
        where: what is being loaded, for the message (e.g. ``"Learner.load_state_dict"``).

    Raises :class:`~psann_stream.errors.CheckpointError` naming the fields that differ (saved vs
    here) or the largest ``|s|`` against ``max_abs`` (with one float32 rounding of slack, ``2**-23``
    relative, so that a float32 model's states load into a float64 one): a state outside the bound breaks C1 and C2
    from the first step, and a different configuration changes what the state means.
    """
    if saved_config is not None:
        here = cfg.to_dict()
        saved = dict(saved_config)
        differ = [f"{k} {saved.get(k)!r} (saved) vs {here[k]!r} (here)" for k in here if saved.get(k) != here[k]]
        if differ:
            raise CheckpointError(
                f"{where}: the saved state was produced by another state configuration: {'; '.join(differ)}. Build "
                "the model with the saved configuration (StateConfig.from_mapping(saved['state_config'])) to continue "
                "from it, or start this configuration from a fresh state."
            )
    values = np.asarray(states, dtype=np.float64).reshape(-1)
    # One float32 rounding of slack: a state at max_abs = 0.1 saved by a float32 model is 0.1f = 0.10000000149.
    limit = cfg.max_abs * (1.0 + 2.0**-23)
    if values.size == 0:
        return
    bad = ~np.isfinite(values)
    if bad.any():
        raise CheckpointError(
            f"{where}: the saved state holds {int(bad.sum())} non-finite value(s) (first at flat index "
            f"{int(np.argmax(bad))}); the file is corrupt or was written by a broken update. Restore an earlier "
            "checkpoint or start from a fresh state."
        )
    peak = float(np.abs(values).max())
    if np.abs(values).max() > limit:
        raise CheckpointError(
            f"{where}: the saved state has |s| = {peak:.6g} at flat index {int(np.argmax(np.abs(values)))}, above this "
            f"configuration's max_abs = {cfg.max_abs!r}; the bound would hold from the first step only by a jump. Load it "
            f"into a model with max_abs >= {peak:.6g}, or start from a fresh state."
        )


# ---------------------------------------------------------------------- the update
def apply_bound(x: torch.Tensor, cfg: StateConfig) -> torch.Tensor:
    """The bound ``B``: clip to ``[-M, M]``, ``M * tanh(x / M)``, or project each stream's vector
    (the last dimension) onto the l2 ball of radius ``M``. All three are 1-Lipschitz, odd, and map
    every finite or infinite value into ``[-M, M]``; NaN stays NaN (callers reject it earlier).
    """
    check_dtype(cfg, x.dtype)
    m = cfg.max_abs
    if cfg.bound == "clip":
        return x.clamp(-m, m)
    if cfg.bound == "tanh":
        return torch.tanh(x / m) * m
    # Ball. Overflow-safe: clip at the dtype's largest value so no inf * 0 appears, and compare
    # norms in a form scaled by the largest entry. Gradient-safe: sqrt is never evaluated at 0
    # (the selected branch has a scaled squared norm >= 1), so an all-zero state has gradient 0,
    # not NaN.
    big = torch.finfo(x.dtype).max
    x = x.clamp(-big, big)
    # The scale is a constant for autograd: norm = peak * ||x / peak|| has the exact gradient
    # x / ||x|| either way, and a constant peak cannot produce 0 / 0 when it underflows.
    peak = x.detach().abs().amax(dim=-1, keepdim=True)
    one = torch.ones_like(peak)
    safe_peak = torch.where(peak > 0, peak, one)
    u = x / safe_peak
    sq = (u * u).sum(dim=-1, keepdim=True)
    outside = sq > (m / safe_peak) ** 2
    # Outside, the projection is u * M / ||u||: never the norm itself, which overflows when the
    # entries are near the dtype's largest value (peak * sqrt(h) > max).
    scale = m / torch.sqrt(torch.where(outside, sq, one))
    # The final clamp only removes float rounding (an entry 1 ulp above M after scaling).
    return torch.where(outside, u * scale, x).clamp(-m, m)


def carry(s: torch.Tensor, cfg: StateConfig, *, force_detach: bool = False) -> torch.Tensor:
    """What of a state crosses a step boundary: the value always, its graph only if ``detach`` is off.

    ``force_detach`` is set by online learning: after an optimiser step the graph of the previous
    state refers to parameter values that no longer exist, so truncation there is not optional.
    """
    return s.detach() if (cfg.detach or force_detach) else s


def rate_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """A learnable rate: ``RATE_CAP * exp(-exp(raw))``, in ``[0, RATE_CAP)`` for every raw value and
    dtype (LRU's parametrisation, Orvieto et al. 2023: ``d rho / d raw = -rho exp(raw)`` vanishes as
    ``rho -> 0`` and shrinks the steps of slow units, whose traces grow like ``1 / (1 - rho)``).

    >>> float(rate_from_raw(torch.tensor(-50.0))) < 1.0
    True
    """
    return RATE_CAP * torch.exp(-torch.exp(raw))


def raw_phases(pairs: int) -> torch.Tensor:
    """Initial rotation angles of ``pairs`` oscillatory pairs: spread evenly over ``(0, pi)``, so the
    pairs start at periods from 2 events (angle near pi) to ``2 * pairs`` events and beyond.

    >>> [round(float(t), 4) for t in raw_phases(2)]
    [0.7854, 2.3562]
    """
    return (torch.arange(pairs, dtype=torch.float64) + 0.5) * (math.pi / pairs)


def rotate_pairs(s: torch.Tensor, rate: torch.Tensor | float, phase: torch.Tensor) -> torch.Tensor:
    """``r_k R(theta_k)`` applied to each pair ``(s[..., 2k], s[..., 2k + 1])``: ``(r (c u - s v),
    r (s u + c v))`` with ``c, s = cos, sin theta_k``; ``rate`` per pair or one number."""
    u, v = s[..., 0::2], s[..., 1::2]
    c, sn = torch.cos(phase), torch.sin(phase)
    return torch.stack([rate * (c * u - sn * v), rate * (sn * u + c * v)], dim=-1).reshape(s.shape)


def raw_rates(cfg: StateConfig, units: int) -> torch.Tensor:
    """Initial raw rates of ``units`` units: memories ``1 / (1 - rho)`` geometric from
    ``memory_min`` to ``memory_max`` (float64; the inverse of :func:`rate_from_raw`).

    >>> cfg = StateConfig(learnable_rate=True, memory_min=2.0, memory_max=8.0)
    >>> [round(1 / (1 - float(r)), 6) for r in rate_from_raw(raw_rates(cfg, 3))]
    [2.0, 4.0, 8.0]
    """
    lo, hi = math.log(cfg.memory_min), math.log(cfg.memory_max)
    tau = torch.exp(torch.linspace(lo, hi, units, dtype=torch.float64)) if units > 1 else torch.full((1,), cfg.memory_min, dtype=torch.float64)
    rho = 1.0 - 1.0 / tau
    return torch.log(-torch.log(rho / RATE_CAP))


def update_state(s_prev: torch.Tensor, a: torch.Tensor, cfg: StateConfig, rho: torch.Tensor | None = None,
                 phase: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the state recurrence for every stream and unit.

    Args:
        s_prev: ``[streams, units]`` state after the previous step.
        a: ``[streams, units]`` the layer's activation at this step (finite, ``|a| <= G``).
        cfg: the state configuration.
        rho: ``[units]`` per-unit rates (learnable rates; ``[units / 2]`` per pair when oscillatory),
            in place of ``cfg.rho``.
        phase: ``[units / 2]`` rotation angles of the oscillatory pairs (``cfg.oscillatory``).

    Returns:
        ``[streams, units]``: ``B(rho * s_prev + (1 - rho) * beta * phi(a, s_prev))``, with the graph
        of ``s_prev`` as given: what crosses a step boundary is decided where steps are chained
        (:func:`carry`, applied by ``commit_state`` and the rollout), so that a caller may pass a
        state that carries gradients on purpose (the eligibility traces of
        :mod:`psann_stream.traces`).
    """
    check_dtype(cfg, s_prev.dtype)
    if cfg.mode == "trace":
        drive = a
    elif cfg.mode == "gain":
        drive = a.abs()
    else:
        # |a s| overflows to inf for a huge amplitude; held at the dtype's largest value, so that a
        # drive coefficient of 0 (beta = 0) gives 0, not 0 * inf = NaN.
        drive = (a * s_prev).abs().clamp(max=torch.finfo(s_prev.dtype).max)
    if phase is not None:
        r = cfg.rho if rho is None else rho
        keep = 1.0 - (r if rho is None else rho.repeat_interleave(2))
        return apply_bound(rotate_pairs(s_prev, r, phase) + (keep * cfg.beta) * drive, cfg)
    if rho is not None:
        return apply_bound(rho * s_prev + ((1.0 - rho) * cfg.beta) * drive, cfg)
    return apply_bound(cfg.rho * s_prev + ((1.0 - cfg.rho) * cfg.beta) * drive, cfg)


# ---------------------------------------------------------------------- theory helpers (float64)
def contraction_constant(cfg: StateConfig, drive_bound: float) -> float:
    """Lipschitz constant ``L`` of the map ``s_{t-1} -> s_t`` for activations with ``|a| <= drive_bound``.

    ``rho`` in trace and gain mode, for every parameter value (the drive does not contain the
    state). In legacy mode the largest growth factor ``rho + (1 - rho) * beta * G``, which exceeds 1
    as soon as ``beta * G > 1``: then nearby states are pushed apart until the bound stops them.

    >>> contraction_constant(StateConfig(rho=0.9), drive_bound=1.0)
    0.9
    >>> round(contraction_constant(StateConfig(mode="psann_legacy", rho=0.9, beta=2.0), 1.0), 6)
    1.1
    """
    if cfg.contractive:
        return cfg.rate_bound
    return cfg.rho + (1.0 - cfg.rho) * cfg.beta * float(drive_bound)


def steady_state_limit(cfg: StateConfig, drive_bound: float) -> float:
    """``limsup |s_t|`` for ``|phi(a)| <= G``: ``min(M, beta * G)`` (trace, gain), ``M`` (legacy, worst case).

    When ``beta * G <= max_abs`` the clip bound is never active once the state has settled.
    """
    if not cfg.contractive:
        return cfg.max_abs
    return min(cfg.max_abs, cfg.beta * float(drive_bound))


def envelope(cfg: StateConfig, s0_abs: float, t: int | np.ndarray, drive_bound: float) -> np.ndarray:
    """The C2 envelope: a bound on ``|s_t|`` after ``t`` steps from ``|s_0| = s0_abs``.

    Trace and gain: ``min(M, rho^t |s_0| + (1 - rho^t) * beta * G)``. With learnable rates every
    unit's ``rho_i`` lies in ``[0, RATE_CAP)`` and the bound is the largest over that range:
    ``max(beta * G, RATE_CAP^t |s_0| + (1 - RATE_CAP^t) * beta * G)``. Legacy:
    ``min(M, L^t |s_0|)`` with ``L`` from :func:`contraction_constant`. With oscillatory pairs the
    bound is on each pair's l2 norm: ``|s_0|`` and ``G`` are then a pair's, and the cap is
    ``sqrt(2) M`` (the elementwise bound allows both units at ``M``; with ``bound="ball"`` the
    layer's norm is at most ``M``).

    >>> float(envelope(StateConfig(rho=0.5, max_abs=3.0), s0_abs=3.0, t=1, drive_bound=1.0))
    2.0
    """
    t = np.asarray(t, dtype=np.float64)
    if cfg.contractive:
        decay = cfg.rate_bound**t
        with np.errstate(over="ignore"):  # ((1 - rho^t) beta) G: no inf * 0 at t = 0; an overflow is the true inf
            bound = decay * s0_abs + ((1.0 - decay) * cfg.beta) * float(drive_bound)
            if cfg.learnable_rate:
                bound = np.maximum(bound, cfg.beta * float(drive_bound))
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # a growth factor > 1 may overflow: inf, capped below
            bound = np.where(s0_abs > 0, contraction_constant(cfg, drive_bound) ** t * s0_abs, 0.0)
    cap = cfg.max_abs * math.sqrt(2.0) if cfg.oscillatory and cfg.bound != "ball" else cfg.max_abs
    return np.minimum(cap, bound)


def fixed_point(cfg: StateConfig, a: float | np.ndarray, s0: float | np.ndarray | None = None) -> np.ndarray:
    """The state a constant activation ``a`` drives every unit to (elementwise; float64).

    Trace and gain mode: the unique fixed point ``s* = B(beta * phi(a))`` (clip, ball) or the root
    of ``s = M tanh((rho s + (1 - rho) beta phi(a)) / M)`` (tanh), reached at rate ``rho^t``.
    For ``bound="ball"`` the last axis of ``a`` is one stream's vector. Legacy mode has no unique
    fixed point: from ``s0`` (default ``init``) it returns where that trajectory ends — 0 when the
    growth factor ``g = rho + (1 - rho) beta |a|`` is below 1, the saturation point when above;
    when exactly 1, ``s0`` itself (clip, ball) or 0, approached like ``1/sqrt(t)`` (tanh).

    >>> float(fixed_point(StateConfig(rho=0.9, beta=2.0, max_abs=3.0), 0.5))
    1.0
    >>> float(fixed_point(StateConfig(mode="psann_legacy", init=1.0), 0.5))
    0.0
    """
    a = np.asarray(a, dtype=np.float64)
    m, rho, beta = cfg.max_abs, cfg.rho, cfg.beta
    if cfg.contractive:
        with np.errstate(over="ignore"):  # beta * phi beyond float64 is inf: the bound's limit
            c = beta * (a if cfg.mode == "trace" else np.abs(a))
        if cfg.bound == "clip":
            return np.clip(c, -m, m)
        if cfg.bound == "ball":
            # beta * phi * min(1, M / (beta |phi|)), from phi: beta * phi may overflow, its square more so
            phi = np.atleast_1d(a if cfg.mode == "trace" else np.abs(a))
            peak = np.abs(phi).max(axis=-1, keepdims=True)
            safe = np.where(peak > 0, peak, 1.0)
            norm = safe * np.linalg.norm(phi / safe, axis=-1, keepdims=True)
            with np.errstate(divide="ignore", over="ignore"):  # M / |phi| may be inf: then beta
                scale = np.minimum(beta, m / norm)
            return (phi * scale).reshape(np.shape(c))
        # tanh: s - M tanh((rho s + (1-rho) c)/M) is strictly increasing in s; bisect on [-M, M]. The
        # drive is weighted as the update weights it, ((1 - rho) beta) phi, which stays finite where c does not.
        with np.errstate(over="ignore"):  # drive or (rho s + drive) / M may overflow: tanh(+-inf) = +-1, the limit
            drive = ((1.0 - rho) * beta) * (a if cfg.mode == "trace" else np.abs(a))
            return _bisect(lambda s: s - m * np.tanh((rho * s + drive) / m), -m, m, np.shape(c))
    s0 = np.asarray(cfg.init if s0 is None else s0, dtype=np.float64)
    g = rho + (1.0 - rho) * beta * np.abs(a)
    g, s0 = np.broadcast_arrays(g, s0)
    sign = np.sign(s0)
    if cfg.bound == "tanh":
        sat = _bisect(lambda s: s - m * np.tanh(g * s / m), 1e-300, m, g.shape)
    else:  # clip or ball: g * s grows until the bound holds it at M (per unit; ball is a worst case)
        sat = np.full(g.shape, m)
    # g == 1: clip and ball leave s0 where it is; tanh still shrinks it, slowly, towards 0.
    neutral = np.zeros_like(s0) if cfg.bound == "tanh" else np.clip(s0, -m, m)
    return np.where(g > 1.0, sat * sign, np.where(g < 1.0, 0.0, neutral))


def _bisect(f: Any, lo: float, hi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Root of an increasing function on ``[lo, hi]`` elementwise, to the float64 resolution of ``f``: halves
    until the ends are adjacent floats (at most ~2,100 steps from ``+-1.8e308`` to a root at 0;
    ~60 for ``M`` near 1 and a root near 1)."""
    lo_a = np.full(shape, lo, dtype=np.float64)
    hi_a = np.full(shape, hi, dtype=np.float64)
    for _ in range(2200):
        mid = 0.5 * lo_a + 0.5 * hi_a  # not (lo + hi) / 2: the sum overflows near +-1.8e308
        if not ((mid > lo_a) & (mid < hi_a)).any():
            break
        pos = f(mid) > 0
        hi_a = np.where(pos, mid, hi_a)
        lo_a = np.where(pos, lo_a, mid)
    return 0.5 * lo_a + 0.5 * hi_a


@dataclass(frozen=True)
class StateBounds:
    """What the theory guarantees for one layer's state, at the layer's current parameters.

    Attributes:
        drive_bound: ``G``, the largest amplitude: every activation satisfies ``|a| <= G``.
        steady_state_limit: ``limsup |s|`` (``min(M, beta * G)``; ``M`` in legacy mode).
        contraction: ``L``, *this layer's* rate: two states of this layer driven by the same
            activations approach each other like ``L^t``. A network of several layers contracts
            more slowly (:meth:`StatefulNet.gap_bound`).
        max_abs: the hard bound ``M``.
        bound_inactive: ``True`` when the bound provably never acts once the state has settled
            (trace and gain mode): ``clip`` when ``beta * G <= M``; ``ball`` when
            ``sqrt(units) * beta * G <= M`` (it bounds the state vector's l2 norm); ``tanh`` never (it
            shrinks every non-zero value at every step, so its fixed point lies below ``beta * a``:
            see ``state.fixed_point``).
    """

    drive_bound: float
    steady_state_limit: float
    contraction: float
    max_abs: float
    bound_inactive: bool


def bounds_for(cfg: StateConfig, drive_bound: float, rate: float | None = None, units: int = 1) -> StateBounds:
    """:class:`StateBounds` of a layer of ``units`` units whose largest amplitude is ``drive_bound``
    (and, with learnable rates, whose largest rate is ``rate``: the layer's contraction constant)."""
    g = float(drive_bound)
    reach = cfg.beta * g * (math.sqrt(units) if cfg.bound == "ball" else 1.0)
    return StateBounds(
        drive_bound=g,
        steady_state_limit=steady_state_limit(cfg, g),
        contraction=contraction_constant(cfg, g) if rate is None else float(rate),
        max_abs=cfg.max_abs,
        bound_inactive=cfg.contractive and cfg.bound != "tanh" and reach <= cfg.max_abs,
    )
