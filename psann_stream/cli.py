"""The ``psann-stream`` command line.

``psann-stream run`` learns an Arrow or Parquet stream through the :class:`~psann_stream.engine.Engine`
(checkpoints, ``--resume``, dead-letter output), with the default ensemble where the run can take it
and one learner otherwise (:func:`_choose_model`); ``psann-stream inspect`` prints a checkpoint.
``psann-stream demo`` learns a regime-switching sine stream online with the default
:class:`~psann_stream.learner.Learner` (compiled loop, ObGD, online normalisers, monitor),
prequentially (each value is predicted before it is learned), and prints the error as it goes: the
stateful model against the same network with its state switched off and against persistence
(predict the last value).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import check_config, learner_kwargs
from .errors import ConfigError, PsannStreamError
from .keyed import KeyedLearner
from .learner import Learner
from .model import StatefulNet
from .observe import FadedError
from .state import StateConfig

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from psann_stream.scenarios import regime_switching_sine

    stream = regime_switching_sine(args.steps, seed=args.seed)
    x, y = stream.x.astype(np.float64), stream.y[:, 0].astype(np.float64)
    learners = {
        "stateful": Learner(StatefulNet(1, hidden=(32, 32), state=StateConfig(), seed=args.seed)),
        "no state": Learner(
            StatefulNet(1, hidden=(32, 32), state=StateConfig(gain=0.0, learnable_gain=False), seed=args.seed)
        ),
    }
    faded = {k: FadedError(alpha=0.99) for k in (*learners, "persistence")}
    total = {k: 0.0 for k in faded}
    print(
        f"psann-stream demo: {args.steps} steps of a sine whose period/amplitude switch at steps "
        f"{', '.join(map(str, stream.change_points[1:]))}; next-value prediction from the current value only."
    )
    print("prequential MAE (faded, alpha=0.99) -- each value is predicted before it is learned")
    print(f"{'step':>6} {'regime':>6} {'stateful':>9} {'no state':>9} {'persist.':>9} {'events/s':>9}")
    notice = _CompileNotice()
    notice.start()  # a throwaway learner takes the one-time compile, so no rate below includes it
    Learner(StatefulNet(1, hidden=(4,), seed=0)).learn_batch(x[:2], y[:2])
    notice.stop()
    started = time.perf_counter()
    for lo in range(0, args.steps, args.every):
        hi = min(lo + args.every, args.steps)
        t0 = time.perf_counter()
        errs = {k: np.abs(lrn.learn_batch(x[lo:hi], y[lo:hi]) - y[lo:hi]) for k, lrn in learners.items()}
        rate = (hi - lo) * len(learners) / (time.perf_counter() - t0)
        errs["persistence"] = np.abs(x[lo:hi, 0] - y[lo:hi])
        for k, e in errs.items():
            faded[k].add(e)
            total[k] += float(e.sum())
        row = " ".join(f"{faded[k].value:9.4f}" for k in ("stateful", "no state", "persistence"))
        print(f"{hi:6d} {stream.regime_at(hi - 1):6d} {row} {rate:9,.0f}", flush=True)
    n = args.steps
    print(
        f"cumulative MAE over {n} steps: stateful {total['stateful'] / n:.4f}, no state "
        f"{total['no state'] / n:.4f}, persistence {total['persistence'] / n:.4f} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    model = learners["stateful"].model
    for i, (b, s) in enumerate(zip(model.state_bounds(), model.held_state())):
        print(
            f"layer {i}: max |state| {float(s.abs().max()):.3f} <= limit {b.steady_state_limit:.3f} <= max_abs "
            f"{b.max_abs}; contraction L = {b.contraction}"
        )
    alerts = learners["stateful"].alerts
    print(f"monitor: {len(alerts)} alert(s)" + "".join(f"\n  {a}" for a in alerts))
    return 0


def _load_config(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        raise ConfigError("--config needs Python 3.11+ (tomllib)") from None
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc}).") from None
    check_config(cfg, f"--config {path}")
    return cfg


def _ensemble(section: dict, features: list[str], width: int, outputs: int, keyed: bool):
    """The ``[ensemble]`` section: ``persistence`` (the feature holding the target's last value: a
    name among ``--features``, or an index; a list of them, one per target, for several targets),
    ``target`` ("level" or "change"), ``eta``, ``share``, ``seed``."""
    from .ensemble import default_ensemble

    kw = {k: section[k] for k in ("target", "eta", "share", "seed") if k in section}
    column = None
    if "persistence" in section:
        column = _last_value_columns("[ensemble] persistence", section["persistence"], features, width, outputs)
    elif section.get("target") == "change":
        raise ConfigError("[ensemble] target = \"change\" learns each target's change from its last value: give "
                          "persistence, the feature holding it (a list of them, one per target, for several targets).")
    return default_ensemble(width, keyed=keyed, persistence_column=column, n_outputs=outputs, **kw)


def _choose_model(args: argparse.Namespace, cfg: dict) -> tuple[str, str]:
    """What ``run`` learns with, ``"ensemble"`` (:func:`~psann_stream.ensemble.default_ensemble`) or
    ``"learner"`` (one StatefulNet Learner or KeyedLearner), and why, for the line the run starts with.
    An ``[ensemble]`` section or ``--model`` decide; otherwise runs take the ensemble (the lowest
    error on every scenario of docs/scenarios.md and on their keyed copies, at ~1/4 of a Learner's
    events/s unkeyed and ~1/3.5 of a KeyedLearner's keyed, with ~6x its memory per key) and runs that
    it cannot serve take the learner: ``--id`` (delayed labels need a learner's snapshots),
    ``--ray`` (shards one keyed learner), or a ``[model]``, ``[state]``, ``[learner]`` or
    ``[target]`` section (they configure the learner)."""
    single = [f"[{name}]" for name in ("model", "state", "learner", "target") if name in cfg]
    if "ensemble" in cfg:
        if args.model == "learner":
            raise ConfigError("--model learner and an [ensemble] section contradict each other: drop one of them.")
        return "ensemble", "the [ensemble] section"
    if args.model == "ensemble":
        if single:
            raise ConfigError(f"--model ensemble builds its own members; {', '.join(single)} configure one learner: "
                              "drop them, or drop --model ensemble (settings of the ensemble go in an [ensemble] section).")
        if args.id is not None:
            raise ConfigError("--model ensemble cannot learn delayed labels (--id): use --model learner.")
        return "ensemble", "--model ensemble"
    if args.model == "learner":
        return "learner", "--model learner"
    if single:
        return "learner", f"{', '.join(single)} configure it"
    if args.ray:
        return "learner", "--ray shards one keyed learner"
    if args.id is not None:
        return "learner", "delayed labels (--id) learn from a learner's snapshots"
    if args.key is not None:
        return "ensemble", "the default; --model learner: one KeyedLearner at ~3.5x the events/s and ~1/6 the memory per key"
    return "ensemble", "the default; --model learner: one Learner at ~4x the events/s"


def _last_value_columns(where: str, given: object, features: list[str], width: int, outputs: int) -> int | list[int]:
    """Per target, the input column holding its last value (``[target] change_from``, ``[ensemble]
    persistence``): a name among ``--features`` or an index; one target may give it alone, not in a list."""
    names = given if isinstance(given, list) else [given]
    if len(names) != outputs:
        raise ConfigError(f"{where} names {len(names)} column(s) for {outputs} target(s); give the "
                          "feature holding each target's last value, in the order of --target.")
    cols = []
    for name in names:
        if isinstance(name, str) and name in features:
            cols.append(features.index(name))
        elif isinstance(name, int) and not isinstance(name, bool) and 0 <= name < width:
            cols.append(name)
        else:
            raise ConfigError(f"{where}: {name!r} is not one of the --features {features} nor an index "
                              f"below {width}; name the feature holding the target's last value.")
    return cols[0] if outputs == 1 else cols


def _source(args: argparse.Namespace, kafka_settings: dict):
    from .io import open_source

    if (args.input is None) == (args.kafka is None):
        raise ConfigError("give either --input PATH|- or --kafka HOST:PORT --topic T.")
    if args.kafka is None:
        if kafka_settings and args.kafka_out is None:
            raise ConfigError("the --config file has a [kafka] section, but neither the input nor the output is Kafka: "
                              "drop the section, or use --kafka HOST:PORT --topic T or --kafka-out HOST:PORT.")
        return open_source(args.input)
    if not args.topic:
        raise ConfigError("--kafka needs --topic.")
    from psann_stream.adapters.kafka import KafkaSource

    parts = [int(p) for p in args.partitions.split(",")] if args.partitions else None
    return KafkaSource(args.kafka, args.topic, partitions=parts, group_id=args.group_id,
                       until=None if args.follow else "end", config=kafka_settings)


def _with_labels(args: argparse.Namespace, source, kafka_settings: dict):
    """``source`` merged by time with the labels of ``--labels-input`` or ``--labels-topic``, if given."""
    if args.labels_input is None and args.labels_topic is None:
        return source
    if args.id is None or args.time is None:
        raise ConfigError("labels from a second source are matched by --id and merged by --time: give both.")
    if args.follow:
        raise ConfigError("--follow with labels from a second source is not supported yet: the merge by time must see "
                          "the next row of both sources before it goes on. Put the labels on the events' topic (rows "
                          "with a target and null features), or read both to their ends.")
    from .merge import MergedSource

    if args.labels_topic is not None:
        if args.kafka is None or args.labels_input is not None:
            raise ConfigError("--labels-topic reads labels from the broker of --kafka; with a file input use "
                              "--labels-input PATH (give one of them).")
        from psann_stream.adapters.kafka import KafkaSource

        labels = KafkaSource(args.kafka, args.labels_topic, group_id=args.group_id, until="end", config=kafka_settings)
    else:
        from .io import open_source

        labels = open_source(args.labels_input)
    return MergedSource(source, labels, time=args.time)


def _run(args: argparse.Namespace) -> int:
    from .engine import CheckpointPolicy, Engine
    from .io import ColumnMap

    cfg = _load_config(args.config)
    features = args.features.split(",")
    targets = None if args.target is None else args.target.split(",")
    columns = ColumnMap(features[0] if len(features) == 1 else features, key=args.key, time=args.time, id=args.id,
                        target=None if targets is None else (targets[0] if len(targets) == 1 else targets))
    source = _source(args, dict(cfg.get("kafka", {})))
    source = _with_labels(args, source, dict(cfg.get("kafka", {})))
    bound = columns.bind(source.schema)
    width, outputs = bound.n_features, max(bound.n_targets, 1)
    model_cfg = cfg.get("model", {})
    kind, why = _choose_model(args, cfg)
    net = None if kind == "ensemble" else StatefulNet(
        width, outputs, hidden=tuple(model_cfg.get("hidden", (32, 32))),
        state=StateConfig.from_mapping({"mode": "trace", **cfg.get("state", {})}) if cfg.get("state") else StateConfig(),
        seed=int(model_cfg.get("seed", 0)))
    lcfg = learner_kwargs(cfg.get("learner", {}))
    per_key = bool(lcfg.pop("per_key_weights", False))
    ray = None
    if args.ray:
        if kind == "ensemble":
            raise ConfigError(f"--ray shards one keyed learner; an ensemble ({why}) runs on one machine: drop one of them.")
        if args.key is None:
            raise ConfigError("--ray shards keys: give --key.")
        from psann_stream.adapters.ray import ShardedLearner, require_ray

        ray = require_ray()
        if args.ray_address:
            ray.init(address=args.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        cpus = ray.cluster_resources().get("CPU", 1.0)
        explicit = {"per_key_weights": per_key} if "per_key_weights" in cfg.get("learner", {}) else {}
        learner = ShardedLearner(net, args.shards, num_cpus=min(1.0, cpus / args.shards), **explicit, **lcfg)
    elif kind == "ensemble":
        learner = _ensemble(cfg.get("ensemble", {}), features, width, outputs, keyed=args.key is not None)
    elif args.key is not None:
        learner = KeyedLearner(net, per_key_weights=per_key, **lcfg)
    else:
        learner = Learner(net, **lcfg)
    if "target" in cfg:
        from .experts import Change

        learner = Change(learner, column=_last_value_columns("[target] change_from", cfg["target"]["change_from"],
                                                             features, width, outputs))
    if args.id is not None:
        from .delayed import DelayedLabels

        learner = DelayedLabels(learner, horizon=10_000 if args.label_horizon is None else args.label_horizon)
    elif args.label_horizon is not None:
        raise ConfigError("--label-horizon is for labels that arrive later: give --id COLUMN as well.")
    progress = _Progress(sys.stdout.isatty(), every=args.progress_every)
    output = args.output
    if args.kafka_out is not None:
        if args.output is not None or not args.out_topic:
            raise ConfigError("--kafka-out HOST:PORT needs --out-topic T, and replaces --output: give one of them.")
        from psann_stream.adapters.kafka import KafkaSink

        output = KafkaSink(args.kafka_out, args.out_topic, fmt=args.out_format, config=cfg.get("kafka", {}))
    elif args.out_topic:
        raise ConfigError("--out-topic needs --kafka-out HOST:PORT.")
    engine = Engine(
        source, learner, columns,
        output=output, output_format=args.output_format, dead_letter=args.dead_letter,
        checkpoint=CheckpointPolicy(args.checkpoint_dir, every_events=args.checkpoint_every) if args.checkpoint_dir else None,
        on_bad_input=args.on_bad_input, time_order=args.time_order,
        hooks={"on_batch": progress.batch, "on_prediction": progress.predictions},
    )
    metrics = None
    if args.metrics_port is not None:
        from .observe import EngineMetrics

        metrics = EngineMetrics(engine, max_keys=args.metrics_keys)
        port = metrics.serve(args.metrics_port, host=args.metrics_host)
        print(f"metrics: http://{args.metrics_host}:{port}/metrics", flush=True)
    members = f"default_ensemble: {', '.join(learner.names)}" if kind == "ensemble" else f"one learner, hidden {net.hidden}"
    print(f"model: {members} ({why})", flush=True)
    if args.init_from:
        if args.resume:
            raise ConfigError("--init-from starts a new run from a learned state; --resume continues one. Use one.")
        learner.load_state_dict(_checkpoint_payload(args.init_from)["learner"])
    try:
        if ray is not None and engine.policy is not None:
            from psann_stream.adapters.ray import run_with_recovery

            stats = run_with_recovery(engine, resume=args.resume)
        else:
            stats = engine.run(resume=args.resume)
        progress.done(stats, learner.alerts)
        _print_mixture(learner, bound.target_names if len(bound.target_names) == outputs else None)
    finally:
        if metrics is not None:
            metrics.close()
        if hasattr(source, "close"):
            source.close()
        if ray is not None:
            learner.close()
            ray.shutdown()
    return 0


class _CompileNotice:
    """Says, while it happens, that the per-event loop is being compiled. numba compiles it on a
    machine's first run (~10-20 s; later runs load it from its cache in about a second), inside the
    first call that learns: :meth:`start` before that call, :meth:`stop` after it. If the call takes
    longer than ``after`` seconds a line says what is going on, and a second one how long it took."""

    def __init__(self, after: float = 2.0) -> None:
        self.after = after
        self._timer: threading.Timer | None = None
        self._t0 = 0.0
        self.said = False

    def _say(self) -> None:
        self.said = True
        print("compiling the per-event loop (once per machine; later runs start at once) ...", flush=True)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._timer = threading.Timer(self.after, self._say)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            if self.said:
                print(f"compiled in {time.perf_counter() - self._t0:.0f} s (cached for later runs)", flush=True)


class _Progress:
    """Rows, rows/s, rolling (faded) absolute error (:class:`~psann_stream.observe.FadedError`) and
    alert count: one updating line on a terminal, plain log lines every ``every`` seconds otherwise.
    The rate starts after the first batch, so the one-time compile of the per-event loop
    (:class:`_CompileNotice`) is not in it.
    """

    def __init__(self, tty: bool, every: float) -> None:
        self.tty, self.every = tty, every
        self.start = self.last = time.perf_counter()
        self.rows = self.rated_rows = self.printed = self.batches = 0
        self.error = FadedError()
        self.compiling = _CompileNotice()

    def batch(self, position, events) -> None:
        if self.batches == 0:
            self.compiling.start()
        self.batches += 1
        self.error.batch(position, events)

    def predictions(self, position, preds: np.ndarray) -> None:
        self.error.predictions(position, preds)
        if self.rows == 0:  # the first batch carries the one-time compile: the rate starts after it
            self.compiling.stop()
            self.start = time.perf_counter()
        else:
            self.rated_rows += len(preds)
        self.rows += len(preds)
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._print(end="\r" if self.tty else "\n")

    def _print(self, end: str) -> None:
        self.printed = self.rows
        rate = self.rated_rows / max(time.perf_counter() - self.start, 1e-9)
        print(f"rows {self.rows:,}  {rate:,.0f} rows/s  faded MAE {self.error.value:.4g}", end=end, flush=True)

    def done(self, stats, alerts) -> None:
        self.compiling.stop()
        if self.printed != self.rows or self.rows == 0:
            self._print(end="\n")
        elif self.tty:
            print()  # end the updating line
        print(f"done: {stats.rows_in:,} rows in (this and earlier runs), {stats.predicted:,} predicted, "
              f"{stats.dead_lettered:,} dead-lettered, {stats.checkpoints} checkpoint(s), {len(alerts)} alert(s)")
        if stats.labels_learned or stats.expired or stats.pending_labels:
            print(f"delayed labels: {stats.labels_learned:,} learned, {stats.expired:,} expired, "
                  f"{stats.pending_labels:,} waiting")
        for a in alerts:
            print(f"  {a}")


def _scenario(args: argparse.Namespace) -> int:
    from psann_stream.scenarios.run import main as scenario_main

    if args.action == "list":
        return scenario_main([])
    if not args.name:
        raise ConfigError("scenario run needs a NAME; see `psann-stream scenario list`.")
    extra = ["--seed", str(args.seed)]
    for flag, value in (("--steps", args.steps and str(args.steps)), ("--json", args.json), ("--plot", args.plot),
                        ("--models", args.models), ("--data", args.data)):
        if value:
            extra += [flag, value]
    return scenario_main([args.name, *extra])


def _bench(args: argparse.Namespace) -> int:
    from psann_stream.scenarios.bench import main as bench_main

    return bench_main(["--events", str(args.events), "--slow-events", str(args.slow_events)])


def _checkpoint_payload(path: str | Path) -> dict:
    """The newest good checkpoint of a directory, or the given checkpoint file."""
    from .checkpoint import load_checkpoint, load_latest

    path = Path(path)
    if path.is_dir():
        found = load_latest(path)
        if found is None:
            raise ConfigError(f"{path}: no checkpoint in this directory.")
        return found[1]
    return load_checkpoint(path)


def _inspect(args: argparse.Namespace) -> int:
    path = Path(args.checkpoint)
    payload = _checkpoint_payload(path)
    print(f"checkpoint {path}")
    for key in ("position", "parts", "dead_parts", "counters"):
        if key in payload:
            print(f"  {key}: {payload[key]}")
    lrn = payload.get("learner", {})
    if lrn:
        opt = lrn.get("optimizer")
        opt = opt.get("name") if isinstance(opt, dict) else opt  # a learner saves its optimiser's name and buffers
        print(f"  learner: {lrn.get('format')}" + ("" if opt is None else f", optimizer {opt!r}")
              + (f", {len(lrn['keys'])} hot key(s), {len(lrn.get('cold_keys', []))} cold" if "keys" in lrn else ""))
        if "state_config" in lrn:
            print(f"  state: {lrn['state_config']}")
        from .ensemble import FORMAT as ENSEMBLE_FORMAT, describe_weights

        if lrn.get("format") == ENSEMBLE_FORMAT:  # what its mixture leans on
            for line in describe_weights(lrn["names"], lrn["weights"]):
                print(f"  mixture weights: {line}")
        tensors = [v for v in _walk(lrn) if isinstance(v, torch.Tensor)]
        print(f"  {len(tensors)} tensor(s), {sum(t.numel() for t in tensors):,} numbers")
    return 0


def _print_mixture(learner, targets: tuple[str, ...] | None) -> None:
    """An ensemble's mixture weights at the end of a run (what it leans on; one line per target)."""
    from .ensemble import Ensemble, describe_weights

    if isinstance(learner, Ensemble):
        for line in describe_weights(learner.names, learner.weight_matrix, targets):
            print(f"mixture weights: {line}")
        missed = learner.n_missed_by_all
        if np.any(np.asarray(missed) > 0):
            print(f"outliers: {missed} event(s) every member missed by more than {learner.prediction_clip:g} target "
                  "deviations; the members learned them, the mixture weights ignored them")


def _walk(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psann-stream", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="learn a regime-switching sine stream online and print prequential error")
    demo.add_argument("--steps", type=int, default=20000, help="stream length (default 20000)")
    demo.add_argument("--every", type=int, default=2000, help="print a line every N steps (default 2000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the stream and the models (default 0)")
    demo.set_defaults(func=_demo)
    run = sub.add_parser("run", help="learn an Arrow/Parquet stream prequentially, with checkpoints")
    run.add_argument("--input", help="Arrow IPC file or stream, Parquet file or directory, or - for stdin")
    run.add_argument("--kafka", metavar="HOST:PORT", help="read a Kafka topic instead (messages hold Arrow IPC streams)")
    run.add_argument("--topic", help="the Kafka topic (with --kafka)")
    run.add_argument("--partitions", help="Kafka partitions to read, P,P,... (default all)")
    run.add_argument("--group-id", default="psann-stream", help="consumer group that offsets are committed to after each checkpoint")
    run.add_argument("--follow", action="store_true", help="keep reading Kafka for new messages (default: stop at the end)")
    run.add_argument("--ray", action="store_true", help="learn keys in Ray actors (needs --key; pip install 'psann-stream[ray]')")
    run.add_argument("--shards", type=int, default=2, help="number of Ray shard actors (default 2)")
    run.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    run.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray started by --ray (default: all)")
    run.add_argument("--features", required=True, help="one fixed_size_list column, or numeric columns COL,COL,...")
    run.add_argument("--target", help="target column, or comma-separated columns (or one fixed_size_list column) "
                     "learned together by one model with that many outputs; omit for prediction-only streams")
    run.add_argument("--key", help="key column: one state (and optionally weights) per key")
    run.add_argument("--time", help="event-time column (timestamp or integer): copied to the output, order checked")
    run.add_argument("--id", help="event-id column for labels that arrive later: rows with a null target are "
                     "predicted and wait; rows with a target and null features are their labels (by id and key)")
    run.add_argument("--labels-input", help="with --id and --time: labels from this file (id, target, key and time "
                     "columns), merged with the input by time")
    run.add_argument("--labels-topic", help="with --kafka, --id and --time: labels from this topic of the same broker")
    run.add_argument("--label-horizon", type=int, default=None,
                     help="with --id: a prediction waits for its label while at most this many events follow it "
                          "(default 10000); then it expires into the dead letters")
    run.add_argument("--time-order", choices=("strict", "non-decreasing", "off"), default="strict",
                     help="per key, event times must increase (strict, default), not decrease, or are not checked")
    run.add_argument("--output", help="directory for prediction part files")
    run.add_argument("--checkpoint-dir", help="directory for checkpoints")
    run.add_argument("--checkpoint-every", type=int, default=100_000, help="rows between checkpoints (default 100000)")
    run.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    run.add_argument("--init-from", help="start from the learner of this checkpoint (file or directory), e.g. after a warm-up run")
    run.add_argument("--config", help="TOML file with [model], [state] and [learner] sections, or an [ensemble] section")
    run.add_argument("--model", choices=("ensemble", "learner"), default=None,
                     help="what learns: the default ensemble (lowest error; the default) or one learner (~3.5-4x the "
                          "events/s; the default with --id, --ray or a [model], [state], [learner] or [target] section)")
    run.add_argument("--output-format", choices=("arrow", "arrow-stream", "parquet"), default="arrow",
                     help="part file format: Arrow IPC file, Arrow IPC stream (.arrows) or Parquet (default arrow)")
    run.add_argument("--kafka-out", help="write predictions to Kafka at HOST:PORT (with --out-topic; at least once: "
                     "every row carries its source position for dedupe, see docs/scale-out.md)")
    run.add_argument("--out-topic", help="the Kafka topic for predictions (it must exist)")
    run.add_argument("--out-format", choices=("arrow", "json"), default="arrow",
                     help="Kafka message values: Arrow IPC per key and checkpoint, or one JSON object per row")
    run.add_argument("--on-bad-input", choices=("raise", "dead-letter"), default="raise")
    run.add_argument("--dead-letter", help="directory for dead-lettered rows (with --on-bad-input dead-letter)")
    run.add_argument("--progress-every", type=float, default=2.0, help="seconds between progress lines (default 2)")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: a free one; "
                     "needs psann-stream[metrics])")
    run.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)")
    run.add_argument("--metrics-keys", type=int, default=20,
                     help="keys with a series of their own in psann_key_rows_total (default 20; the rest as 'other')")
    run.set_defaults(func=_run)
    scen = sub.add_parser("scenario", help="list the drift scenarios, or run one against the baselines")
    scen.add_argument("action", choices=("list", "run"))
    scen.add_argument("name", nargs="?", help="scenario name (for run)")
    scen.add_argument("--steps", type=int, help="events (default 6000; a real feed: all of its file)")
    scen.add_argument("--data", help="the file of a real-feed scenario (etth1, etth1-keyed: the path of ETTh1.csv)")
    scen.add_argument("--seed", type=int, default=0)
    scen.add_argument("--json", help="also write the metrics to this JSON file")
    scen.add_argument("--plot", help="also draw faded error and psann state norms to this PNG (needs matplotlib)")
    scen.add_argument("--models", help="comma-separated subset of the models (default all; see --help of the runner)")
    scen.set_defaults(func=_scenario)
    bench = sub.add_parser("bench", help="throughput, latency and memory of psann_stream and the baselines, in one run")
    bench.add_argument("--events", type=int, default=20_000, help="events for the fast models (default 20000)")
    bench.add_argument("--slow-events", type=int, default=1_000, help="events for eager torch and ARF (default 1000)")
    bench.set_defaults(func=_bench)
    insp = sub.add_parser("inspect", help="print what a checkpoint (file or directory) holds")
    insp.add_argument("checkpoint")
    insp.set_defaults(func=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``psann-stream`` console script; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "steps", None) is not None and args.steps < 1 or getattr(args, "every", 1) < 1:
        parser.error("--steps and --every must be >= 1")
    try:
        return int(args.func(args))
    except (PsannStreamError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"psann-stream: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
