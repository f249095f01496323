"""Kafka as the partitioned source, against a real Kafka-protocol broker (tansu on 127.0.0.1):
a keyed stream produced to 2 partitions is learned exactly as the same rows from a file (per key,
bit for bit); offsets reach the consumer group only after checkpoints; a consumer killed with
SIGKILL and resumed loses and repeats no row; resuming inside a message; clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from psann_stream import BadInputError, ColumnMap, ConfigError, KeyedLearner, StatefulNet
from psann_stream.adapters.kafka import KafkaSource, create_topic, produce_table
from psann_stream.checkpoint import load_latest
from psann_stream.engine import CheckpointPolicy, Engine
from psann_stream.sinks import read_parts
from psann_stream.io import TableSource
from processes import kill_after_first_checkpoint
from tansu import tansu_broker

F = 3
COLUMNS = ColumnMap("x", target="y", key="k")
# tansu 0.6 reports a partition's high watermark as the last *record batch*'s base offset + 1, so a
# producer that packs several messages into one record batch makes the end look early; one message
# per record batch avoids it (a real Kafka broker needs no such setting).
ONE_PER_BATCH = {"batch.num.messages": 1}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with tansu_broker(tmp_path_factory.mktemp("tansu") / "broker.log") as address:
        yield address


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 25, n)
    x = rng.standard_normal((n, F)).astype(np.float32)
    return pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F),
        "y": np.cos(x.astype(np.float64).sum(axis=1) * (1 + 0.1 * k)),
        "k": k,
    })


def _topic(broker: str, name: str, table: pa.Table, batch_size: int = 700) -> str:
    create_topic(broker, name, 2)
    produce_table(broker, name, table, key="k", batch_size=batch_size, config=ONE_PER_BATCH)
    return name


def _net() -> StatefulNet:
    return StatefulNet(F, hidden=(6, 6), seed=1)


def _per_key(out: pa.Table, order: list[str]) -> dict[int, np.ndarray]:
    out = out.sort_by([(c, "ascending") for c in order])
    keys, preds = out["key"].to_numpy(), out["prediction"].to_numpy()
    return {int(k): preds[keys == k] for k in np.unique(keys)}


def _reference(tmp_path, table: pa.Table) -> dict[int, np.ndarray]:
    Engine(TableSource(table, 1000), KeyedLearner(_net(), per_key_weights=True), COLUMNS, output=tmp_path / "ref").run()
    return _per_key(read_parts(tmp_path / "ref"), ["batch", "row"])


def _assert_equal_per_key(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert np.array_equal(got[k], want[k]), f"key {k}"


def _committed(broker: str, topic: str, group: str = "psann-stream") -> list[int]:
    c = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)]
    finally:
        c.close()


def _ends(broker: str, topic: str) -> list[int]:
    c = Consumer({"bootstrap.servers": broker, "group.id": "probe"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in (0, 1)]
    finally:
        c.close()


def _assert_each_row_once(out: pa.Table, n: int) -> None:
    ids = set(zip(out["partition"].to_pylist(), out["offset"].to_pylist(), out["row"].to_pylist()))
    assert out.num_rows == n and len(ids) == n


def test_a_kafka_stream_is_learned_as_the_same_rows_from_a_file(broker, tmp_path):
    table = _table(9000)
    topic = _topic(broker, "learned", table)
    committed_at_checkpoints = []
    src = KafkaSource(broker, topic)
    engine = Engine(src, KeyedLearner(_net(), per_key_weights=True), COLUMNS, output=tmp_path / "out",
                    checkpoint=CheckpointPolicy(tmp_path / "ckpt", every_events=3000),
                    hooks={"on_checkpoint": lambda step, path: committed_at_checkpoints.append(_committed(broker, topic))})
    try:
        stats = engine.run()
    finally:
        src.close()
    out = read_parts(tmp_path / "out")
    _assert_each_row_once(out, 9000)
    assert stats.rows_in == stats.predicted == 9000
    _assert_equal_per_key(_per_key(out, ["partition", "offset", "row"]), _reference(tmp_path, table))
    # offsets reach the group only after a checkpoint covering them, and end at the partitions' ends
    assert committed_at_checkpoints[-1] == _ends(broker, topic)
    assert all(a <= b for a, b in zip(committed_at_checkpoints[0], committed_at_checkpoints[-1]))
    assert committed_at_checkpoints[0] != committed_at_checkpoints[-1]


def test_resuming_inside_a_message_repeats_and_loses_nothing(broker, tmp_path):
    table = _table(6000, seed=1)
    topic = _topic(broker, "inside", table, batch_size=1000)
    ckpt = CheckpointPolicy(tmp_path / "ckpt", every_events=100_000)
    for max_events, resume in ((1234, False), (2345, True), (None, True)):
        src = KafkaSource(broker, topic)
        try:
            Engine(src, KeyedLearner(_net(), per_key_weights=True), COLUMNS, output=tmp_path / "out",
                   checkpoint=ckpt).run(max_events, resume=resume)
        finally:
            src.close()
        if max_events is not None:
            position = load_latest(tmp_path / "ckpt")[1]["position"]
            assert any(row > 0 for _, _, row in position["offsets"])  # stopped inside a message
    out = read_parts(tmp_path / "out")
    _assert_each_row_once(out, 6000)
    _assert_equal_per_key(_per_key(out, ["partition", "offset", "row"]), _reference(tmp_path, table))


def test_a_consumer_killed_and_resumed_loses_and_repeats_no_row(broker, tmp_path):
    table = _table(60_000, seed=2)
    topic = _topic(broker, "killed", table, batch_size=500)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[model]\nhidden = [6, 6]\nseed = 1\n[learner]\nper_key_weights = true\n")
    cli = [sys.executable, "-m", "psann_stream.cli", "run", "--kafka", broker, "--topic", topic, "--features", "x",
           "--target", "y", "--key", "k", "--config", str(cfg), "--checkpoint-dir", str(tmp_path / "ckpt"),
           "--checkpoint-every", "3000", "--output", str(tmp_path / "out")]
    kill_after_first_checkpoint(cli, tmp_path / "ckpt")
    step, _ = load_latest(tmp_path / "ckpt")
    assert 0 < step < 60_000
    assert sum(_committed(broker, topic)) < sum(_ends(broker, topic))  # the group has not seen the end yet
    done = subprocess.run([*cli, "--resume"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    out = read_parts(tmp_path / "out")
    _assert_each_row_once(out, 60_000)
    _assert_equal_per_key(_per_key(out, ["partition", "offset", "row"]), _reference(tmp_path, table))
    assert _committed(broker, topic) == _ends(broker, topic)


def test_kafka_errors_name_the_topic_partition_and_offset(broker, tmp_path):
    with pytest.raises(ConfigError, match="'absent' .* does not exist"):
        KafkaSource(broker, "absent")
    topic = _topic(broker, "garbage", _table(100))
    p = Producer({"bootstrap.servers": broker, **ONE_PER_BATCH})
    p.produce(topic, value=b"not arrow", partition=0)
    p.flush(10)
    src = KafkaSource(broker, topic)
    engine = Engine(src, KeyedLearner(_net(), per_key_weights=True), COLUMNS)
    try:
        with pytest.raises(BadInputError, match=r"partition 0, offset \d+: the message value is not an Arrow IPC stream"):
            engine.run()
    finally:
        src.close()
    other = KafkaSource(broker, topic, partitions=[0])
    with pytest.raises(ConfigError, match="Resume with the same topic and partitions"):
        other.position_from_state({"topic": topic, "offsets": [[0, 1, 0], [1, 1, 0]]})


def test_kafka_partitions_feed_ray_shards(broker, tmp_path):
    """The distributed path end to end: Kafka source -> engine -> 2 Ray shards."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from psann_stream.adapters.ray import ShardedLearner

    table = _table(8000, seed=3)
    topic = _topic(broker, "to-ray", table)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    src = KafkaSource(broker, topic)
    try:
        lrn = ShardedLearner(_net(), 2, num_cpus=0.5)
        Engine(src, lrn, COLUMNS, output=tmp_path / "out", checkpoint=CheckpointPolicy(tmp_path / "ckpt", 2500)).run()
        lrn.close()
    finally:
        src.close()
        ray.shutdown()
    out = read_parts(tmp_path / "out")
    _assert_each_row_once(out, 8000)
    _assert_equal_per_key(_per_key(out, ["partition", "offset", "row"]), _reference(tmp_path, table))
    assert _committed(broker, topic) == _ends(broker, topic)


