"""The learning core: the compiled loop's rows, named in one place, and the one call into the loop.

Every compiled learner is a table of rows over one :class:`Core`. A row holds one stream's arrays
(its state, its eligibility traces, its drift detector) and, when rows learn their own weights,
everything else that learning changes (weights, optimiser state, normalisers, monitor statistics,
readout matrix). Arrays that are not per row are shared by every row. :class:`KeyedLearner
<psann_stream.keyed.KeyedLearner>` is a key table over a core; :class:`Learner
<psann_stream.learner.Learner>` is its one-row case.

The arrays (``ROW_ARRAYS``; shapes for one row, ``P`` parameters, ``U`` state units, ``F`` inputs,
``T`` outputs):

============  =========================  =====================================================
name          shape                      what
============  =========================  =====================================================
theta         [P]                        weights, in ``model.parameters()`` order
state         [U]                        every layer's state, concatenated
traces        [P or 2P] (0 if truncated) eligibility traces, laid out like ``theta``
buf1, buf2    [P]                        optimiser buffers (ObGD trace; Adam m, v)
scal          [2]                        optimiser scalars (intentional: err_sq, err_w; Adam: t)
xm, xm2, xws  [F], [F], [2]              input normaliser: mean, m2, (weight, count)
ym, ym2, yws  [T], [T], [2]              target normaliser
mon           [monitor_size]             monitor statistics (``monitor.py`` owns the layout)
ph            [6]                        Page-Hinkley detector (``drift.py`` owns the layout)
rls           [(h+1)^2 + 2] (0: gradient) readout matrix ``P`` (shared by the outputs), error statistics
============  =========================  =====================================================

:class:`CoreSpec` holds what stays fixed while a learner runs (layout, optimiser, normaliser and
readout settings, drift policy); :meth:`Core.run` and :meth:`Core.run_keyed` are the only places
that build the loop's arguments. Targets and predictions are ``[N]`` with one output and ``[N, T]``
with several; the loop sees them as ``[N, T]`` views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from . import _fastpath as fp
from ._packing import OPT_KINDS, Layout, empty_optimizer_state, flat_params, layout, optimizer_hyper
from .drift import DriftPolicy, fresh_detector
from .model import StatefulNet
from .monitor import monitor_size
from .readout import initial_readout_matrix

__all__ = ["Core", "CoreSpec", "ROW_ARRAYS", "STREAM_ARRAYS", "WEIGHT_ARRAYS"]

ROW_ARRAYS = ("theta", "state", "traces", "buf1", "buf2", "scal", "xm", "xm2", "xws", "ym", "ym2", "yws", "mon", "ph", "rls")
STREAM_ARRAYS = ("state", "traces", "ph")  # always one per row: what a stream carries
WEIGHT_ARRAYS = tuple(k for k in ROW_ARRAYS if k not in STREAM_ARRAYS)  # per row when rows learn their own weights

_NO_DRIFT = np.zeros(5)
# the loop's "no snapshots": a writable array of its own (a slice of a read-only input, e.g. a
# zero-copy Arrow view, would make numba type it read-only, and the capture would not compile)
_NO_SNAPSHOTS = np.empty((0, 0))


@dataclass(frozen=True)
class CoreSpec:
    """What the compiled loop reads besides the rows, fixed for the life of a learner.

    ``hyper`` is the optimiser's hyper-parameter vector (``_packing.optimizer_hyper``); ``clip`` the
    normalisers' outlier limit (``None``: none); ``rcfg`` the readout's ``[forgetting, cap, error
    clip, warm-up]`` (``readout.readout_config``)."""

    layout: Layout
    optimizer: str
    hyper: np.ndarray
    normalize_x: bool
    normalize_y: bool
    forget: float
    eps: float
    clip: float | None
    traced: bool
    rls: bool
    rcfg: np.ndarray
    drift: DriftPolicy | None
    init: float

    @classmethod
    def build(cls, model: StatefulNet, *, optimizer: str, settings: Mapping[str, object], normalize_x: bool,
              normalize_y: bool, forget: float, eps: float, clip: float | None, traced: bool, readout: str,
              rcfg: np.ndarray, drift: DriftPolicy | None) -> "CoreSpec":
        return cls(layout(model), optimizer, optimizer_hyper(optimizer, settings), bool(normalize_x),
                   bool(normalize_y), float(forget), float(eps), clip, bool(traced), readout == "rls", rcfg, drift,
                   float(model.state_config.init))

    def fresh_row(self, model: StatefulNet, rls_prior: float) -> dict[str, np.ndarray]:
        """One row as a new stream starts it: ``model``'s weights, the state at ``init``, everything
        else neutral."""
        L = self.layout
        F = int(model.in_features)
        return {
            "theta": flat_params(model),
            "state": np.full(L.n_units, self.init),
            "traces": np.zeros(L.n_traces if self.traced else 0),
            **empty_optimizer_state(L.n_params),
            "xm": np.zeros(F), "xm2": np.zeros(F), "xws": np.zeros(2),
            "ym": np.zeros(L.n_outputs), "ym2": np.zeros(L.n_outputs), "yws": np.zeros(2),
            "mon": np.zeros(monitor_size(L.widths)),
            "ph": fresh_detector(),
            "rls": initial_readout_matrix("rls" if self.rls else "gradient", model.hidden[-1], rls_prior),
        }


class Core:
    """Named row arrays (``rows[name]``: ``[capacity, *shape]``) and shared arrays (``shared[name]``),
    and the one call into the compiled loop.

    Args:
        spec: the fixed settings.
        template: one row's initial arrays (:meth:`CoreSpec.fresh_row`).
        per_row: the names held per row (always ``STREAM_ARRAYS``; ``WEIGHT_ARRAYS`` too when every
            row learns its own weights); the others are shared.
        capacity: rows allocated up front (they grow by doubling in :meth:`reserve`).
    """

    def __init__(self, spec: CoreSpec, template: Mapping[str, np.ndarray], per_row: Iterable[str],
                 capacity: int = 0) -> None:
        per_row = set(per_row) | set(STREAM_ARRAYS)
        unknown = per_row - set(ROW_ARRAYS)
        if unknown or set(template) != set(ROW_ARRAYS):
            raise ValueError(f"Core: unknown row arrays {sorted(unknown or set(template) ^ set(ROW_ARRAYS))}")
        self.spec = spec
        self.template = {k: np.array(v, dtype=np.float64) for k, v in template.items()}
        self.rows = {k: np.empty((capacity, *v.shape)) for k, v in self.template.items() if k in per_row}
        self.shared = {k: v.copy() for k, v in self.template.items() if k not in per_row}
        self.per_row_weights = "theta" in per_row

    def array(self, name: str) -> np.ndarray:
        """The array ``name``: ``[capacity, *shape]`` if per row, else its one shared copy."""
        return self.rows[name] if name in self.rows else self.shared[name]

    @property
    def capacity(self) -> int:
        return self.rows["state"].shape[0]

    def reserve(self, n_rows: int, in_use: int) -> None:
        """Room for ``n_rows`` rows, keeping the first ``in_use`` (capacity doubles)."""
        if self.capacity >= n_rows:
            return
        cap = max(n_rows, 2 * self.capacity, 16)
        for k, arr in self.rows.items():
            grown = np.empty((cap, *arr.shape[1:]))
            grown[:in_use] = arr[:in_use]
            self.rows[k] = grown

    def set_row(self, r: int, values: Mapping[str, np.ndarray] | None = None) -> None:
        """Row ``r`` from ``values`` (a fresh row where ``None``)."""
        src = self.template if values is None else values
        for k, arr in self.rows.items():
            arr[r] = src[k]

    def load(self, rows: Mapping[str, np.ndarray], shared: Mapping[str, np.ndarray]) -> None:
        """Replace every array (a restored checkpoint), after checking names and per-row shapes."""
        if set(rows) != set(self.rows) or set(shared) != set(self.shared):
            raise KeyError(f"array names differ: rows {sorted(rows)}, shared {sorted(shared)}")
        for k, v in rows.items():
            if v.shape[1:] != self.template[k].shape:
                raise ValueError(f"rows[{k!r}] has shape {v.shape}; one row is {self.template[k].shape}")
        for k, v in shared.items():
            if v.shape != self.template[k].shape:
                raise ValueError(f"shared[{k!r}] has shape {v.shape}; expected {self.template[k].shape}")
        self.rows = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in rows.items()}
        self.shared = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in shared.items()}

    def keep_rows(self, keep: np.ndarray) -> None:
        """Compact: rows ``keep`` (ascending) move to the front, in order."""
        for arr in self.rows.values():
            arr[: len(keep)] = arr[keep]

    def row(self, r: int) -> dict[str, np.ndarray]:
        """Copies of row ``r``'s arrays."""
        return {k: arr[r].copy() for k, arr in self.rows.items()}

    # ------------------------------------------------------------------ the calls into the loop
    def _tail(self, mon_on: bool, drifted: np.ndarray, *, normalize_x: bool = True, drift: bool = True,
              row: int | None = None) -> tuple:
        """The arguments after the row and event arrays, built here for both loops
        (``normalize_x=False``: inputs arrive normalised; ``drift=False``: no drift test; ``row``: the
        weight arrays of that row, as one learner's, for :func:`run_events` on rows with their own
        weights). The drift detectors stay whole: they are indexed per state row."""
        s = self.spec

        def g(name: str) -> np.ndarray:
            if row is not None and name in self.rows and name != "ph":
                return self.rows[name][row]
            return self.array(name)

        d = s.drift if drift else None
        return (OPT_KINDS[s.optimizer], s.hyper, g("buf1"), g("buf2"), g("scal"),
                g("xm"), g("xm2"), g("xws"), s.forget, s.eps, s.normalize_x and normalize_x,
                g("ym"), g("ym2"), g("yws"), s.forget, s.eps, s.normalize_y, s.clip or 0.0,
                g("mon"), mon_on), (
                g("ph"), _NO_DRIFT if d is None else d.kernel_config, d is not None, s.init,
                d is not None and d.reset_state, d is not None and d.reset_optimizer, drifted,
                s.rls, g("rls"), s.rcfg)

    def _events(self, states: np.ndarray, traces: np.ndarray, rows: np.ndarray, X: np.ndarray, Y: np.ndarray, *,
                learn: bool, skip: np.ndarray, out: np.ndarray, drifted: np.ndarray, mon_on: bool,
                snapshots: np.ndarray | None = None, weights_row: int | None = None, normalize_x: bool = True,
                drift: bool = True) -> tuple[int, int]:
        """The one call into ``_fastpath.run_events``: events ``n`` on ``states[rows[n]]`` (and
        ``traces``) with the shared weights, or those of ``weights_row`` (see :meth:`_tail`)."""
        L = self.spec.layout
        head, tail = self._tail(mon_on, drifted, normalize_x=normalize_x, drift=drift, row=weights_row)
        theta = self.shared["theta"] if weights_row is None else self.rows["theta"][weights_row]
        N, T = X.shape[0], L.n_outputs
        return fp.run_events(theta, L.lay, L.head, L.fixed_gain, L.cfg, L.mode, L.bound, states, traces,
                             self.spec.traced, rows, X, Y.reshape(N, T), learn, skip, *head, out.reshape(N, T), *tail,
                             _NO_SNAPSHOTS if snapshots is None else snapshots)

    @staticmethod
    def _by_weight_row(rows: np.ndarray, call) -> tuple[int, int]:
        """``call(idx, r)`` for the events ``idx`` of each row ``r`` with its own weights, rows one after
        the other; stops at the first failure, as ``(event, status)``."""
        for r in np.unique(rows):
            idx = np.flatnonzero(rows == r)
            done, status = call(idx, int(r))
            if status:
                return int(idx[done]), status
        return len(rows), 0

    def run(self, rows: np.ndarray, X: np.ndarray, Y: np.ndarray, *, learn: bool, skip: np.ndarray,
            out: np.ndarray, drifted: np.ndarray, monitor: bool, snapshots: np.ndarray | None = None) -> tuple[int, int]:
        """Events ``n`` in order, each on the state of row ``rows[n]``, with shared weights (``out[n]``
        its prediction, ``drifted[n]`` whether it fired the drift test). Returns ``(events done,
        status)``; status 1 (non-finite prediction) or 2 (non-finite update) stops at that event with
        nothing of it applied. ``snapshots`` (``[N, snapshot_width]``): each event done writes there
        what :meth:`learn_snapshots` needs to learn it later."""
        return self._events(self.rows["state"], self.rows["traces"], rows, X, Y, learn=learn, skip=skip, out=out,
                            drifted=drifted, mon_on=monitor and learn, snapshots=snapshots)

    def predict_snapshots(self, rows: np.ndarray, X: np.ndarray, *, out: np.ndarray,
                          snapshots: np.ndarray) -> tuple[int, int]:
        """Predict events ``n`` on the states of rows ``rows[n]``, advancing them, and write each
        event's snapshot (:meth:`run` with ``snapshots``, not learning). Rows with their own weights
        are predicted one row at a time with that row's weights (each row's events in order).
        Returns ``(events done, status)`` as :meth:`run`."""
        N = X.shape[0]
        if not self.per_row_weights:
            return self.run(rows, X, np.zeros(out.shape), learn=False, skip=np.zeros(N, dtype=np.bool_), out=out,
                            drifted=np.zeros(N, dtype=np.bool_), monitor=False, snapshots=snapshots)

        def one_row(idx: np.ndarray, r: int) -> tuple[int, int]:
            n = len(idx)
            part, snaps = np.empty((n, *out.shape[1:])), np.empty((n, snapshots.shape[1]))
            done = self._events(self.rows["state"], self.rows["traces"], rows[idx], np.ascontiguousarray(X[idx]),
                                np.zeros(part.shape), learn=False, skip=np.zeros(n, dtype=np.bool_), out=part,
                                drifted=np.zeros(n, dtype=np.bool_), mon_on=False, snapshots=snaps, weights_row=r)
            out[idx], snapshots[idx] = part, snaps
            return done

        return self._by_weight_row(rows, one_row)

    @property
    def snapshot_width(self) -> int:
        """Values in one event's snapshot: the state before it (every layer's units), its
        normalised input, and its row's eligibility traces before it (none unless traced)."""
        return self.spec.layout.n_units + self.template["xm"].shape[0] + self.template["traces"].shape[0]

    def learn_snapshots(self, snapshots: np.ndarray, Y: np.ndarray, *, out: np.ndarray, monitor: bool,
                        rows: np.ndarray | None = None) -> tuple[int, int]:
        """Learn events from their snapshots (:meth:`run` with ``snapshots``), in order: each from the
        state it saw and its normalised input, with the weights, optimiser, target statistics and
        readout as they are now (with traced learning, its traces as they were too: exact for any
        delay). Rows' states, traces and input statistics do not move (they moved when the events
        were predicted). No drift test. ``out[n]``: the prediction with the weights before event
        ``n``'s step. Returns ``(events done, status)`` as :meth:`run`. With rows that learn their
        own weights, ``rows[n]`` is event ``n``'s row: each row's events are learned in their order
        with that row's weights (rows one after the other; a failure stops at the first failing
        row's event, rows before it learned)."""
        L = self.spec.layout
        U, F = L.n_units, self.template["xm"].shape[0]
        states = snapshots[:, :U].copy()  # scratch (advanced and dropped): copies, so the caller's snapshots stay
        XN = np.ascontiguousarray(snapshots[:, U:U + F])
        traces = snapshots[:, U + F:].copy()

        def learn(idx: np.ndarray | None, r: int | None) -> tuple[int, int]:
            pick = (lambda a: a) if idx is None else (lambda a: a[idx])  # noqa: E731
            n = len(Y) if idx is None else len(idx)
            part = np.empty((n, *out.shape[1:]))
            done = self._events(pick(states), pick(traces), np.arange(n, dtype=np.int64), pick(XN), pick(Y),
                                learn=True, skip=np.zeros(n, dtype=np.bool_), out=part,
                                drifted=np.zeros(n, dtype=np.bool_), mon_on=monitor, weights_row=r,
                                normalize_x=False, drift=False)
            out[slice(None) if idx is None else idx] = part
            return done

        return learn(None, None) if not self.per_row_weights else self._by_weight_row(rows, learn)

    def pack(self, *, monitor: bool) -> tuple[np.ndarray, np.ndarray]:
        """Move a one-row core with shared weights into one float64 buffer ``F`` and one int64 buffer
        ``I`` (for ``_fastpath.run_packed`` and ``predict_packed``): every array becomes a view of
        ``F`` with the same values, and writes to either are writes to both. ``F`` holds, in this
        order, the ``ROW_ARRAYS``, the optimiser's hyper-parameters, the layout's ``cfg`` and
        ``fixed_gain``, the readout's ``rcfg``, the drift test's configuration and
        ``[forget, eps, clip, init]``; ``I`` the 22 block offsets into ``F``, then ``n_layers, mode,
        bound, kind`` and the flags ``traced, normalize_x, normalize_y, monitor, drift on, drift resets
        state, drift resets optimiser, rls``, then the layout's ``lay`` (``[n_layers, 11]``) and
        ``head`` (4)."""
        if self.capacity != 1 or self.per_row_weights:
            raise ValueError("Core.pack: only a one-row core with shared weights packs")
        s, L, d = self.spec, self.spec.layout, self.spec.drift
        blocks = [self.array(k).reshape(-1) for k in ROW_ARRAYS] + [
            s.hyper, L.cfg, L.fixed_gain, s.rcfg, _NO_DRIFT if d is None else d.kernel_config,
            np.array([s.forget, s.eps, s.clip or 0.0, s.init])]
        sizes = [b.shape[0] for b in blocks]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        F = np.concatenate(blocks).astype(np.float64)
        for i, k in enumerate(ROW_ARRAYS):
            view = F[offsets[i]:offsets[i + 1]].reshape(self.array(k).shape)
            (self.rows if k in self.rows else self.shared)[k] = view
        flags = [L.lay.shape[0], L.mode, L.bound, OPT_KINDS[s.optimizer], s.traced, s.normalize_x, s.normalize_y,
                 monitor, d is not None, d is not None and d.reset_state, d is not None and d.reset_optimizer, s.rls]
        I = np.concatenate([offsets, np.array(flags, dtype=np.int64), L.lay.reshape(-1), L.head]).astype(np.int64)
        return F, I

    def run_keyed(self, order: np.ndarray, starts: np.ndarray, seg_rows: np.ndarray, X: np.ndarray, Y: np.ndarray, *,
                  learn: bool, skip: np.ndarray, out: np.ndarray, status: np.ndarray, drifted: np.ndarray,
                  monitor: bool) -> None:
        """Rows with their own weights, in parallel: segment ``s`` is events ``order[starts[s]:starts[s+1]]``
        (in stream order) of row ``seg_rows[s]``; ``status[s]`` is ``code * 1e9 + event`` where that
        row stopped (see :meth:`run`), else 0."""
        L = self.spec.layout
        head, tail = self._tail(monitor and learn, drifted)
        N, T = X.shape[0], L.n_outputs
        fp.run_keyed(self.rows["theta"], L.lay, L.head, L.fixed_gain, L.cfg, L.mode, L.bound, self.rows["state"],
                     self.rows["traces"], self.spec.traced, X, Y.reshape(N, T), learn, skip, order, starts, seg_rows,
                     *head, out.reshape(N, T), status, *tail)
