"""Scale-out on a real local Ray (``ray.init(num_cpus=2)``): 2 shards give the single-process
engine's output bit for bit, a killed shard recovers to the same output, checkpoints rescale
2 -> 3 shards -> one process, backpressure bounds the batches in flight, and a killed driver
resumes through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # before Ray is imported: no token file in ~/.ray

import numpy as np
import pyarrow as pa
import pytest
import ray
import torch

from psann_stream import ColumnMap, ConfigError, KeyedLearner, StateConfig, StatefulNet
from psann_stream.adapters.ray import ShardedLearner, run_with_recovery, shard_of
from psann_stream.checkpoint import load_latest
from psann_stream.engine import CheckpointPolicy, Engine
from psann_stream.sinks import read_parts
from psann_stream.io import TableSource
from processes import kill_after_first_checkpoint

N, F = 12_000, 4
COLUMNS = ColumnMap("x", target="y", key="k")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _table(n: int = N, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 40, n)
    x = rng.standard_normal((n, F)).astype(np.float32)
    y = np.sin(x.astype(np.float64).sum(axis=1) + 0.3 * k)
    return pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), F),
        "y": y,
        "k": pa.array([f"sensor-{i}" for i in k]),  # str keys: hashing must not depend on the process
    })


def _net() -> StatefulNet:
    return StatefulNet(F, hidden=(8, 8), seed=3)


def _local_run(tmp_path, table: pa.Table) -> tuple[pa.Table, dict]:
    lrn = KeyedLearner(_net(), per_key_weights=True)
    Engine(TableSource(table, 1000), lrn, COLUMNS, output=tmp_path / "local").run()
    return read_parts(tmp_path / "local"), lrn.state_dict()


def _assert_same_keys_state(a: dict, b: dict) -> None:
    """Same keys and per-key rows, bit for bit; of the monitor's statistics all but the last (the
    peak step since the last monitor check: checks run every ``check_every`` events of a shard)."""
    assert a["keys"] == b["keys"]
    for name in a["rows"]:
        ta, tb = (a["rows"][name], b["rows"][name]) if name != "mon" else (a["rows"][name][:, :-1], b["rows"][name][:, :-1])
        assert torch.equal(ta, tb), name
    assert torch.equal(a["n_learned_rows"], b["n_learned_rows"])


def _engine_killing_a_shard(table: pa.Table, lrn: ShardedLearner, tmp_path, *, batch: int, shard: int,
                            every: int) -> tuple[Engine, list]:
    """An engine that checkpoints every ``every`` rows and kills shard ``shard`` once, at batch
    ``batch`` (after a checkpoint, before the next); the list receives the killed actor."""
    killed: list = []

    def kill_once(pos, ev):
        if pos.batch == batch and not killed:
            killed.append(lrn.actors[shard])
            ray.kill(lrn.actors[shard])

    engine = Engine(TableSource(table, 1000), lrn, COLUMNS, output=tmp_path / "ray",
                    checkpoint=CheckpointPolicy(tmp_path / "ckpt", every_events=every), hooks={"on_batch": kill_once})
    return engine, killed


def test_two_shards_equal_the_single_process_engine(ray_cluster, tmp_path):
    table = _table()
    want, want_state = _local_run(tmp_path, table)
    lrn = ShardedLearner(_net(), 2, num_cpus=0.5)
    try:
        Engine(TableSource(table, 1000), lrn, COLUMNS, output=tmp_path / "ray").run()
        got = read_parts(tmp_path / "ray")
        assert got.equals(want)  # every column, bit for bit, in source order
        _assert_same_keys_state(lrn.state_dict(), want_state)
        both = {shard_of(k, 2) for k in lrn.keys}
        assert both == {0, 1}  # both shards held keys
    finally:
        lrn.close()


def test_backpressure_bounds_the_batches_in_flight(ray_cluster, tmp_path):
    lrn = ShardedLearner(_net(), 2, num_cpus=0.5)
    seen = []
    engine = Engine(TableSource(_table(4000), 100), lrn, COLUMNS, max_in_flight=3,
                    hooks={"on_batch": lambda pos, ev: seen.append(len(engine._in_flight))})
    try:
        engine.run()
    finally:
        lrn.close()
    assert max(seen) == 3  # pipelined up to the bound, never beyond
    assert engine.stats.predicted == 4000


def test_a_killed_shard_recovers_to_the_uninterrupted_output(ray_cluster, tmp_path):
    table = _table()
    want, want_state = _local_run(tmp_path, table)
    lrn = ShardedLearner(_net(), 2, num_cpus=0.5)
    engine, killed = _engine_killing_a_shard(table, lrn, tmp_path, batch=7, shard=0, every=5000)
    try:
        stats = run_with_recovery(engine)
        assert killed and killed[0] not in lrn.actors  # a shard died and was replaced
        assert read_parts(tmp_path / "ray").equals(want)
        assert stats.rows_in == stats.predicted == N
        _assert_same_keys_state(lrn.state_dict(), want_state)
    finally:
        lrn.close()


def test_checkpoints_rescale_two_to_three_shards_then_to_one_process(ray_cluster, tmp_path):
    table = _table()
    want, want_state = _local_run(tmp_path, table)
    ckpt = CheckpointPolicy(tmp_path / "ckpt", every_events=2000)
    out = tmp_path / "out"
    two = ShardedLearner(_net(), 2, num_cpus=0.5)
    try:
        Engine(TableSource(table, 1000), two, COLUMNS, output=out, checkpoint=ckpt).run(max_events=5000)
    finally:
        two.close()
    three = ShardedLearner(_net(), 3, num_cpus=0.5)
    try:
        Engine(TableSource(table, 1000), three, COLUMNS, output=out, checkpoint=ckpt).run(max_events=4000, resume=True)
        assert {shard_of(k, 3) for k in three.keys} == {0, 1, 2}
    finally:
        three.close()
    one = KeyedLearner(_net(), per_key_weights=True)
    Engine(TableSource(table, 1000), one, COLUMNS, output=out, checkpoint=ckpt).run(resume=True)
    assert read_parts(out).equals(want)
    _assert_same_keys_state(one.state_dict(), want_state)


def test_shard_of_is_the_same_in_another_process_with_another_hash_seed():
    keys = ["a", "sensor-17", "", "ü", 0, 7, -3, 2**40, 1.5, True]
    here = [shard_of(k, 5) for k in keys]
    code = ("import json, sys; from psann_stream.adapters.ray import shard_of; "
            f"print(json.dumps([shard_of(k, 5) for k in {keys!r}]))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "12345"},
                         capture_output=True, text=True, check=True).stdout
    assert [int(v) for v in out.strip()[1:-1].split(",")] == here
    assert len(set(shard_of(f"k{i}", 5) for i in range(200))) == 5  # spreads over every shard
    with pytest.raises(ConfigError, match="cannot be sharded"):
        shard_of(("tuple", 1), 2)


def test_configuration_errors_say_what_to_change(ray_cluster):
    with pytest.raises(ConfigError, match="per_key_weights=True"):
        ShardedLearner(_net(), 2, num_cpus=0.5, per_key_weights=False)
    with pytest.raises(ConfigError, match="need 6 CPUs but the Ray cluster has 2"):
        ShardedLearner(_net(), 3, num_cpus=2)
    with pytest.raises(ConfigError, match="shards = 0"):
        ShardedLearner(_net(), 0)


def test_a_killed_driver_resumes_through_the_cli(tmp_path):
    """The whole driver (CLI process, its local Ray and the shard actors) is SIGKILLed after its
    first checkpoint; ``--resume`` finishes the run with the uninterrupted output."""
    table = _table(30_000)
    path = tmp_path / "in.arrow"
    with pa.ipc.new_file(path, table.schema) as w:
        w.write_table(table, max_chunksize=500)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[model]\nhidden = [8, 8]\nseed = 3\n[learner]\nper_key_weights = true\n")
    common = ["--input", str(path), "--features", "x", "--target", "y", "--key", "k", "--config", str(cfg),
              "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "2000"]
    cli = [sys.executable, "-m", "psann_stream.cli", "run", *common, "--ray", "--shards", "2", "--ray-cpus", "2"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    kill_after_first_checkpoint([*cli, "--output", str(tmp_path / "out")], tmp_path / "ckpt", env=env)
    step, _ = load_latest(tmp_path / "ckpt")
    assert 0 < step < 30_000  # killed between its first checkpoint and the end
    done = subprocess.run([*cli, "--output", str(tmp_path / "out"), "--resume"], env=env, capture_output=True,
                          text=True, timeout=180, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    local = subprocess.run([sys.executable, "-m", "psann_stream.cli", "run", *common[:-4], "--output",
                            str(tmp_path / "local")], capture_output=True, text=True, timeout=180)
    assert local.returncode == 0, local.stderr[-2000:]
    got, want = read_parts(tmp_path / "out"), read_parts(tmp_path / "local")
    assert got.num_rows == 30_000 and got.equals(want)


def test_drift_resets_on_shards_equal_the_single_process_ones(ray_cluster, tmp_path):
    from psann_stream.drift import DriftPolicy

    table, policy = _table(6000, seed=4), DriftPolicy(threshold=3.0, min_instances=10, reset_optimizer=True)
    found = {"local": [], "ray": []}

    def engine(lrn, name):
        return Engine(TableSource(table, 1000), lrn, COLUMNS, output=tmp_path / name,
                      hooks={"on_drift": lambda key, pos, row: found[name].append((key, pos.batch, row))})

    engine(KeyedLearner(_net(), per_key_weights=True, drift=policy), "local").run()
    lrn = ShardedLearner(_net(), 2, num_cpus=0.5, drift=policy)
    try:
        engine(lrn, "ray").run()
    finally:
        lrn.close()
    assert len(found["local"]) > 3 and found["ray"] == found["local"]
    assert read_parts(tmp_path / "ray").equals(read_parts(tmp_path / "local"))


def test_traced_oscillatory_rls_shards_recover_to_the_single_process_output(ray_cluster, tmp_path):
    """Traces and RLS readouts are per-key rows like the state: with the recommended configuration
    (oscillatory pairs, traced learning, RLS readout), a killed shard that resumes from the last
    checkpoint gives the single process's output and every key's rows (traces and readout matrices
    included) bit for bit."""
    table = _table(6000)
    net = lambda: StatefulNet(F, hidden=(8, 8), state=StateConfig(oscillatory=True), seed=3)  # noqa: E731
    local = KeyedLearner(net(), per_key_weights=True, state_grad="traced", readout="rls")
    Engine(TableSource(table, 1000), local, COLUMNS, output=tmp_path / "local").run()
    want, want_state = read_parts(tmp_path / "local"), local.state_dict()
    assert float(want_state["rows"]["traces"].abs().max()) > 0
    lrn = ShardedLearner(net(), 2, num_cpus=0.5, state_grad="traced", readout="rls")
    engine, killed = _engine_killing_a_shard(table, lrn, tmp_path, batch=4, shard=1, every=3000)
    try:
        run_with_recovery(engine)
        assert killed and killed[0] not in lrn.actors
        assert read_parts(tmp_path / "ray").equals(want)
        _assert_same_keys_state(lrn.state_dict(), want_state)
    finally:
        lrn.close()


def test_shards_learn_several_targets_as_one_process(ray_cluster, tmp_path):
    """Three target columns through two shards: the output equals the single-process engine's."""
    table = _table(3000)
    y = table.column("y").to_numpy()
    table = table.append_column("y2", pa.array(np.cos(3 * y))).append_column("y3", pa.array(y ** 2))
    cols = ColumnMap("x", target=["y", "y2", "y3"], key="k")
    net = lambda: StatefulNet(F, 3, hidden=(8,), seed=0)  # noqa: E731
    Engine(TableSource(table, 500), KeyedLearner(net(), per_key_weights=True, monitor=False), cols,
           output=tmp_path / "local").run()
    lrn = ShardedLearner(net(), 2, num_cpus=0.5, per_key_weights=True, monitor=False)
    try:
        assert lrn.n_outputs == 3
        Engine(TableSource(table, 500), lrn, cols, output=tmp_path / "ray").run()
        got, want = read_parts(tmp_path / "ray"), read_parts(tmp_path / "local")
        assert got.equals(want) and np.array(got.column("prediction").to_pylist()).shape == (3000, 3)
    finally:
        lrn.close()