def test_missing_extras_say_how_to_install_them(monkeypatch):
    """Without the optional packages the adapters import, and using them names the extra."""
    from psann_stream.adapters import kafka, ray as ray_adapter

    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'psann-stream\[kafka\]'"):
        KafkaSource("127.0.0.1:1", "t")
    with pytest.raises(ConfigError, match=r"pip install 'psann-stream\[ray\]'"):
        ray_adapter.ShardedLearner(_net(), 2)
    pos = kafka.KafkaPosition("t", ((0, 5, 0), (1, 7, 0)), partition=1, offset=7, row=0)
    assert pos.after(3, 3).offsets == ((0, 5, 0), (1, 8, 0)) and pos.after(2, 3).offsets == ((0, 5, 0), (1, 7, 2))


def test_following_a_topic_stops_at_max_events_and_resumes_there(broker, tmp_path):
    """until=None keeps polling for new messages; max_events ends a run, and the next run (resume)
    starts at the exact row after it."""
    table = _table(3000, seed=5)
    topic = _topic(broker, "follow", table, batch_size=400)
    ckpt = CheckpointPolicy(tmp_path / "ckpt")
    for n, resume in ((1700, False), (1300, True)):
        src = KafkaSource(broker, topic, until=None, poll_timeout=0.2)
        try:
            stats = Engine(src, KeyedLearner(_net(), per_key_weights=True), COLUMNS, output=tmp_path / "out",
                           checkpoint=ckpt).run(n, resume=resume)
        finally:
            src.close()
    assert stats.rows_in == 3000
    out = read_parts(tmp_path / "out")
    _assert_each_row_once(out, 3000)
    _assert_equal_per_key(_per_key(out, ["partition", "offset", "row"]), _reference(tmp_path, table))


