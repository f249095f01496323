"""The stability contract as a check suite for any stateful module, in the style of river's
``utils.estimator_checks.yield_checks``.

A module follows the *state protocol* when ``module(x, state) -> (y, new_state)`` maps inputs
``x: [streams, in_features]`` and a state (a tensor ``[streams, ...]`` or a tuple of them) to outputs
and the next state without changing anything, and ``module.initial_state(n_streams)`` returns the
state every stream starts from (the reset). :class:`~psann_stream.StatefulNet` follows it, and so
does a few-line wrapper around a torch cell (docs/testing.md).

:func:`yield_checks` yields the checks that apply to a module, each a named, independent
:class:`Check` that builds its own copy of the module and raises :class:`StabilityViolation` with
what failed, where and after how many steps. For a :class:`~psann_stream.StatefulNet` the claims
come from its :class:`~psann_stream.StateConfig` (docs/stability.md); for any other module from the
arguments: ``max_abs`` (the state's bound) and ``contraction`` (a claimed rate ``L``:
``norm(s_t - s'_t) <= L^t norm(s_0 - s'_0)`` for the same inputs).

>>> import torch
>>> from psann_stream import StatefulNet, StateConfig
>>> checks = list(yield_checks(lambda: StatefulNet(3, hidden=(4, 4), state=StateConfig(rho=0.8), seed=0)))
>>> [c.name for c in checks]  # doctest: +NORMALIZE_WHITESPACE
['bounded', 'envelope', 'contraction', 'fixed_point', 'no_collapse', 'reset', 'chunking',
 'streams_independent', 'nonfinite', 'checkpoint', 'kernel_agreement']
>>> for check in checks:
...     check()
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from .. import _fastpath as fp
from .._packing import flat_params, layout
from ..errors import NonFiniteInputError
from ..model import StatefulNet
from ..rollout import rollout
from ..state import apply_bound, envelope, fixed_point
from .strategies import ADVERSARIAL_KINDS, adversarial_stream

__all__ = ["Check", "StabilityViolation", "run_checks", "yield_checks"]

ModelOrFactory = nn.Module | Callable[[], nn.Module]


class StabilityViolation(AssertionError):
    """A check of the stability contract failed; the message says which, where and by how much."""


@dataclass(frozen=True)
class Check:
    """One named check of the stability contract; call it to run it (it raises on a violation)."""

    name: str
    description: str
    run: Callable[[], None]

    def __call__(self) -> None:
        self.run()

    def __repr__(self) -> str:
        return f"Check({self.name!r}: {self.description})"


# ---------------------------------------------------------------------- the module under test
def _factory(model: ModelOrFactory) -> Callable[[], nn.Module]:
    if isinstance(model, nn.Module):
        snapshot = copy.deepcopy(model)
        return lambda: copy.deepcopy(snapshot)
    if callable(model):
        return model
    raise TypeError(f"yield_checks needs a torch module or a function that builds one, got {type(model).__name__}.")


def _as_tuple(state: Any) -> tuple[torch.Tensor, ...]:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def _flat(state: Any) -> torch.Tensor:
    """``[streams, total]``: every state tensor of the module, flattened per stream."""
    parts = _as_tuple(state)
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)


def _like(state: Any, flat: torch.Tensor) -> Any:
    """The inverse of :func:`_flat`: ``flat`` cut into tensors shaped like ``state``."""
    parts, out, i = _as_tuple(state), [], 0
    for p in parts:
        n = p[0].numel()
        out.append(flat[:, i:i + n].reshape(flat.shape[0], *p.shape[1:]).to(p.dtype))
        i += n
    return tuple(out) if isinstance(state, (tuple, list)) else out[0]


def _dtype(m: nn.Module) -> torch.dtype:
    for t in list(m.parameters()) + list(m.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _run(m: nn.Module, xs: torch.Tensor, state: Any) -> tuple[torch.Tensor, list[torch.Tensor], Any]:
    """Step ``m`` over ``xs: [T, S, F]`` from ``state``: outputs ``[T, S, ...]``, the flat state after
    every step, and the final state (no gradients, nothing committed)."""
    ys, states = [], []
    with torch.no_grad():
        for x in xs:
            y, state = m(x, state)
            ys.append(y)
            states.append(_flat(state))
    return torch.stack(ys), states, state


def _l2(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """l2 norm along ``dim`` in float64, scaled by the largest entry so that states of 1e-163 do not
    square to 0 (torch's norm underflows there)."""
    x = x.double()
    peak = x.abs().amax(dim=dim, keepdim=True)
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return (safe * torch.linalg.vector_norm(x / safe, dim=dim, keepdim=True)).squeeze(dim)


def _gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Half the root-mean-square distance between rows of ``a`` and ``b`` (the l2 distance over
    ``2 sqrt(n)``): states near the dtype's largest value differ by more than it can hold, and a
    row's l2 norm can exceed it; this stays below the largest entry. Checks compare gaps with gaps,
    so the constant factor cancels."""
    half = 0.5 * a.double() - 0.5 * b.double()
    return _l2(half) / math.sqrt(half.shape[-1])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN equal to NaN (outputs may overflow; the contract is about states)."""
    return a.shape == b.shape and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _fail(check: str, msg: str) -> StabilityViolation:
    return StabilityViolation(f"{check}: {msg}")


# ---------------------------------------------------------------------- yield_checks
def yield_checks(model: ModelOrFactory, *, in_features: int | None = None, max_abs: float | None = None,
                 contraction: float | None = None, max_input: float | None = None, steps: int = 200,
                 streams: int = 3, seed: int = 0) -> Iterator[Check]:
    """Yield every check of the stability contract that applies to ``model``.

    Args:
        model: a module that follows the state protocol (module doc), or a function without
            arguments that builds one (each check builds its own; a module is deep-copied).
        in_features: the input width (default: ``model.in_features``).
        max_abs: the bound every state value keeps, ``|s| <= max_abs`` (default: the
            ``StateConfig``'s for a StatefulNet; ``None`` for other modules: finiteness only).
        contraction: a claimed rate ``L < 1`` for other modules (a StatefulNet's claim comes from
            its configuration: :meth:`~psann_stream.StatefulNet.gap_bound`).
        max_input: the largest input magnitude of the adversarial streams (default: near the
            dtype's overflow, 1e300 in float64, 3e38 in float32). Lower it for a module that
            documents an input range (e.g. normalised inputs).
        steps: length of every stream (``no_collapse`` runs ``max(steps, 1000)``).
        streams: streams per batch.
        seed: seed of every drawn stream and initial state.

    Checks (only those that apply are yielded): ``bounded`` (C1), ``envelope`` (C2),
    ``contraction`` (C3, per layer and for the network), ``fixed_point`` (C4), ``no_collapse`` (the
    state keeps responding to its input), ``reset`` (C6), ``chunking`` (C9), ``streams_independent``,
    ``nonfinite`` (C12), ``checkpoint`` (C8), ``kernel_agreement`` (torch vs the compiled loop).
    """
    make = _factory(model)
    probe = make()
    for name in ("initial_state", "forward"):
        if not callable(getattr(probe, name, None)):
            raise TypeError(f"yield_checks: {type(probe).__name__} has no {name}(); a stateful module needs "
                            "forward(x, state) -> (y, new_state) and initial_state(n_streams) (psann_stream.testing).")
    F = in_features if in_features is not None else getattr(probe, "in_features", None)
    if not isinstance(F, int) or F < 1:
        raise TypeError(f"yield_checks: pass in_features=... ({type(probe).__name__} has no integer in_features).")
    net = probe if isinstance(probe, StatefulNet) else None
    cfg = net.state_config if net is not None else None
    bound = max_abs if max_abs is not None else (cfg.max_abs if cfg is not None else None)
    if contraction is not None and not 0.0 <= contraction < 1.0:
        raise ValueError(f"yield_checks: contraction = {contraction!r} must lie in [0, 1).")
    ctx = _Context(make, F, bound, contraction, max_input, steps, streams, seed)
    contractive = cfg.contractive if cfg is not None else contraction is not None

    yield Check("bounded", "every state is finite (and within max_abs) on adversarial input streams", ctx.bounded)
    if cfg is not None:
        yield Check("envelope", "|s_t| <= min(M, rho^t |s_0| + (1 - rho^t) beta G) per layer", ctx.envelope)
    if contractive:
        yield Check("contraction", "two states driven by the same inputs approach each other at the claimed rate",
                    ctx.contraction)
        yield Check("fixed_point", "constant input drives the state to its fixed point at the claimed rate", ctx.fixed_point)
    if cfg is None or _responds(probe):
        yield Check("no_collapse", "the state keeps responding to its input (no absorbing or stuck state)", ctx.no_collapse)
    yield Check("reset", "the initial state is deterministic (and honours init); a reset equals a fresh module", ctx.reset)
    if net is not None:
        yield Check("chunking", "one rollout equals the same events in chunks and step by step", ctx.chunking)
    yield Check("streams_independent", "streams advanced together equal each stream advanced alone", ctx.independent)
    yield Check("nonfinite", "a non-finite input is refused or skipped, never silently absorbed", ctx.nonfinite)
    yield Check("checkpoint", "state_dict + state saved and loaded into a fresh module continue identically", ctx.checkpoint)
    if cfg is not None and cfg.bound != "ball":
        yield Check("kernel_agreement", "the compiled loop and torch give the same states and predictions",
                    ctx.kernel_agreement)


def _responds(net: StatefulNet) -> bool:
    """Whether the first layer's state can move in float64 (where ``no_collapse`` runs): its largest
    drive ``(1 - rho) beta G`` is not below the resolution of its initial state. ``beta = 0`` or a
    drive of 1e-60 on a state of 1 makes the state a constant by design, not by collapse."""
    layer, cfg = net.layers[0], net.state_config
    coef = (1.0 - (layer.lipschitz().rate if cfg.contractive else cfg.rho)) * cfg.beta * float(layer.activation.amplitude.detach().max())
    return coef > 4.0 * torch.finfo(torch.float64).eps * abs(net.state_config.init) and coef > 0.0


def run_checks(model: ModelOrFactory, **kwargs: Any) -> dict[str, StabilityViolation | None]:
    """Run every check of :func:`yield_checks` and return ``{name: violation or None}`` (nothing raised)."""
    out: dict[str, StabilityViolation | None] = {}
    for check in yield_checks(model, **kwargs):
        try:
            check()
            out[check.name] = None
        except StabilityViolation as exc:
            out[check.name] = exc
    return out


# ---------------------------------------------------------------------- the checks
@dataclass
class _Context:
    make: Callable[[], nn.Module]
    F: int
    limit: float | None  # the claimed bound on |s|
    rate: float | None  # the claimed contraction rate (modules other than StatefulNet)
    max_input: float | None
    steps: int
    streams: int
    seed: int

    # -------------------------------------------------------------- helpers
    def _stream(self, kind: str, dtype: torch.dtype, steps: int | None = None, streams: int | None = None,
                seed: int = 0) -> torch.Tensor:
        return adversarial_stream(kind, steps or self.steps, streams or self.streams, self.F, dtype=dtype,
                                  seed=self.seed + seed, max_input=self.max_input)

    @staticmethod
    def _tol(dtype: torch.dtype) -> float:
        """Relative slack for rounding (64 ulps); checks add the dtype's smallest normal number as an
        absolute one, where values are subnormal and carry fewer bits."""
        return 64.0 * torch.finfo(dtype).eps

    def _random_state(self, m: nn.Module, seed: int) -> Any:
        """A random state of ``m`` inside its bound (StatefulNet: per layer, as its config allows)."""
        base = m.initial_state(self.streams)
        g = torch.Generator().manual_seed(self.seed + seed)
        if isinstance(m, StatefulNet):
            cfg = m.state_config
            lo = 0.0 if cfg.mode == "gain" else -1.0
            out = []
            for s in base:
                u = lo + (1.0 - lo) * torch.rand(s.shape, generator=g, dtype=torch.float64)
                scale = cfg.max_abs / math.sqrt(s.shape[-1]) if cfg.bound == "ball" else cfg.max_abs
                out.append(apply_bound((u * scale).to(s.dtype), cfg))
            return tuple(out)
        flat = _flat(base)
        scale = self.limit if self.limit is not None else 1.0
        noise = (torch.rand(flat.shape, generator=g, dtype=torch.float64) * 2 - 1) * scale
        return _like(base, noise.to(flat.dtype))

    # -------------------------------------------------------------- C1
    def bounded(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        for kind in ADVERSARIAL_KINDS:
            xs = self._stream(kind, dtype)
            _, states, _ = _run(m, xs, m.initial_state(self.streams))
            for t, s in enumerate(states):
                if not torch.isfinite(s).all():
                    raise _fail("bounded", f"after {t + 1} step(s) of the {kind!r} input stream (|x| up to "
                                f"{float(xs.abs().max()):.3g}) the state holds a non-finite value.")
                if self.limit is not None and bool(s.abs().max() > torch.tensor(self.limit, dtype=s.dtype)):
                    raise _fail("bounded", f"after {t + 1} step(s) of the {kind!r} input stream the state has |s| = "
                                f"{float(s.abs().max()):.6g} > max_abs = {self.limit!r}.")

    # -------------------------------------------------------------- C2
    def envelope(self) -> None:
        m = self.make()
        cfg, dtype = m.state_config, _dtype(m)
        tol, tiny = self._tol(dtype), torch.finfo(dtype).tiny  # tiny: subnormal arithmetic near 0
        for kind in ("normal", "huge", "bursts"):
            state = self._random_state(m, 1)
            g = [float(layer.activation.amplitude.detach().max()) for layer in m.layers]
            start = [self._norms(cfg, s).max() for s in state]
            with torch.no_grad():
                for t, x in enumerate(self._stream(kind, dtype), start=1):
                    _, state = m(x, state)
                    for l, s in enumerate(state):
                        drive = g[l] * (math.sqrt(2.0) if cfg.oscillatory else 1.0)
                        u = float(envelope(cfg, float(start[l]), t, drive))
                        got = float(self._norms(cfg, s).max())
                        if got > u * (1 + tol) + tol * cfg.max_abs + tiny:
                            raise _fail("envelope", f"layer {l} after {t} step(s) of the {kind!r} stream: |s| = {got:.6g} "
                                        f"above the envelope {u:.6g} (|s_0| = {float(start[l]):.4g}, G = {drive:.4g}).")

    @staticmethod
    def _norms(cfg: Any, s: torch.Tensor) -> np.ndarray:
        """Per-unit ``|s|``, or per oscillatory pair the l2 norm (the envelope's quantity)."""
        s = s.detach().double()
        if cfg.oscillatory:
            return _l2(s.reshape(*s.shape[:-1], -1, 2)).numpy()
        return s.abs().numpy()

    # -------------------------------------------------------------- C3
    def _rates(self, m: nn.Module, steps: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The claimed gap factors for the whole state and (StatefulNet) for its first layer."""
        if isinstance(m, StatefulNet):
            first = m.layers[0].lipschitz().rate ** np.arange(steps + 1, dtype=np.float64)
            return m.gap_bound(steps), first
        return float(self.rate) ** np.arange(steps + 1, dtype=np.float64), None

    def contraction(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        tol, tiny = self._tol(dtype), torch.finfo(dtype).tiny  # tiny: subnormal arithmetic near 0
        whole, first = self._rates(m, self.steps)
        for kind in ("normal", "huge"):
            a, b = self._random_state(m, 2), self._random_state(m, 3)
            xs = self._stream(kind, dtype, seed=4)
            _, sa, _ = _run(m, xs, a)
            _, sb, _ = _run(m, xs, b)
            d0 = _gap(_flat(a), _flat(b))
            scale = float(torch.cat([_flat(a), _flat(b)]).abs().max()) + 1.0
            for t in range(self.steps):
                d = _gap(sa[t], sb[t])
                lim = whole[t + 1] * d0 * (1 + tol) + tol * scale + tiny
                if (d > lim).any():
                    i = int(torch.argmax(d - lim))
                    raise _fail("contraction", f"after {t + 1} step(s) of the {kind!r} stream, stream {i}: the gap between "
                                f"two trajectories is {float(d[i]):.6g}, above the claimed {whole[t + 1]:.4g} x its start "
                                f"{float(d0[i]):.6g}.")
            if first is not None:
                h = m.layers[0].out_features
                d0 = _gap(a[0], b[0])
                for t in range(self.steps):
                    d = _gap(sa[t][:, :h], sb[t][:, :h])
                    if (d > first[t + 1] * d0 * (1 + tol) + tol * scale + tiny).any():
                        raise _fail("contraction", f"layer 0 after {t + 1} step(s) of the {kind!r} stream: the gap is "
                                    f"{float(d.max()):.6g}, above rate^t x start = {first[t + 1] * float(d0.max()):.6g}.")

    # -------------------------------------------------------------- C4
    def fixed_point(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        tol, tiny = self._tol(dtype), torch.finfo(dtype).tiny  # tiny: subnormal arithmetic near 0
        xs = self._stream("constant_run", dtype, seed=5)
        state = self._random_state(m, 6)
        cfg = getattr(m, "state_config", None) if isinstance(m, StatefulNet) else None
        if cfg is not None and not cfg.oscillatory and not (cfg.learnable_rate and cfg.bound == "tanh"):
            # the first layer sees a constant activation: its fixed point is known in closed form
            with torch.no_grad():
                acts: list[torch.Tensor] = []
                m(xs[0], state, acts)
            star = torch.as_tensor(fixed_point(cfg, acts[0].double().numpy()))
            rate = m.layers[0].lipschitz().rate
            d0 = _gap(state[0], star)
            with torch.no_grad():
                for t, x in enumerate(xs, start=1):
                    _, state = m(x, state)
                    d = _gap(state[0], star)
                    lim = rate**t * d0 * (1 + tol) + tol * (cfg.max_abs + float(star.abs().max())) + tiny
                    if (d > lim).any():
                        raise _fail("fixed_point", f"layer 0 after {t} step(s) of constant input is {float(d.max()):.6g} "
                                    f"from its fixed point B(beta phi(a)), above rate^t x start = {float(lim.max()):.6g}.")
            return
        # Any contraction: the trajectory and the same trajectory one step ahead approach each other.
        whole, _ = self._rates(m, self.steps)
        _, states, _ = _run(m, xs, state)
        d0 = _gap(states[0], _flat(state))
        for t in range(1, len(states)):
            d = _gap(states[t], states[t - 1])
            if (d > whole[t] * d0 * (1 + tol) + tol * (1.0 + float(states[t].abs().max())) + tiny).any():
                raise _fail("fixed_point", f"after {t + 1} step(s) of constant input the state still moves by "
                            f"{float(d.max()):.6g} per step, above the claimed {whole[t]:.4g} x its first move.")

    # -------------------------------------------------------------- the state keeps responding
    def no_collapse(self) -> None:
        # In float64 whatever the module's dtype: the question is whether the dynamics forget their
        # input, not whether float32 resolves a drive of 1e-7 on a state of 1 (it does not).
        m = self.make().double()
        dtype = torch.float64
        steps = max(self.steps, 1000)
        base = m.initial_state(self.streams)
        start = tuple(t.double() for t in base) if isinstance(base, (tuple, list)) else base.double()
        _, sa, _ = _run(m, self._stream("normal", dtype, steps=steps, seed=7), start)
        _, sb, _ = _run(m, self._stream("normal", dtype, steps=steps, seed=8), start)
        gaps = torch.stack([_gap(a, b) for a, b in zip(sa, sb)])
        q = steps // 4
        early, late = float(gaps[:q].median()), float(gaps[-q:].median())  # medians: a sum of 1e307s overflows
        if not late > 1e-3 * early or early == 0.0:
            raise _fail("no_collapse", f"the state stopped responding to its input: two different input streams from the "
                        f"same start left states differing by {2 * early:.3g} per unit (root mean square, median over the first "
                        f"{q} steps) and by {2 * late:.3g} (last {q} steps). The update has an absorbing or stuck state (e.g. multiplicative feedback that decays "
                        "to 0, as psann 2.0.1's; or a saturated bound): the state carries no information.")

    # -------------------------------------------------------------- C6
    def reset(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        first, second = _flat(m.initial_state(self.streams)), _flat(m.initial_state(self.streams))
        if not torch.equal(first, second):
            raise _fail("reset", "two calls of initial_state() returned different states: a reset is not deterministic.")
        cfg = getattr(m, "state_config", None) if isinstance(m, StatefulNet) else None
        if cfg is not None and not bool((first == torch.tensor(cfg.init, dtype=first.dtype)).all()):
            raise _fail("reset", f"the initial state is not init = {cfg.init!r} everywhere (values from "
                        f"{float(first.min()):.6g} to {float(first.max()):.6g}): a reset must honour init.")
        xs = self._stream("normal", dtype, seed=9)
        ya, _, _ = _run(m, xs, m.initial_state(self.streams))
        yb, _, _ = _run(self.make(), xs, self.make().initial_state(self.streams))
        if not _same(ya, yb):
            raise _fail("reset", "the same inputs from a reset state gave different outputs in a fresh copy of the module.")
        if isinstance(m, StatefulNet):
            rollout(m, xs, reset=True)
            m.reset_state()
            once = _flat(m.held_state()).clone()
            m.reset_state()
            if not torch.equal(once, _flat(m.held_state())) or not torch.equal(once, first):
                raise _fail("reset", "reset_state() after a run did not return the held state to initial_state().")
            after = rollout(m, xs, reset=False).predictions
            if not _same(after, ya):
                raise _fail("reset", "after reset_state() the outputs differ from a fresh module with the same weights.")

    # -------------------------------------------------------------- C9
    def chunking(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        xs = self._stream("normal", dtype, seed=10)
        whole = rollout(m, xs, reset=True).predictions
        cut = self.steps // 3
        parts = [rollout(m, xs[:cut], reset=True).predictions, rollout(m, xs[cut:], reset=False).predictions]
        steps = [rollout(m, xs[:1], reset=True).predictions] + [rollout(m, xs[t:t + 1], reset=False).predictions
                                                                 for t in range(1, len(xs))]
        for name, got in (("in two chunks", torch.cat(parts)), ("step by step", torch.cat(steps))):
            if not _same(got, whole):
                t = int((got != whole).reshape(len(xs), -1).any(dim=1).nonzero()[0])
                raise _fail("chunking", f"the events fed {name} differ from one rollout from step {t} on: the state "
                            "is not carried across calls as it is within one.")

    # -------------------------------------------------------------- batching
    def independent(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        xs = self._stream("normal", dtype, seed=11)
        start = self._random_state(m, 12)
        together, _, _ = _run(m, xs, start)
        flat = _flat(start)
        for i in range(self.streams):
            alone, _, _ = _run(m, xs[:, i:i + 1], _like(start, flat[i:i + 1]))
            # Batched and single-row matmuls round differently; gain mode amplifies that by up to
            # gain / gain_eps per layer. Mixing streams moves outputs by O(1), far above sqrt(eps).
            tol = math.sqrt(torch.finfo(dtype).eps)
            try:
                finite = together[:, i][torch.isfinite(together[:, i])]  # outputs may overflow: the states do not
                scale = 1.0 + (float(finite.abs().max()) if finite.numel() else 0.0)
                torch.testing.assert_close(alone[:, 0], together[:, i], rtol=tol, atol=tol * scale, equal_nan=True)
            except AssertionError as exc:
                raise _fail("streams_independent", f"stream {i} advanced alone differs from the same stream advanced "
                            f"with {self.streams - 1} other(s): the update mixes streams. {exc}") from None

    # -------------------------------------------------------------- C12
    def nonfinite(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        xs = self._stream("normal", dtype, seed=13)
        bad = xs.clone()
        k = len(xs) // 2
        bad[k, 0, 0] = float("nan")
        if isinstance(m, StatefulNet):
            rollout(m, xs[:k], reset=True)
            before = _flat(m.held_state()).clone()
            try:
                rollout(m, bad[k:], reset=False, on_nonfinite="raise")
            except NonFiniteInputError:
                pass
            else:
                raise _fail("nonfinite", f"a NaN input at step {k} was not refused by on_nonfinite='raise'.")
            if not torch.equal(before, _flat(m.held_state())):
                raise _fail("nonfinite", "a refused rollout changed the held state.")
            clean = rollout(m, xs, reset=True).state
            skipped = rollout(m, bad, reset=True, on_nonfinite="skip")
            cut = rollout(m, torch.cat([xs[:k], xs[k + 1:]]), reset=True).state
            # stream 0 skipped step k (as if it never came), the others saw every event
            if not (torch.equal(_flat(skipped.state)[0], _flat(cut)[0]) and torch.equal(_flat(skipped.state)[1:], _flat(clean)[1:])):
                raise _fail("nonfinite", "on_nonfinite='skip' did not leave the skipped event's stream as if the event "
                            "never came, and the other streams untouched.")
            return
        try:
            with torch.no_grad():
                y, s = m(bad[k], m.initial_state(self.streams))
        except (ValueError, RuntimeError, ArithmeticError):
            return
        if torch.isfinite(_flat(s)[0]).all() and torch.isfinite(y[0]).all():
            raise _fail("nonfinite", "a NaN input gave a finite state and output: the module absorbs bad data silently. "
                        "Raise on it, or let it propagate so the caller's policy (raise or skip) can see it.")

    # -------------------------------------------------------------- C8
    def checkpoint(self) -> None:
        m = self.make()
        dtype = _dtype(m)
        xs = self._stream("normal", dtype, seed=14)
        k = len(xs) // 2
        _, _, state = _run(m, xs[:k], m.initial_state(self.streams))
        buf = io.BytesIO()
        torch.save({"module": m.state_dict(), "state": state}, buf)
        fresh = self.make()
        with torch.no_grad():  # so that only the load can make it equal
            for p in fresh.parameters():
                p.add_(torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(15)))
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        fresh.load_state_dict(saved["module"])
        want, _, _ = _run(m, xs[k:], state)
        got, _, _ = _run(fresh, xs[k:], saved["state"])
        if not _same(want, got):
            raise _fail("checkpoint", "a fresh module loaded from state_dict() and the saved state does not continue "
                        "identically: part of what the module computes with is not in its state_dict() or its state.")

    # -------------------------------------------------------------- torch vs kernel
    def kernel_agreement(self) -> None:
        m = self.make().double()
        cfg = m.state_config
        L = layout(m)
        theta = flat_params(m)
        work, out1 = np.empty((len(m.layers), fp.W_ROWS, int(max(L.lay[:, 1])))), np.empty(1)
        for kind in ("normal", "huge", "bursts"):
            xs = self._stream(kind, torch.float64, streams=1, seed=16)
            ref, states, _ = _run(m, xs, m.initial_state(1))
            s = _flat(m.initial_state(1))[0].numpy().copy()
            for t, x in enumerate(xs):
                fp._forward(theta, L.lay, L.head, L.fixed_gain, L.cfg, L.mode, L.bound, s, x[0].numpy(), work, out1)
                yh = out1[0]
                s = np.concatenate([work[l, fp.R_SN, :h] for l, h in enumerate(L.lay[:, 1])])
                want_s = states[t][0].numpy()
                want_y = float(ref[t, 0, 0])
                # outputs may overflow (gain * max_abs beyond float64): equal as NaN/inf, or close
                scale = 1.0 + (abs(want_y) if math.isfinite(want_y) else 0.0)
                if not np.allclose(s, want_s, rtol=1e-9, atol=1e-9 * cfg.max_abs) or \
                        not np.allclose(yh, want_y, rtol=1e-7, atol=1e-7 * scale, equal_nan=True):
                    raise _fail("kernel_agreement", f"after {t + 1} step(s) of the {kind!r} stream the compiled loop gives "
                                f"prediction {float(yh):.10g} and states up to {float(np.abs(s - want_s).max()):.3g} away "
                                f"from torch's ({float(ref[t, 0, 0]):.10g}).")
