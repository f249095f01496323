"""Engine: the event loop from an Arrow source through a learner to output files, with checkpoints
that make a killed run resume without losing or repeating a row.

Per record batch: map the columns (:mod:`psann_stream.io`), find bad rows (non-finite or absurdly
large features or targets, missing keys), either stop (``on_bad_input="raise"``, naming batch, row,
column and value) or route them with their reason to the dead-letter output
(``"dead-letter"``), learn the good rows prequentially (or only predict them when the stream has no
target), and append ``(batch, row, key, prediction, target)`` rows to the output.

Exactly once: outputs are written as part files that are committed (atomically) only at a
checkpoint, and the checkpoint records how many parts were committed together with the learner's
state and the source position. On ``resume``, parts beyond that count (written after the last
checkpoint, before a crash) are deleted and the source restarts at the recorded position, so the
concatenated parts equal an uninterrupted run's output row for row.

Invariant (checked by tests): rows in = rows predicted + rows dead-lettered (+ label rows learned,
with delayed labels).

Delayed labels: with an :class:`~psann_stream.delayed.DelayedLabels` learner and an ``id`` column, a
row whose target is null is predicted and waits for its label; a row with a target and every feature
null is a label, learned (from what its event saw) when it arrives, matched by id (and key); a row
with both is predicted and learned at once. Refused labels (unknown id, after the horizon) and
predictions that expire go to the dead-letter output with the reason and the id; waiting
predictions are part of checkpoints.
"""

from __future__ import annotations

from collections import deque
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import torch
from numba import njit

from .checkpoint import load_latest, save_checkpoint
from .delayed import DeadLetter
from .errors import BadInputError, CheckpointError, ConfigError, NonFiniteInputError
from .io import BoundColumns, ColumnMap, Events, Position
from .sinks import OutputSink, PartsSink

__all__ = ["CheckpointPolicy", "Engine", "RunStats", "StreamLearner"]