def test_a_kafka_config_section_reaches_librdkafka_and_never_echoes_a_secret(broker, tmp_path, capsys):
    """[kafka] settings are passed to the consumer (a bad one is refused by librdkafka, named); a
    secret pasted into the wrong setting is redacted from the error; the section needs --kafka."""
    from psann_stream.cli import main

    topic = _topic(broker, "cfg-section", _table(300))
    cfg = tmp_path / "k.toml"
    cfg.write_text('[kafka]\n"client.id" = "psann-test"\n"sasl.password" = "hunter2"\n"security.protocol" = "hunter2"\n')
    base = ["run", "--kafka", broker, "--topic", topic, "--features", "x", "--target", "y", "--key", "k"]
    assert main([*base, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "security.protocol" in err and "***" in err and "hunter2" not in err and "Traceback" not in err
    with pytest.raises(ConfigError) as info:
        KafkaSource(broker, topic, config={"ssl.key.password": "s3cret", "security.protocol": "s3cret"})
    assert "security.protocol" in str(info.value) and "s3cret" not in str(info.value)
    cfg.write_text('[kafka]\n"client.id" = "psann-test"\n')
    assert main([*base, "--config", str(cfg), "--output", str(tmp_path / "out")]) == 0
    assert read_parts(tmp_path / "out").num_rows == 300
    table = tmp_path / "t.arrow"
    with pa.ipc.new_file(str(table), _table(10).schema) as w:
        w.write_table(_table(10))
    assert main(["run", "--input", str(table), "--features", "x", "--target", "y", "--config", str(cfg)]) == 2
    assert "[kafka] section, but neither the input nor the output is Kafka" in capsys.readouterr().err


def test_the_metrics_endpoint_reports_the_input_lag_per_partition(broker, tmp_path):
    """Mid-run the run is behind its topic by the messages it has not read; at the end by none."""
    import urllib.request

    from psann_stream.observe import EngineMetrics

    topic = _topic(broker, "lag", _table(3000), batch_size=100)  # 30 messages over 2 partitions
    engine = Engine(KafkaSource(broker, topic), KeyedLearner(_net()), ColumnMap("x", target="y", key="k"),
                    checkpoint=CheckpointPolicy(tmp_path / "ckpt", every_events=1000))
    metrics = EngineMetrics(engine, max_keys=0)
    port = metrics.serve(0)

    def lag() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("psann_input_lag_messages{")]
        return {ln.split('"')[1]: float(ln.rsplit(" ", 1)[1]) for ln in lines}

    seen = []
    engine.hooks["on_checkpoint"] = lambda step, path: seen.append((step, lag()))
    try:
        engine.run()
        end = lag()
    finally:
        metrics.close()
        engine.source.close()
    total = sum(_ends(broker, topic))
    step, first = seen[0]
    assert 1000 <= step < 3000 and set(first) == {"0", "1"}
    assert 0 < sum(first.values()) < total  # part of the topic read at the first checkpoint
    assert [sum(lagged.values()) for _, lagged in seen] == sorted((sum(lagged.values()) for _, lagged in seen), reverse=True)
    assert end == {"0": 0.0, "1": 0.0}


@pytest.mark.slow
def test_kafka_output_killed_at_random_points_holds_each_prediction_once_after_dedupe(broker, tmp_path):
    """10 trials: a run writing predictions to a topic is SIGKILLed at a random moment, then resumed
    to the end. The topic may repeat the rows after the last checkpoint (at least once); after the
    documented dedupe (first row per source position, read_predictions) it holds every input row
    exactly once, with the prediction of an uninterrupted run, bit for bit."""
    import random
    import time as clock

    from processes import kill_session
    from psann_stream.adapters.kafka import read_predictions

    n = 12000
    table = _table(n, seed=3).rename_columns(["x", "y", "key"])
    src = tmp_path / "in.arrow"
    with pa.ipc.new_file(str(src), table.schema) as w:
        for b in table.to_batches(max_chunksize=500):
            w.write_batch(b)
    cfg = tmp_path / "k.toml"
    cfg.write_text('[kafka]\n"batch.num.messages" = 1\n')  # tansu's watermarks (ONE_PER_BATCH)
    base = [sys.executable, "-m", "psann_stream.cli", "run", "--input", str(src), "--features", "x", "--target", "y",
            "--key", "key", "--checkpoint-every", "1000", "--progress-every", "1000"]
    ref = subprocess.run([*base, "--output", str(tmp_path / "ref"), "--checkpoint-dir", str(tmp_path / "ref-ck")],
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    want = read_parts(tmp_path / "ref")
    want = {(b, r): p for b, r, p in zip(want["batch"].to_pylist(), want["row"].to_pylist(), want["prediction"].to_pylist())}
    rng = random.Random(7)
    killed = repeated = 0
    for trial in range(10):
        topic = f"preds-{trial}"
        create_topic(broker, topic, 2)
        cmd = [*base, "--kafka-out", broker, "--out-topic", topic, "--config", str(cfg),
               "--checkpoint-dir", str(tmp_path / f"ck{trial}")]
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ckpt = tmp_path / f"ck{trial}"
        while not any(ckpt.glob("ckpt-*.psck")) and proc.poll() is None:
            clock.sleep(0.005)
        clock.sleep(rng.uniform(0.0, 0.6))  # a random moment after the first checkpoint
        if proc.poll() is None:
            killed += 1
        kill_session(proc)
        done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        raw = _count_messages_rows(broker, topic)
        got = read_predictions(broker, topic)
        repeated += raw - got.num_rows
        pairs = list(zip(got["batch"].to_pylist(), got["row"].to_pylist()))
        assert len(pairs) == n and set(pairs) == set(want)  # every input row once
        assert all(p == want[k] for k, p in zip(pairs, got["prediction"].to_pylist()))  # bit-identical predictions
    assert killed >= 8, killed  # killed mid-run, after a checkpoint (a trial that ended first is not killed)
    print(f"{killed} SIGKILLs in 10 trials; {repeated} repeated rows dropped by the dedupe")


def _count_messages_rows(broker: str, topic: str) -> int:
    """Rows in every message of ``topic``, repeats included."""
    c = Consumer({"bootstrap.servers": broker, "group.id": "count", "enable.auto.commit": False})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in (0, 1)}
        c.assign([TopicPartition(topic, p, 0) for p in ends if ends[p] > 0])
        rows, left = 0, {p for p in ends if ends[p] > 0}
        while left:
            m = c.poll(10)
            assert m is not None and m.error() is None
            rows += pa.ipc.open_stream(m.value()).read_all().num_rows
            if m.offset() + 1 >= ends[m.partition()]:
                left.discard(m.partition())
        return rows
    finally:
        c.close()


@pytest.mark.parametrize("fmt", ["arrow", "json"])
def test_a_kafka_sink_writes_what_part_files_hold_keyed_to_partitions(broker, tmp_path, fmt):
    """The same run to part files and to a topic gives the same rows; each key's rows sit in the
    partition shard_of(key) in their order; a missing output topic is a one-line error."""
    from psann_stream.adapters.kafka import KafkaSink, read_predictions
    from psann_stream.keys import shard_of

    table = _table(1500, seed=5)
    topic = f"sink-{fmt}"
    create_topic(broker, topic, 2)

    def run(output):
        Engine(TableSource(table, batch_size=300), KeyedLearner(_net()), COLUMNS, output=output,
               checkpoint=CheckpointPolicy(tmp_path / f"ck-{fmt}-{type(output).__name__}", every_events=600)).run()

    run(str(tmp_path / f"parts-{fmt}"))
    run(KafkaSink(broker, topic, fmt=fmt, config=ONE_PER_BATCH))
    want = read_parts(tmp_path / f"parts-{fmt}")
    got = read_predictions(broker, topic)
    order = sorted(range(got.num_rows), key=lambda i: (got["batch"][i].as_py(), got["row"][i].as_py()))
    for col in ("batch", "row", "key", "prediction", "target"):
        assert [got[col][i].as_py() for i in order] == want[col].to_pylist()
    c = Consumer({"bootstrap.servers": broker, "group.id": "keys", "enable.auto.commit": False})
    try:
        for p in (0, 1):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            c.assign([TopicPartition(topic, p, 0)])
            for _ in range(high):
                m = c.poll(10)
                assert shard_of(int(m.key()), 2) == p
    finally:
        c.close()
    with pytest.raises(ConfigError, match="output topic 'nope' .* does not exist"):
        KafkaSink(broker, "nope")


def test_delayed_labels_from_kafka_to_kafka_equal_the_same_rows_from_a_table(broker, tmp_path):
    """Kafka in (events and their later labels in one partition) -> DelayedLabels -> Kafka out, with
    a checkpointed stop in the middle and a resume: the predictions equal the same rows read from a
    table, and the expired predictions and unknown labels are dead-lettered."""
    from psann_stream.adapters.kafka import KafkaSink, read_predictions
    from psann_stream.delayed import DelayedLabels

    from test_engine_delayed import _columns, _events, _learner

    table, *_ = _events(keyed=True)
    topic = "delayed-in"
    create_topic(broker, topic, 1)  # one partition: the labels follow their events in stream order
    produce_table(broker, topic, table, batch_size=50, config=ONE_PER_BATCH)
    create_topic(broker, "delayed-out", 1)
    Engine(TableSource(table, 50), _learner(keyed=True), _columns(keyed=True), output=tmp_path / "ref",
           dead_letter=tmp_path / "ref-dead", on_bad_input="dead-letter").run()

    def run(max_events=None, resume=False):
        learner = _learner(keyed=True)
        assert isinstance(learner, DelayedLabels)
        return Engine(KafkaSource(broker, topic, until="end"), learner, _columns(keyed=True),
                      output=KafkaSink(broker, "delayed-out", config=ONE_PER_BATCH), dead_letter=tmp_path / "dead",
                      on_bad_input="dead-letter", checkpoint=CheckpointPolicy(tmp_path / "ck", every_events=60)
                      ).run(max_events=max_events, resume=resume)

    run(max_events=130)
    stats = run(resume=True)
    want, got = read_parts(tmp_path / "ref"), read_predictions(broker, "delayed-out")
    got = got.sort_by([("offset", "ascending"), ("row", "ascending")])
    assert got.num_rows == want.num_rows == stats.predicted
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want["prediction"].to_numpy())
    assert read_parts(tmp_path / "dead")["reason"].to_pylist() == read_parts(tmp_path / "ref-dead")["reason"].to_pylist()


