"""Watching a long-running :class:`~psann_stream.engine.Engine`: the faded error of its predictions,
and Prometheus metrics for the tools operators already run.

:class:`FadedError` is the one owner of the running error the CLI prints and the metrics export.
:class:`EngineMetrics` attaches to an engine (through its hooks, composed with any already there)
and serves, on ``http://HOST:PORT/metrics``:

=====================================  =======  ============================================================
series                                 type     meaning
=====================================  =======  ============================================================
``psann_rows_in_total``                counter  rows read (this run and the runs it resumed)
``psann_rows_predicted_total``         counter  rows predicted and learned
``psann_rows_dead_lettered_total``     counter  bad rows routed to the dead-letter output
``psann_drifts_total``                 counter  drift detections (each reset its key)
``psann_checkpoints_total``            counter  checkpoints written
``psann_labels_learned_total``         counter  delayed labels: label rows learned
``psann_labels_expired_total``         counter  delayed labels: predictions whose label did not come in time
``psann_pending_labels``               gauge    delayed labels: predictions waiting for their labels
``psann_alerts_total{kind}``           counter  monitor alerts by kind (``overshoot``, ``saturation``, ...)
``psann_events_per_second``            gauge    rows read per second over the last ``window`` seconds
``psann_faded_mae``                    gauge    faded absolute error of the predictions (alpha 0.999)
``psann_checkpoint_age_seconds``       gauge    seconds since the last checkpoint (absent before one)
``psann_checkpoint_duration_seconds``  gauge    how long the last checkpoint took
``psann_key_rows_total{key}``          counter  rows per key for the first ``max_keys`` keys seen; the
                                                rest under ``key="other"`` (bounded cardinality)
``psann_input_lag_messages{partition}``  gauge  Kafka: messages from the next unread row to the end of
                                                each partition (sources with a ``lag(position)`` method)
``psann_ensemble_weight{member,target}``  gauge  an :class:`~psann_stream.ensemble.Ensemble`: each member's
                                                mixture weight (they sum to 1 per target)
``psann_ensemble_outliers_total{target}``  counter  events every member missed by more than
                                                ``prediction_clip`` deviations: left out of the weights
=====================================  =======  ============================================================

Needs ``prometheus-client`` (``pip install 'psann-stream[metrics]'``), imported only when an
:class:`EngineMetrics` is built.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any, Callable

import numpy as np

from .ensemble import Ensemble
from .errors import ConfigError

__all__ = ["EngineMetrics", "FadedError"]


class FadedError:
    """The faded mean absolute error of an engine's predictions (Gama et al. 2013: ``S = e + alpha S``,
    ``N = 1 + alpha N``, reported as ``S / N``).

    Targets arrive with each batch (``on_batch``) and predictions later (``on_prediction``); the
    engine finishes batches in the order it reads them and may read ahead, so targets wait in a queue.
    Predictions cover only a batch's good rows: a batch with dead-lettered rows is left out, and so is
    any pair that is not finite. With several targets an event's error is its mean over them.

    >>> f = FadedError(alpha=0.5)
    >>> class Batch: y = np.array([1.0, 2.0])
    >>> f.batch(None, Batch()); f.predictions(None, np.array([1.5, 2.0]))
    >>> round(f.value, 4)
    0.1667
    """

    def __init__(self, alpha: float = 0.999) -> None:
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"FadedError.alpha = {alpha!r} must lie in (0, 1).")
        self.alpha = alpha
        self.s = self.n = 0.0
        self._targets: deque[np.ndarray | None] = deque()

    def batch(self, position: Any, events: Any) -> None:
        self._targets.append(events.y)

    def predictions(self, position: Any, preds: np.ndarray) -> None:
        y = self._targets.popleft() if self._targets else None
        if y is None or len(y) != len(preds):
            return
        with np.errstate(invalid="ignore"):
            err = np.abs(preds - y)
        if err.ndim == 2:
            err = err.mean(axis=1)  # several targets: an event's mean absolute error over them
        self.add(err[np.isfinite(err)])

    def add(self, errors: np.ndarray) -> None:
        """Fold absolute errors into the faded sums, in order."""
        for e in errors:
            self.s = float(e) + self.alpha * self.s
            self.n = 1.0 + self.alpha * self.n

    @property
    def value(self) -> float:
        """``S / N``, NaN before the first scored row."""
        return self.s / self.n if self.n else float("nan")


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("metrics need prometheus-client: pip install 'psann-stream[metrics]' "
                          "(or pip install 'prometheus-client>=0.26,<0.27').") from None
    return prometheus_client


class EngineMetrics:
    """Prometheus metrics of one :class:`~psann_stream.engine.Engine` (module doc for the series).

    Args:
        engine: the engine to watch; its hooks are composed with this object's (both run).
        max_keys: keys that get a series of their own in ``psann_key_rows_total`` (the first ones
            seen; later keys count under ``key="other"``). 0: no per-key series.
        window: seconds over which ``psann_events_per_second`` is measured.

    :meth:`serve` starts the HTTP endpoint (a daemon thread of prometheus-client); :meth:`close`
    stops it. Values are read from the engine when scraped, so a scrape costs the run nothing.
    """

    def __init__(self, engine: Any, *, max_keys: int = 20, window: float = 10.0) -> None:
        pc = _prometheus()
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 0:
            raise ConfigError(f"EngineMetrics.max_keys = {max_keys!r} must be an integer >= 0.")
        self.engine, self.max_keys, self.window = engine, max_keys, float(window)
        self.error = FadedError()
        self.key_rows: Counter = Counter()
        self._rates: deque[tuple[float, int]] = deque()
        self._server: Any = None
        self._thread: Any = None
        self.registry = pc.CollectorRegistry(auto_describe=True)
        metrics = self

        class _Collector:
            def collect(self):  # noqa: D401 - prometheus-client's collector protocol
                yield from metrics._families(CounterMetricFamily, GaugeMetricFamily)

        self.registry.register(_Collector())
        for name, hook in (("on_batch", self._on_batch), ("on_prediction", self.error.predictions)):
            engine.hooks[name] = _both(engine.hooks.get(name), hook)

    # ------------------------------------------------------------------ hooks
    def _on_batch(self, position: Any, events: Any) -> None:
        self.error.batch(position, events)
        now = time.monotonic()
        self._rates.append((now, self.engine.stats.rows_in))
        while len(self._rates) > 2 and now - self._rates[1][0] >= self.window:
            self._rates.popleft()
        keys = getattr(events, "keys", None)
        if self.max_keys and keys is not None and len(keys):
            values, counts = keys.counts()  # null keys are dead-lettered rows, not a key
            for k, c in zip(values, counts.tolist()):
                name = str(k)
                if name in self.key_rows or len(self.key_rows) < self.max_keys:
                    self.key_rows[name] += c
                else:
                    self.key_rows["other"] += c

    # ------------------------------------------------------------------ scrape
    def _families(self, counter: Callable[..., Any], gauge: Callable[..., Any]):
        s = self.engine.stats
        for name, value, doc in (("psann_rows_in", s.rows_in, "rows read"),
                                 ("psann_rows_predicted", s.predicted, "rows predicted and learned"),
                                 ("psann_rows_dead_lettered", s.dead_lettered, "bad rows dead-lettered"),
                                 ("psann_drifts", s.drifts, "drift detections"),
                                 ("psann_checkpoints", s.checkpoints, "checkpoints written"),
                                 ("psann_labels_learned", s.labels_learned, "delayed labels: label rows learned"),
                                 ("psann_labels_expired", s.expired, "delayed labels: predictions that expired")):
            yield counter(name, doc, value=value)
        yield gauge("psann_pending_labels", "delayed labels: predictions waiting for their labels", value=s.pending_labels)
        alerts = counter("psann_alerts", "monitor alerts by kind", labels=["kind"])
        for kind, n in sorted(Counter(a.kind for a in self.engine.learner.alerts).items()):
            alerts.add_metric([kind], n)
        yield alerts
        yield gauge("psann_events_per_second", f"rows read per second over the last {self.window:g} s",
                    value=self.events_per_second())
        yield gauge("psann_faded_mae", "faded absolute error of the predictions", value=self.error.value)
        if s.last_checkpoint_at is not None:
            yield gauge("psann_checkpoint_age_seconds", "seconds since the last checkpoint",
                        value=time.time() - s.last_checkpoint_at)
            yield gauge("psann_checkpoint_duration_seconds", "duration of the last checkpoint",
                        value=s.last_checkpoint_seconds)
        lag = getattr(self.engine.source, "lag", None)
        if callable(lag):  # a broker source: how far behind its input the run is
            family = gauge("psann_input_lag_messages", "messages from the next unread row to the partition's end",
                           labels=["partition"])
            for part, n in sorted(lag(s.position).items()):
                family.add_metric([str(part)], n)
            yield family
        learner = self.engine.learner
        if isinstance(learner, Ensemble):
            family = gauge("psann_ensemble_weight", "mixture weight of each ensemble member", labels=["member", "target"])
            names = self.engine.bound.target_names
            W = learner.weight_matrix
            for t, row in enumerate(W):
                target = names[t] if len(names) == W.shape[0] else str(t)
                for member, w in zip(learner.names, row.tolist()):
                    family.add_metric([member, target], w)
            yield family
            outliers = counter("psann_ensemble_outliers", "events every ensemble member missed by more than "
                               "prediction_clip target deviations (left out of the mixture weights)", labels=["target"])
            for t, n in enumerate(np.atleast_1d(learner.n_missed_by_all).tolist()):
                outliers.add_metric([names[t] if len(names) == W.shape[0] else str(t)], n)
            yield outliers
        if self.max_keys:
            keys = counter("psann_key_rows", f"rows per key (first {self.max_keys} keys; the rest as 'other')",
                           labels=["key"])
            for k, n in sorted(self.key_rows.items()):
                keys.add_metric([k], n)
            yield keys

    def events_per_second(self) -> float:
        """Rows read per second between the oldest and newest batch of the window (0 before two)."""
        if len(self._rates) < 2:
            return 0.0
        (t0, r0), (t1, r1) = self._rates[0], self._rates[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0

    # ------------------------------------------------------------------ endpoint
    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Start ``http://host:port/metrics`` (``port=0``: a free one); returns the port."""
        pc = _prometheus()
        try:
            self._server, self._thread = pc.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"metrics endpoint {host}:{port}: {exc}; choose another --metrics-port.") from None
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the endpoint (if started)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _both(first: Callable[..., Any] | None, second: Callable[..., Any]) -> Callable[..., Any]:
    if first is None:
        return second

    def call(*args: Any) -> None:
        first(*args)
        second(*args)

    return call