BadInputPolicy = Literal["raise", "dead-letter"]
TimeOrder = Literal["strict", "non-decreasing", "off"]
_NO_TIME = np.iinfo(np.int64).min
HOOKS = ("on_batch", "on_prediction", "on_checkpoint", "on_alert", "on_commit", "on_drift", "on_reset")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Checkpoint into ``directory`` after every ``every_events`` rows, and also after ``every_seconds``
    of wall time if set (at the next batch boundary); keep the newest ``keep_last`` files."""

    directory: str | Path
    every_events: int = 100_000
    every_seconds: float | None = None
    keep_last: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.every_events, bool) or not isinstance(self.every_events, int) or self.every_events < 1:
            raise ConfigError(f"CheckpointPolicy.every_events = {self.every_events!r} must be an integer >= 1.")
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise ConfigError(f"CheckpointPolicy.every_seconds = {self.every_seconds!r} must be None or > 0.")


@dataclass
class RunStats:
    """Counters of a run (cumulative across resumes)."""

    rows_in: int = 0
    predicted: int = 0
    dead_lettered: int = 0
    checkpoints: int = 0
    drifts: int = 0  # drift detections (each reset that key at that event)
    labels_learned: int = 0  # delayed labels: label rows learned (rows that were only a label)
    expired: int = 0  # delayed labels: predictions whose labels did not come within the horizon
    pending_labels: int = 0  # delayed labels: predictions waiting for their labels now
    position: Any = field(default_factory=Position)  # the source's position type
    last_checkpoint_at: float | None = None  # wall-clock time (time.time()) of the last checkpoint of this process
    last_checkpoint_seconds: float = 0.0  # how long it took (drain, parts commit, state write)


@runtime_checkable
class StreamLearner(Protocol):
    """What the engine needs of a learner; :class:`~psann_stream.learner.Learner`,
    :class:`~psann_stream.keyed.KeyedLearner`, :class:`~psann_stream.ensemble.Ensemble` and the Ray
    ``ShardedLearner`` implement it.

    ``learn_batch(X, Y)`` / ``predict_batch(X)`` return the predictions ``[N]`` (a learner with an
    ``n_outputs`` of ``T > 1`` takes ``Y [N, T]`` and returns ``[N, T]``: several target columns); a learner with a
    true ``keyed`` attribute takes the keys first (``learn_batch(keys, X, Y)``; the engine passes
    :class:`~psann_stream.keys.EncodedKeys`). Optional: ``keyed`` (default False), ``last_drifted``
    (``[N]`` bool: the events of the last batch that fired a drift reset), ``drift`` (its policy),
    and ``submit_batch(keys, x, y) -> handle`` with ``handle.result()`` the predictions (an
    asynchronous learner)."""

    @property
    def in_features(self) -> int: ...

    @property
    def alerts(self) -> list[Any]: ...

    def learn_batch(self, *args: Any) -> np.ndarray: ...

    def predict_batch(self, *args: Any) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, sd: Mapping[str, Any]) -> None: ...


class Engine:
    """Runs ``source`` through ``learner`` (see module doc).

    Args:
        source: a source from :mod:`psann_stream.io` (``batches(start)``, ``schema``).
        learner: any :class:`StreamLearner` (a Learner, a KeyedLearner, an Ensemble, a Ray
            ShardedLearner, or a class of your own); one with ``submit_batch`` runs asynchronously.
        columns: the :class:`~psann_stream.io.ColumnMap` (a key column is required for a keyed learner).
        output: directory for prediction part files, an :class:`OutputSink` (e.g.
            :class:`psann_stream.adapters.kafka.KafkaSink`), or None.
        output_format: ``"arrow"`` (IPC files), ``"arrow-stream"`` (IPC streams, ``.arrows``: readable
            as they are piped or concatenated) or ``"parquet"``.
        dead_letter: directory for dead-lettered rows (needed with ``on_bad_input="dead-letter"``).
        checkpoint: a :class:`CheckpointPolicy`, or None.
        on_bad_input: ``"raise"`` or ``"dead-letter"``.
        max_abs_input: values with a larger magnitude are bad input (absurd magnitudes).
        hooks: callables by name: ``on_batch(position, events)``, ``on_prediction(position, predictions)``,
            ``on_checkpoint(step, path)``, ``on_alert(alert)`` (each new monitor alert of the learner),
            ``on_commit(table)`` (the output rows of a part, when committed: the callback sink; after a
            crash, rows committed after the last checkpoint are delivered again, with the same
            source-position columns (``batch``/``row`` for files), so a consumer dedupes by them),
            ``on_drift(key, position, row)`` (the learner's :class:`~psann_stream.drift.DriftPolicy` fired
            at event ``row`` of the batch at ``position``, and reset that key there), ``on_reset(keys,
            what)`` (once per batch with detections: the keys reset and what, e.g. ``("state",)``).
        time_order: with a time column, each key's event times must increase (``"strict"``: a repeat
            is a duplicate), not decrease (``"non-decreasing"``), or are not checked (``"off"``); rows
            that break it are bad input (raise, or dead-letter with the reason). The keys' last
            accepted times are part of checkpoints.
        max_in_flight: most batches submitted to an asynchronous learner and not yet finished
            (backpressure: the source is not read further until the oldest finishes). Checkpoints
            wait for all of them, so a checkpoint covers exactly the batches before it.
    """

    def __init__(
        self,
        source: Any,
        learner: StreamLearner,
        columns: ColumnMap,
        *,
        output: str | Path | OutputSink | None = None,
        output_format: str = "arrow",
        dead_letter: str | Path | None = None,
        checkpoint: CheckpointPolicy | None = None,
        on_bad_input: BadInputPolicy = "raise",
        max_abs_input: float = 1e12,
        hooks: Mapping[str, Callable[..., Any]] | None = None,
        max_in_flight: int = 4,
        time_order: TimeOrder = "strict",
    ) -> None:
        if on_bad_input not in ("raise", "dead-letter"):
            raise ConfigError(f"Engine.on_bad_input = {on_bad_input!r} is not one of 'raise', 'dead-letter'.")
        if time_order not in ("strict", "non-decreasing", "off"):
            raise ConfigError(f"Engine.time_order = {time_order!r} is not one of 'strict', 'non-decreasing', 'off'.")
        if on_bad_input == "dead-letter" and dead_letter is None:
            raise ConfigError("Engine: on_bad_input='dead-letter' needs a dead_letter directory.")
        self.delayed = hasattr(learner, "label") and hasattr(learner, "take_dead_letters")
        needed = (("in_features", "alerts", "predict", "label", "take_dead_letters", "state_dict", "load_state_dict")
                  if self.delayed else ("in_features", "alerts", "learn_batch", "predict_batch", "state_dict",
                                        "load_state_dict"))
        lacking = [m for m in needed if not hasattr(learner, m)]
        if lacking:
            raise ConfigError(f"Engine: the learner ({type(learner).__name__}) has no {', '.join(lacking)}; the engine "
                              "needs a StreamLearner (psann_stream.engine.StreamLearner lists what it calls).")
        if self.delayed and (columns.id is None or columns.target is None):
            raise ConfigError("Engine: delayed labels (a DelayedLabels learner) need an id column and a target column "
                              "(ColumnMap(id=..., target=...)): a label finds its prediction by id.")
        if columns.id is not None and not self.delayed:
            raise ConfigError(f"Engine: the id column {columns.id!r} is for labels that arrive later; wrap the learner in "
                              "psann_stream.delayed.DelayedLabels, or drop the id column.")
        keyed = bool(getattr(learner, "keyed", False))
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigError(f"Engine.max_in_flight = {max_in_flight!r} must be an integer >= 1.")
        if keyed and columns.key is None:
            raise ConfigError("Engine: a keyed learner needs a key column (ColumnMap(key=...)).")
        unknown = set(hooks or {}) - set(HOOKS)
        if unknown:
            raise ConfigError(f"Engine: unknown hook(s) {sorted(unknown)}; known: {', '.join(HOOKS)}.")
        self.source, self.learner, self.columns = source, learner, columns
        self.bound: BoundColumns = columns.bind(source.schema)
        width = learner.in_features
        if self.bound.n_features != width:
            raise ConfigError(f"Engine: the stream has {self.bound.n_features} feature(s) but the model takes {width}.")
        outputs = int(getattr(learner, "n_outputs", 1))
        if self.bound.n_targets and self.bound.n_targets != outputs:
            raise ConfigError(
                f"Engine: the stream has {self.bound.n_targets} target(s) ({', '.join(self.bound.target_names)}) but the "
                f"learner learns {outputs} per event; build its model with out_features={self.bound.n_targets} "
                "(StatefulNet(F, out_features=T)) or name as many target columns as it has outputs.")
        self.keyed = keyed
        if output is None or isinstance(output, (str, Path)):
            self.output: Any = PartsSink(output, output_format) if output is not None else None
        else:
            missing = [m for m in ("write", "commit", "truncate", "count", "exact") if not hasattr(output, m)]
            if missing:
                raise ConfigError(f"Engine.output must be a directory or an OutputSink; {type(output).__name__} has no "
                                  f"{', '.join(missing)}.")
            self.output = output
        self.dead = PartsSink(dead_letter) if dead_letter is not None else None
        self.policy = checkpoint
        self.on_bad_input = on_bad_input
        self.max_abs_input = float(max_abs_input)
        self.hooks = dict(hooks or {})
        self.stats = RunStats()
        self.max_in_flight = max_in_flight
        self._in_flight: deque[tuple[Any, np.ndarray, Events, Any]] = deque()
        self._alerts_seen = 0
        self.time_order = time_order
        self._last_time: dict[Any, int] = {}  # per key (None: the one stream): last accepted event time
        self._pending_times: dict[Any, int] = {}
        self._stop = False

    def stop(self) -> None:
        """Ask a running :meth:`run` to stop after the current batch (it checkpoints first)."""
        self._stop = True

    # ------------------------------------------------------------------ bad input
    def _bad_rows(self, ev: Events) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
        """Mask of bad rows, the reason of each (array operations; a loop only over bad rows), and the
        mask of rows that are bad because of a NaN or inf."""
        reasons: dict[int, str] = {}
        x = ev.x
        nonfinite = ~np.isfinite(x)
        huge = np.abs(x) > self.max_abs_input  # inf counts as non-finite below, not as huge
        bad = nonfinite.any(axis=1) | huge.any(axis=1)
        null = ev.missing_x  # None unless the batch has a null cell (the reader reads it as NaN)
        if self.delayed and null is not None:  # a label row: every feature null, a target
            label_only = null.all(axis=1) & (ev.missing_y is None or ~ev.missing_y)
            bad &= ~label_only
        for r in np.flatnonzero(bad):
            c = int(np.argmax(nonfinite[r] | huge[r]))
            if null is not None and null[r, c]:  # say what the data holds, not the NaN it reads as
                reasons[r] = f"feature {c} is null"
                continue
            kind = "non-finite" if nonfinite[r, c] else f"|value| > {self.max_abs_input:g}"
            reasons[r] = f"feature {c} is {float(x[r, c])!r} ({kind})"
        nonfinite_rows = nonfinite.any(axis=1)
        if null is not None:
            nonfinite_rows &= ~null.any(axis=1)  # a null is bad input, not a non-finite value
        if ev.y is not None:
            ynull = ev.missing_y
            y2 = ev.y if ev.y.ndim == 2 else ev.y[:, None]  # several targets: a row is bad if any of them is
            yfinite = np.isfinite(y2)
            ycells = ~yfinite | (np.abs(y2) > self.max_abs_input)
            ynonfinite = ~yfinite.all(axis=1)
            ybad = ycells.any(axis=1)
            if self.delayed and ynull is not None:  # no target yet: the row is predicted and waits
                ybad &= ~ynull
                ynonfinite &= ~ynull
            for r in np.flatnonzero(ybad & ~bad):
                reasons[r] = self._target_reason(y2[r], ycells[r], ynull is not None and ynull[r])
            nonfinite_rows |= ynonfinite & ~bad if ynull is None else ynonfinite & ~ynull & ~bad
            bad |= ybad
        if ev.missing_key is not None:
            for r in np.flatnonzero(ev.missing_key & ~bad):
                reasons[r] = "key is null"
            bad |= ev.missing_key
        if ev.missing_id is not None:
            for r in np.flatnonzero(ev.missing_id & ~bad):
                reasons[r] = "id is null"
            bad |= ev.missing_id
        if ev.times is not None and self.time_order != "off":
            # a label row's time is when the label came, not an event of its key: not checked
            skip = bad if not self.delayed or null is None else bad | null.all(axis=1)
            bad |= self._check_time_order(ev, skip, reasons)
        return bad, reasons, nonfinite_rows

    def _target_reason(self, y: np.ndarray, bad: np.ndarray, null: bool) -> str:
        """Why a row's target is bad: ``target is ...`` with one target, else naming the first bad column."""
        names = self.bound.target_names
        c = int(np.argmax(bad))
        what = "null" if null and not np.isfinite(y[c]) else repr(float(y[c]))
        if y.shape[0] == 1:
            return f"target is {what}"
        return f"target {names[c] if len(names) > 1 else c} is {what}"

    def _check_time_order(self, ev: Events, bad: np.ndarray, reasons: dict[int, str]) -> np.ndarray:
        """Rows whose event time is null, repeats (``time_order="strict"``) or goes back from their
        key's last accepted time. The keys' new last times wait in ``self._pending_times`` until the
        batch is accepted (a batch that raises changes nothing)."""
        flagged = np.zeros(len(ev), dtype=bool)
        if ev.missing_time is not None:
            for r in np.flatnonzero(ev.missing_time & ~bad):
                reasons[r] = "time is null"
            flagged |= ev.missing_time & ~bad
        skip = bad | flagged
        if ev.times.dtype.kind == "M":
            t = ev.times.view(np.int64)
        else:  # integers; with nulls Arrow gives floats with NaN there (those rows are skipped)
            t = np.where(skip, 0, ev.times).astype(np.int64)
        good = np.flatnonzero(~skip)
        codes = np.zeros(len(ev), dtype=np.int64)
        if ev.keys is None:
            uniq: list[Any] = [None]
        else:  # the keys of accepted rows, as codes: one Python value per distinct key
            uniq, index = ev.keys.present(good)
            codes[good] = index
        last = np.array([self._last_time.get(k, _NO_TIME) for k in uniq], dtype=np.int64)
        verdict, previous = _time_order(codes, t, skip, last, self.time_order == "strict")
        for r in np.flatnonzero(verdict):
            key = "" if ev.keys is None else f" of key {uniq[codes[r]]!r}"
            what = "repeats" if verdict[r] == 1 else "is before"
            reasons[r] = f"time {ev.times[r]!r}{key} {what} its last accepted time {int(previous[r])} (column {self.columns.time!r})"
        self._pending_times = dict(zip(uniq, last.tolist()))
        return flagged | (verdict > 0)

    # ------------------------------------------------------------------ the loop
    def _resume(self) -> Any:
        if self.policy is None:
            raise ConfigError("Engine.run(resume=True) needs a checkpoint policy.")
        found = load_latest(self.policy.directory)
        if found is None:
            for sink in (self.output, self.dead):
                if sink is not None:
                    sink.truncate(0)
            self.stats = RunStats()
            self._last_time = {}
            return self.source.initial_position()
        step, payload = found
        missing = {"learner", "position", "parts", "dead_parts", "counters"} - set(payload)
        if missing:
            raise CheckpointError(
                f"the newest checkpoint in {self.policy.directory} (step {step}) is not an engine checkpoint "
                f"(no {', '.join(sorted(missing))}); point --checkpoint-dir at the engine's own directory."
            )
        for sink, n, name in ((self.output, payload["parts"], "output"), (self.dead, payload["dead_parts"], "dead-letter")):
            if sink is not None and sink.exact and sink.count < int(n):
                raise CheckpointError(
                    f"the checkpoint (step {step}) covers {int(n)} committed {name} part(s) but {sink.dir} holds "
                    f"{sink.count}: rows already learned would be missing from the output. Restore the {name} "
                    "directory, or start a new run without resume into an empty one."
                )
        start = self.source.position_from_state(payload["position"])
        try:
            self.learner.load_state_dict(payload["learner"])
        except CheckpointError as exc:
            raise CheckpointError(f"the newest checkpoint in {self.policy.directory} (step {step}): {exc}") from None
        lt = payload.get("last_time", {"keys": [], "times": torch.zeros(0, dtype=torch.int64)})
        self._last_time = dict(zip(lt["keys"], lt["times"].tolist()))
        for sink, n in ((self.output, payload["parts"]), (self.dead, payload["dead_parts"])):
            if sink is not None:
                sink.truncate(int(n))
        c = payload["counters"]
        self.stats = RunStats(int(c["rows_in"]), int(c["predicted"]), int(c["dead_lettered"]), int(c["checkpoints"]),
                              int(c.get("drifts", 0)), int(c.get("labels_learned", 0)), int(c.get("expired", 0)),
                              int(getattr(self.learner, "n_pending", 0)), start)
        return start

    def _checkpoint(self, position: Any) -> None:
        started = time.perf_counter()
        self._drain(0)
        parts = dead = 0
        if self.output is not None:
            committed = self.output.commit()
            parts = self.output.count
            if committed is not None and "on_commit" in self.hooks:
                self.hooks["on_commit"](committed)
        if self.dead is not None:
            self.dead.commit()
            dead = self.dead.count
        if self.policy is None:
            return
        self.stats.checkpoints += 1
        s = self.stats
        path = save_checkpoint(
            self.policy.directory,
            {
                "learner": self.learner.state_dict(),
                "position": position.to_state(),
                "parts": parts,
                "dead_parts": dead,
                "last_time": {"keys": list(self._last_time), "times": torch.tensor(list(self._last_time.values()), dtype=torch.int64)},
                "counters": {"rows_in": s.rows_in, "predicted": s.predicted, "dead_lettered": s.dead_lettered,
                             "checkpoints": s.checkpoints, "drifts": s.drifts, "labels_learned": s.labels_learned,
                             "expired": s.expired},
            },
            step=s.rows_in,
            keep_last=self.policy.keep_last,
        )
        self.source.commit(position)
        s.last_checkpoint_at, s.last_checkpoint_seconds = time.time(), time.perf_counter() - started
        if "on_checkpoint" in self.hooks:
            self.hooks["on_checkpoint"](s.rows_in, path)

    def run(self, max_events: int | None = None, *, resume: bool = False) -> RunStats:
        """Process the source (from the last checkpoint with ``resume=True``) until it ends, ``max_events``
        rows were read in this call, or :meth:`stop` is called; checkpoints at the end."""
        start = self._resume() if resume else self.source.initial_position()
        if not resume:
            self._last_time = {}
            for sink in (self.output, self.dead):
                if sink is not None:
                    sink.truncate(0)
        self._pending_times = {}
        self._stop = False
        self._in_flight.clear()
        done = 0
        since = 0
        last = time.monotonic()
        self._alerts_seen = len(self.learner.alerts)
        checkpoints_before = self.stats.checkpoints
        position = start
        for pos, batch in self.source.batches(start):
            full = batch.num_rows
            if max_events is not None and done + full > max_events:
                batch = batch.slice(0, max_events - done)
            ev = self.bound.read(batch)
            n = len(ev)
            if "on_batch" in self.hooks:
                self.hooks["on_batch"](pos, ev)
            bad, reasons, nonfinite = self._bad_rows(ev)
            if bad.any() and self.on_bad_input == "raise":
                r = int(np.argmax(bad))
                error = NonFiniteInputError if nonfinite[r] else BadInputError
                self._drain(0)  # earlier batches' outputs stay in order; this batch is not learned
                raise error(  # the reason names the column and the value
                    f"bad input at {pos.where(r)}: {reasons[r]}. Nothing from this batch was "
                    "learned. Clean the input, or run with on_bad_input='dead-letter'."
                )
            if self._pending_times:  # the batch is accepted: its keys' last event times advance
                self._last_time.update(self._pending_times)
                self._pending_times = {}
            good = ~bad
            kept = ev if not bad.any() else _select(ev, good)  # selected once, for learning and output
            rows = np.flatnonzero(good)
            if self.delayed:
                handle, rows, kept = self._submit_delayed(pos, rows, kept)
            else:
                handle = self._submit(kept)
                self.stats.predicted += len(rows)
            self._in_flight.append((pos, rows, kept, handle))
            self.stats.rows_in += n
            self.stats.dead_lettered += int(bad.sum())
            if self.dead is not None and bad.any():
                idx = np.flatnonzero(bad)
                cols = {**pos.output_columns(idx)}
                if self.delayed:
                    cols["id"] = pa.array([None if ev.ids is None or ev.ids[i] is None else str(ev.ids[i]) for i in idx],
                                          pa.string())
                self.dead.write(pa.record_batch({**cols, "reason": pa.array([reasons[i] for i in idx], pa.string())}))
            self._drain(self.max_in_flight)
            done += n
            since += n
            position = pos.after(n, full)  # the next unread row
            self.stats.position = position
            if self.policy is not None and (
                since >= self.policy.every_events
                or (self.policy.every_seconds is not None and time.monotonic() - last >= self.policy.every_seconds)
            ):
                self._checkpoint(position)
                since, last = 0, time.monotonic()
            if self._stop or (max_events is not None and done >= max_events):
                break
        if since or self.stats.checkpoints == checkpoints_before:  # skip a duplicate of the last periodic one
            self._checkpoint(position)
        self._drain(0)
        return self.stats

    def _submit_delayed(self, pos: Any, rows: np.ndarray, ev: Events) -> tuple["_Ready", np.ndarray, Events]:
        """Delayed labels: predict the batch's prediction rows and learn its label rows, in row order
        (a row with both: predicted, then learned), through the :class:`DelayedLabels` learner. Its
        dead letters (refused labels, expired predictions) and predictions whose id is already
        waiting go to the dead-letter output, with the source position of the row each is about.
        Returns the predictions of the predicted rows, those rows, and their events for the output
        (without the target, which has not arrived)."""
        dl = self.learner
        label_only = np.isnan(ev.x).all(axis=1)  # good rows with NaN features are label rows (see _bad_rows)
        labelled = ~np.isnan(ev.y)
        X = np.ascontiguousarray(ev.x, dtype=np.float64)
        keys = ev.keys.tolist() if self.keyed else None
        ids = ev.ids.tolist() if keys is None else list(zip(keys, ev.ids.tolist()))  # by key and id
        where = pos.output_columns(rows)
        names = list(where)
        info = list(zip(*(where[c].to_pylist() for c in names)))  # each row's source position
        # the calls in row order: 2r predicts row r, 2r + 1 learns its label
        calls = np.sort(np.concatenate([np.flatnonzero(~label_only) * 2, np.flatnonzero(labelled) * 2 + 1]))
        preds = np.full(len(ev), np.nan)
        predicted = np.zeros(len(ev), dtype=bool)
        letters = []
        duplicate = np.zeros(len(ev), dtype=bool)
        for run in np.split(calls, np.flatnonzero(np.diff(calls % 2)) + 1):
            r = run // 2
            if run[0] % 2:
                r = r[~duplicate[r]]  # a duplicate's own label is not another event's
                if len(r):
                    dl.label([ids[i] for i in r], ev.y[r], info=[info[i] for i in r])
            else:
                waiting, seen = dl.waiting([ids[i] for i in r]), set()
                for k, i in enumerate(r):  # an id already waiting, or twice in this run: not predicted
                    if waiting[k] or ids[i] in seen:
                        duplicate[i] = True
                        letters.append(DeadLetter(ids[i], "duplicate", "its id is already waiting for a label (a "
                                                  "repeated event, or ids that are not unique)", info[i]))
                    seen.add(ids[i])
                r = r[~duplicate[r]]
                if len(r):
                    preds[r] = dl.predict([ids[i] for i in r], X[r], keys=None if keys is None else [keys[i] for i in r],
                                          info=[info[i] for i in r])
                    predicted[r] = True
            letters += dl.take_dead_letters()
        s = self.stats
        kinds = [d.kind for d in letters]
        refused = len(letters) - kinds.count("expired") - kinds.count("duplicate")  # label rows not learned
        s.predicted += int(predicted.sum())
        s.dead_lettered += refused + kinds.count("duplicate")  # rows of this batch
        s.labels_learned += int((labelled & label_only & ~duplicate).sum()) - refused
        s.expired += kinds.count("expired")
        s.pending_labels = dl.n_pending
        if self.dead is not None and letters:
            self.dead.write(pa.record_batch({
                **{c: pa.array([d.info[k] for d in letters], where[c].type) for k, c in enumerate(names)},
                "id": pa.array([str(d.id[1] if keys is not None else d.id) for d in letters], pa.string()),
                "reason": pa.array([f"{d.kind}: {d.reason}" for d in letters], pa.string()),
            }))
        out = _select(ev, predicted)
        return _Ready(preds[predicted]), rows[predicted], Events(x=out.x, y=None, keys=out.keys, times=out.times)

    def _submit(self, ev: Events) -> Any:
        """Hand a batch of good events to the learner; returns a handle whose ``result()`` is the
        predictions. A learner with ``submit_batch`` (a sharded one) computes them asynchronously."""
        lrn = self.learner
        if hasattr(lrn, "submit_batch"):
            return lrn.submit_batch(ev.keys, ev.x, ev.y)
        X = np.ascontiguousarray(ev.x, dtype=np.float64)  # the one copy: float32 Arrow view -> float64
        if self.keyed:
            preds = lrn.predict_batch(ev.keys, X) if ev.y is None else lrn.learn_batch(ev.keys, X, ev.y)
        else:
            preds = lrn.predict_batch(X) if ev.y is None else lrn.learn_batch(X, ev.y)
        return _Ready(preds, getattr(lrn, "last_drifted", None))

    def _drain(self, keep: int) -> None:
        """Finish in-flight batches, oldest first, until at most ``keep`` are left: predictions hook,
        output rows, new alerts."""
        while len(self._in_flight) > keep:
            pos, rows, kept, handle = self._in_flight.popleft()
            preds = handle.result()
            if "on_prediction" in self.hooks:
                self.hooks["on_prediction"](pos, preds)
            if self.output is not None and len(kept):
                self.output.write(self._output_batch(pos, rows, kept, preds))
            drifted = handle.drifted
            if drifted is not None and drifted.any():
                self._report_drift(pos, rows, kept, np.flatnonzero(drifted))
            alerts = self.learner.alerts
            if "on_alert" in self.hooks:
                for alert in alerts[self._alerts_seen:]:
                    self.hooks["on_alert"](alert)
            self._alerts_seen = len(alerts)

    def _report_drift(self, pos: Any, rows: np.ndarray, ev: Events, idx: np.ndarray) -> None:
        """Hooks for drift detections at events ``idx`` of the batch (the learner already reset them)."""
        self.stats.drifts += len(idx)
        keys = [None] * len(idx) if ev.keys is None else ev.keys[idx].tolist()  # plain Python keys for the hooks
        if "on_drift" in self.hooks:
            for key, i in zip(keys, idx):
                self.hooks["on_drift"](key, pos, int(rows[i]))
        if "on_reset" in self.hooks:
            drift = getattr(self.learner, "drift", None)
            self.hooks["on_reset"](list(dict.fromkeys(keys)), drift.resets if drift is not None else ())

    def _output_batch(self, pos: Any, rows: np.ndarray, ev: Events, preds: np.ndarray) -> pa.RecordBatch:
        cols: dict[str, Any] = pos.output_columns(rows)
        if ev.keys is not None:
            cols["key"] = ev.keys.to_arrow()  # the input column's type, taken from the batch's distinct keys
        if ev.times is not None:
            cols["time"] = pa.array(ev.times)
        cols["prediction"] = _float_column(preds)
        if ev.y is not None:
            cols["target"] = _float_column(ev.y)
            cols["error"] = _float_column(preds - ev.y)
        return pa.record_batch(cols)