def test_labels_from_a_second_topic_merge_by_time_and_resume_exactly(broker, tmp_path):
    """Events on one topic, their labels on another: merged by time, stopped after a checkpoint and
    resumed, the predictions equal the same rows in one table; both topics' offsets are committed."""
    from psann_stream.merge import MergedSource

    from test_engine_delayed import _learner
    from test_merge import COLUMNS as MERGED, _streams

    events, labels, one = _streams()
    for name, t in (("ev-topic", events), ("lb-topic", labels)):
        create_topic(broker, name, 1)
        produce_table(broker, name, t, batch_size=30, config=ONE_PER_BATCH)
    Engine(TableSource(one, 30), _learner(), MERGED, output=tmp_path / "ref").run()

    def run(max_events=None, resume=False):
        src = MergedSource(KafkaSource(broker, "ev-topic", group_id="merged"), KafkaSource(broker, "lb-topic", group_id="merged"),
                           time="t")
        try:
            return Engine(src, _learner(), MERGED, output=tmp_path / "out",
                          checkpoint=CheckpointPolicy(tmp_path / "ck", every_events=50)).run(max_events=max_events, resume=resume)
        finally:
            src.close()

    run(max_events=140)
    run(resume=True)
    want, got = read_parts(tmp_path / "ref"), read_parts(tmp_path / "out")
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want["prediction"].to_numpy())
    c = Consumer({"bootstrap.servers": broker, "group.id": "merged"})
    try:
        for topic in ("ev-topic", "lb-topic"):
            (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
            assert tp.offset == c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1] > 0
    finally:
        c.close()
