"""The one sequence backend: every way of running a StatefulNet over time goes through :func:`rollout`.

Rules that exist here and nowhere else:

* **Reset.** ``reset=True`` starts every stream from ``init`` (resizing the held state to the
  sequence's stream count); ``reset=False`` continues from the held state, so one call over a
  sequence equals the same sequence fed in chunks or step by step (C9).
* **Commit.** After every step the model's held state is that step's new state. A rollout that
  raises part-way leaves the model at the last completed step: weights and state stay consistent.
* **Gradient flow.** With ``StateConfig.detach`` (the default) no gradient crosses a step boundary,
  through the state or through fed-back outputs, and memory is flat in sequence length. Without
  it, gradients flow through both across the steps of the rollout (BPTT through a call; wrap in
  ``torch.no_grad()`` for inference). Online learning always truncates at step boundaries: after an
  optimiser step the previous graph refers to parameter values that no longer exist.
* **Prequential order.** With targets and an optimiser, each step predicts with the current weights
  and state, records that prediction, then learns from the target using the same forward pass.
* **Teacher forcing vs free running.** ``feedback`` names the input columns (or a function) that
  receive the model's previous output; the first ``teacher_steps`` steps use the given inputs
  (teacher forcing), later steps run free on the model's own predictions.
* **Non-finite events** (NaN/inf in an input or target row): ``on_nonfinite="raise"`` stops before
  any step with an error naming step, stream, column and value; ``"skip"`` drops exactly those
  events — no prediction (NaN), no state change, no learning — and reports them in
  :attr:`Rollout.skipped` (C12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .errors import ConfigError, NonFiniteInputError, StateShapeError
from .model import State, StatefulNet

__all__ = ["Rollout", "rollout", "predict_sequence", "predict_sequence_online"]

Feedback = Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | Sequence[int]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NonFinitePolicy = Literal["raise", "skip"]


@dataclass
class Rollout:
    """What a rollout produced.

    Attributes:
        predictions: ``[T, S, O]`` (``[T, O]`` for a ``[T, F]`` input); NaN for skipped events.
            With learning, each is the prediction made *before* learning from its target.
        losses: ``[T]`` loss of each learning step (NaN where no step was taken), or ``None``
            when nothing was learned.
        skipped: ``[T, S]`` (``[T]``) boolean mask of events dropped as non-finite.
        state: the final state (also the model's held state).
    """

    predictions: torch.Tensor
    losses: torch.Tensor | None
    skipped: torch.Tensor
    state: State


def _as_sequence(name: str, v: torch.Tensor | np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    try:
        t = torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} cannot be read as a numeric tensor ({exc}); pass real numbers.") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)):
        raise ConfigError(f"{name} has dtype {t.dtype}; pass real numbers (float tensors or arrays).")
    return t.to(dtype=dtype, device=device)


def _first_bad(
    bad: torch.Tensor, bad_x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor | None
) -> NonFiniteInputError:
    """The error for the earliest non-finite event, naming step, stream, column and value."""
    t, s = (int(i) for i in bad.nonzero()[0])
    name, row = ("x (input)", xs[t, s]) if bool(bad_x[t, s]) else ("y (target)", ys[t, s])  # type: ignore[index]
    col = int((~torch.isfinite(row)).nonzero()[0, 0])
    return NonFiniteInputError(
        f"{name} at step {t}, stream {s}, column {col} is {float(row[col])!r}; nothing was learned or "
        "advanced. Clean the data, or pass on_nonfinite='skip' to drop such events "
        "(they are reported in Rollout.skipped)."
    )


def rollout(
    model: StatefulNet,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: LossFn | None = None,
    reset: bool = True,
    feedback: Feedback | None = None,
    teacher_steps: int = 1,
    on_nonfinite: NonFinitePolicy = "raise",
) -> Rollout:
    """Run ``model`` over a sequence, step by step, optionally learning online (see module doc).

    Args:
        model: the network.
        x: inputs ``[T, S, F]`` (``S`` independent streams) or ``[T, F]`` (one stream).
        y: targets ``[T, S, O]`` / ``[T, O]`` (``O = 1`` may drop its axis); needed with ``optimizer``.
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters; each step with a
            valid target takes one ``optimizer.step()``.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` on the valid rows; mean squared error by default.
        reset: start from ``init`` (True) or continue from the held state (False).
        feedback: input columns (a sequence of ``O`` indices) overwritten with the previous
            prediction, or ``f(x_t, y_prev) -> x_t``; ``None`` for none.
        teacher_steps: steps (>= 1) that use the given inputs before feedback starts.
        on_nonfinite: ``"raise"`` or ``"skip"`` for events with NaN/inf (see module doc).
    """
    if optimizer is not None and y is None:
        raise ConfigError("rollout: an optimizer was given without targets y; pass y to learn online.")
    if on_nonfinite not in ("raise", "skip"):
        raise ConfigError(f"rollout: on_nonfinite = {on_nonfinite!r} is not one of 'raise', 'skip'.")
    if isinstance(teacher_steps, bool) or not isinstance(teacher_steps, int) or teacher_steps < 1:
        raise ConfigError(f"rollout: teacher_steps = {teacher_steps!r} is out of range: need an integer >= 1.")
    p = next(model.parameters())
    xs = _as_sequence("x", x, p.dtype, p.device)
    single = xs.dim() == 2
    if single:
        xs = xs.unsqueeze(1)
    if xs.dim() != 3 or xs.shape[-1] != model.in_features:
        raise ConfigError(
            f"rollout: x has shape {tuple(torch.as_tensor(x).shape)}; need [T, streams, {model.in_features}] "
            f"or [T, {model.in_features}] for a model with in_features={model.in_features}."
        )
    T, S, _ = xs.shape
    O = model.out_features
    ys = None
    if y is not None:
        ys = _as_sequence("y", y, p.dtype, p.device)
        want = (T, S, O)
        if single and ys.dim() == 1 and O == 1:
            ys = ys.reshape(T, 1, 1)
        elif single and ys.dim() == 2:
            ys = ys.unsqueeze(1)
        elif not single and ys.dim() == 2 and O == 1:
            ys = ys.unsqueeze(-1)
        if tuple(ys.shape) != want:
            raise ConfigError(
                f"rollout: y has shape {tuple(torch.as_tensor(y).shape)}; for x of shape {tuple(torch.as_tensor(x).shape)} "
                f"and out_features={O} it must be {want if not single else (T, O)}."
            )
    columns: list[int] | None = None
    if feedback is not None and not callable(feedback):
        columns = [int(c) for c in feedback]
        if len(columns) != O or any(not -model.in_features <= c < model.in_features for c in columns):
            raise ConfigError(
                f"rollout: feedback columns {columns} must name {O} input column(s) in [0, {model.in_features})."
            )

    # Non-finite events: find them once, vectorised, before touching anything.
    bad_x = ~torch.isfinite(xs).all(-1)
    bad_y = ~torch.isfinite(ys).all(-1) if ys is not None else torch.zeros_like(bad_x)
    bad = bad_x | bad_y
    any_bad = bool(bad.any())
    if any_bad and on_nonfinite == "raise":
        raise _first_bad(bad, bad_x, xs, ys)

    if reset:
        model.reset_state(n_streams=S)
    elif model.n_streams != S:
        raise StateShapeError(
            f"rollout(reset=False): the held state is for {model.n_streams} stream(s) but x has {S}; "
            f"pass reset=True or call model.reset_state(n_streams={S})."
        )
    learning = optimizer is not None
    loss_fn = loss_fn or F.mse_loss
    detach_time = model.state_config.detach or learning
    state = model.held_state()
    preds: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    nan_loss = torch.tensor(float("nan"), dtype=p.dtype, device=p.device)
    prev: torch.Tensor | None = None

    for t in range(T):
        xt = xs[t]
        if feedback is not None and t >= teacher_steps and prev is not None:
            fed = prev.detach() if detach_time else prev
            if columns is not None:
                xt = xt.clone()
                xt[:, columns] = fed
            else:
                xt = feedback(xt, fed)
        if any_bad:
            ok = ~bad[t]
            xt = torch.where(ok.unsqueeze(-1), xt, torch.zeros_like(xt))
        pred, new_state = model(xt, state)
        if any_bad:
            okc = ok.unsqueeze(-1)
            new_state = tuple(torch.where(okc, n, s) for n, s in zip(new_state, state))
            pred = torch.where(okc, pred, torch.full_like(pred, float("nan")))
        if learning:
            assert ys is not None
            if any_bad:
                n_ok = int(ok.sum())
                loss = loss_fn(pred[ok], ys[t][ok]) if n_ok else None
            else:
                loss = loss_fn(pred, ys[t])
            if loss is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
            else:
                losses.append(nan_loss)
            pred = pred.detach()
        model.commit_state(new_state, force_detach=learning)
        state = model.held_state()
        preds.append(pred)
        prev = pred

    predictions = torch.stack(preds) if preds else xs.new_empty((0, S, O))
    skipped = bad
    if single:
        predictions = predictions.squeeze(1)
        skipped = skipped.squeeze(1)
    return Rollout(
        predictions=predictions,
        losses=torch.stack(losses) if learning and losses else (xs.new_empty(0) if learning else None),
        skipped=skipped,
        state=state,
    )


def predict_sequence(
    model: StatefulNet,
    x: torch.Tensor | np.ndarray,
    *,
    reset: bool = True,
    feedback: Feedback | None = None,
    teacher_steps: int = 1,
    on_nonfinite: NonFinitePolicy = "raise",
) -> torch.Tensor:
    """Predictions ``[T, S, O]`` (or ``[T, O]``) of ``model`` over ``x``, advancing and committing
    the held state step by step; no learning. A thin call into :func:`rollout`.

    >>> from psann_stream import StatefulNet
    >>> net = StatefulNet(1, hidden=(4,), seed=0)
    >>> whole = predict_sequence(net, torch.ones(6, 1))
    >>> first = predict_sequence(net, torch.ones(4, 1))
    >>> rest = predict_sequence(net, torch.ones(2, 1), reset=False)
    >>> torch.equal(whole, torch.cat([first, rest]))
    True
    """
    return rollout(
        model, x, reset=reset, feedback=feedback, teacher_steps=teacher_steps, on_nonfinite=on_nonfinite
    ).predictions


def predict_sequence_online(
    model: StatefulNet,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn | None = None,
    reset: bool = True,
    feedback: Feedback | None = None,
    teacher_steps: int = 1,
    on_nonfinite: NonFinitePolicy = "raise",
) -> torch.Tensor:
    """Prequential predictions over ``x``: each step predicts with the current weights and state,
    then learns from ``y`` at that step with ``optimizer``. A thin call into :func:`rollout`."""
    return rollout(
        model,
        x,
        y,
        optimizer=optimizer,
        loss_fn=loss_fn,
        reset=reset,
        feedback=feedback,
        teacher_steps=teacher_steps,
        on_nonfinite=on_nonfinite,
    ).predictions