class _Ready:
    """Predictions computed in place (the handle of a local learner), and which events triggered a
    drift reset (None without a drift policy)."""

    __slots__ = ("preds", "drifted")

    def __init__(self, preds: np.ndarray, drifted: np.ndarray | None = None) -> None:
        self.preds, self.drifted = preds, drifted

    def result(self) -> np.ndarray:
        return self.preds


def _float_column(v: np.ndarray) -> pa.Array:
    """``[N]`` values as a float64 column; ``[N, T]`` (several targets) as ``fixed_size_list<float64>[T]``."""
    if v.ndim == 1:
        return pa.array(v, pa.float64())
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(v, dtype=np.float64).reshape(-1)), v.shape[1])


def _select(ev: Events, keep: np.ndarray) -> Events:
    """The events of ``ev`` where ``keep`` is True."""
    pick = lambda a: None if a is None else a[keep]  # noqa: E731
    return Events(x=ev.x[keep], y=pick(ev.y), keys=pick(ev.keys), times=pick(ev.times), ids=pick(ev.ids))


@njit(cache=True)
def _time_order(codes, t, skip, last, strict):
    """Events ``n`` (not ``skip``) in order: the time ``t[n]`` of stream ``codes[n]`` must be after
    (``strict``) or not before the stream's last accepted time ``last[codes[n]]``, which accepted
    events advance. Returns ``(verdict, previous)``: verdict 0 accepted, 1 duplicate time, 2 out of
    order, and the last accepted time each rejected event was compared with."""
    verdict = np.zeros(t.shape[0], dtype=np.int8)
    previous = np.zeros(t.shape[0], dtype=np.int64)
    for n in range(t.shape[0]):
        if skip[n]:
            continue
        c = codes[n]
        if t[n] < last[c]:
            verdict[n], previous[n] = 2, last[c]
        elif t[n] == last[c] and strict:
            verdict[n], previous[n] = 1, last[c]
        else:
            last[c] = t[n]
    return verdict, previous
