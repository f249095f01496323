"""Packing a StatefulNet, its state and its optimiser state into the flat float64 arrays of the
compiled loop (:mod:`psann_stream._fastpath`), and back. The flat parameter order is
``model.parameters()``; every conversion here is exact (float64 both sides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .errors import ConfigError
from .state import StateBounds, bounds_for, rate_from_raw
from .model import StatefulNet
from .optim import OPTIMIZERS, IntentionalSGD, ObGD, StreamingAdam, optimizer_defaults

OPT_KINDS = {"obgd": 0, "intentional": 1, "adam": 2}
def fast_path_unsupported(model: StatefulNet) -> str | None:
    """Why the compiled loop cannot run ``model`` (``None`` when it can)."""
    if type(model) is not StatefulNet:
        return f"the model is a {type(model).__name__}, not a StatefulNet"
    if model.state_config.bound == "ball":
        return "bound='ball' couples the units of a layer; the compiled loop supports 'clip' and 'tanh'"
    return None


@dataclass(frozen=True)
class Layout:
    """The integer and float descriptions of a StatefulNet that the compiled loop reads."""

    lay: np.ndarray  # [L, 11] int64
    head: np.ndarray  # [4] int64: (offset of W, offset of b, h_last, outputs)
    fixed_gain: np.ndarray  # [U] float64
    cfg: np.ndarray  # [5] float64
    mode: int
    bound: int
    n_params: int
    n_units: int
    widths: tuple[int, ...]
    n_traces: int  # eligibility traces per stream with traced learning (n_params, twice with oscillatory pairs)
    n_outputs: int  # outputs per event (targets learned together), = head[3]


def layout(model: StatefulNet) -> Layout:
    c = model.state_config
    offsets: dict[int, int] = {}
    off = 0
    for p in model.parameters():
        offsets[id(p)] = off
        off += p.numel()
    rows, fixed, unit = [], [], 0
    n_in = model.in_features
    for layer in model.layers:
        h = layer.out_features
        og = offsets[id(layer.raw_gain)] if c.learnable_gain else -1
        orr = offsets[id(layer.raw_rate)] if c.learnable_rate else -1
        oph = offsets[id(layer.raw_phase)] if c.oscillatory else -1
        act = layer.activation
        rows.append([n_in, h, og, offsets[id(layer.linear.weight)], offsets[id(layer.linear.bias)],
                     offsets[id(act.raw_amplitude)], offsets[id(act.raw_frequency)], offsets[id(act.raw_decay)], unit, orr,
                     oph])
        fixed.append(layer.gain.detach().double().numpy() if not c.learnable_gain else np.zeros(h))
        unit += h
        n_in = h
    head = np.array([offsets[id(model.head.weight)], offsets[id(model.head.bias)], model.hidden[-1],
                     model.out_features], dtype=np.int64)
    return Layout(
        lay=np.array(rows, dtype=np.int64),
        head=head,
        fixed_gain=np.concatenate(fixed).astype(np.float64),
        cfg=np.array([c.rho, c.beta, c.max_abs, c.gain_max, c.gain_eps], dtype=np.float64),
        mode={"trace": 0, "gain": 1, "psann_legacy": 2}[c.mode],
        bound={"clip": 0, "tanh": 1}.get(c.bound, -1),
        n_params=off,
        n_units=unit,
        widths=tuple(model.hidden),
        n_traces=off * (2 if c.oscillatory else 1),
        n_outputs=int(model.out_features),
    )


def flat_params(model: StatefulNet) -> np.ndarray:
    return torch.nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).double().numpy().copy()


def load_flat_params(model: StatefulNet, theta: np.ndarray) -> None:
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.from_numpy(np.ascontiguousarray(theta)).to(next(model.parameters()).dtype), list(model.parameters()))


def flat_state(model: StatefulNet) -> np.ndarray:
    """The held state of a one-stream model, every layer's units concatenated (the compiled loop's
    ``state`` row), float64."""
    return np.concatenate([t.detach().double().reshape(-1).numpy() for t in model.held_state()])


def load_flat_state(model: StatefulNet, state: np.ndarray) -> None:
    """Commit a :func:`flat_state` row to the model as its held state."""
    parts, off = [], 0
    for layer in model.layers:
        h = layer.out_features
        parts.append(torch.from_numpy(np.array(state[off : off + h]))[None, :])
        off += h
    model.commit_state(tuple(parts))


def optimizer_settings(name: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The optimiser's defaults (:func:`~psann_stream.optim.optimizer_defaults`) with ``overrides``,
    checked by building the optimiser once (its messages)."""
    defaults = optimizer_defaults(name)
    settings = {**defaults, **dict(overrides or {})}
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(map(repr, unknown))} for optimizer {name!r}; "
            f"known: {', '.join(defaults)}."
        )
    OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(1))], **settings)  # validates, with its messages
    return settings


def optimizer_hyper(name: str, s: Mapping[str, Any]) -> np.ndarray:
    if name == "obgd":
        return np.array([s["lr"], s["kappa"], s["trace_decay"], 0.0])
    if name == "intentional":
        return np.array([s["lr"], s["kappa"], s["eps"], s["error_clip"] if s["error_clip"] is not None else -1.0])
    return np.array([s["lr"], s["betas"][0], s["betas"][1], s["eps"]])


def restart_buffer(optimizer: str) -> str:
    """The optimiser-state array a restart clears (``Learner.reset(optimizer=True)``, drift resets):
    ObGD's traces ``buf1``; for intentional SGD and Adam the scalars ``scal`` (error statistics;
    Adam's step count, so its bias correction starts again while its moments are kept). The compiled
    drift reset (``_fastpath._on_drift``) applies the same rule by optimiser kind."""
    return "buf1" if optimizer == "obgd" else "scal"


def empty_optimizer_state(n_params: int) -> dict[str, np.ndarray]:
    """The neutral optimiser state: ``buf1``/``buf2`` per parameter (ObGD trace; Adam m, v) and
    ``scal`` (intentional: err_sq, err_w; Adam: t)."""
    return {"buf1": np.zeros(n_params), "buf2": np.zeros(n_params), "scal": np.zeros(2)}


def optimizer_state_from_torch(opt: torch.optim.Optimizer, model: StatefulNet) -> dict[str, np.ndarray]:
    params = list(model.parameters())
    out = empty_optimizer_state(sum(p.numel() for p in params))
    off = 0
    for p in params:
        st = opt.state.get(p, {})
        n = p.numel()
        if isinstance(opt, ObGD) and "trace" in st:
            out["buf1"][off : off + n] = st["trace"].detach().double().reshape(-1).numpy()
        if isinstance(opt, StreamingAdam) and "m" in st:
            out["buf1"][off : off + n] = st["m"].detach().double().reshape(-1).numpy()
            out["buf2"][off : off + n] = st["v"].detach().double().reshape(-1).numpy()
        off += n
    g = opt.param_groups[0]
    if isinstance(opt, IntentionalSGD):
        out["scal"][:] = (g["err_sq"], g["err_w"])
    if isinstance(opt, StreamingAdam):
        out["scal"][0] = g["t"]
    return out


def optimizer_state_to_torch(opt: torch.optim.Optimizer, model: StatefulNet, flat: Mapping[str, np.ndarray]) -> None:
    off = 0
    for p in model.parameters():
        n = p.numel()
        part = {k: torch.from_numpy(np.array(flat[k][off : off + n])).reshape(p.shape).to(p.dtype) for k in ("buf1", "buf2")}
        if isinstance(opt, ObGD) and opt.param_groups[0]["trace_decay"] != 0.0:  # no decay: no trace kept
            opt.state[p]["trace"] = part["buf1"]
        if isinstance(opt, StreamingAdam):
            opt.state[p]["m"] = part["buf1"]
            opt.state[p]["v"] = part["buf2"]
        off += n
    for g in opt.param_groups:
        if isinstance(opt, IntentionalSGD):
            g["err_sq"], g["err_w"] = float(flat["scal"][0]), float(flat["scal"][1])
        if isinstance(opt, StreamingAdam):
            g["t"] = int(flat["scal"][0])


def layer_bounds(lay: np.ndarray, theta: np.ndarray, config: Any) -> list[StateBounds]:
    """Per layer, the state bounds at the flat parameters ``theta`` (no torch model needed)."""
    out = []
    for row in lay:
        h, oa, orr, groups = int(row[1]), int(row[5]), int(row[9]), int(row[1]) // (2 if row[10] >= 0 else 1)
        raw = float(np.max(theta[oa : oa + h]))
        amp = float(torch.nn.functional.softplus(torch.tensor(raw, dtype=torch.float64)))  # as SineActivation.amplitude
        rate = float(rate_from_raw(torch.tensor(float(np.min(theta[orr : orr + groups]))))) if orr >= 0 else None
        out.append(bounds_for(config, amp, rate))
    return out
