"""The benchmark scripts keep working (tiny sizes; their numbers are not checked: speed is measured
by running them, never asserted in tests)."""

from __future__ import annotations

import re

from psann_stream.scenarios import bench_engine, bench_learner


def test_engine_benchmark_runs_and_prints_both_rates(capsys):
    bench_engine.main(["--rows", "20000", "--batch", "4096", "--repeats", "1", "--keyed-rows", "12000", "--keys", "500"])
    out = capsys.readouterr().out
    assert re.search(r"raw pyarrow read .* rows/s", out) and re.search(r"Engine, trivial learner.* rows/s", out)
    assert re.search(r"Engine over the Arrow file, same learner .* rows/s .*x learn_batch", out)
    per_row = float(re.search(r"([0-9.]+) new Python objects per row", out).group(1))
    assert per_row < 0.2  # one object per row (a str per key) would read ~1


def test_learner_benchmark_runs_and_prints_every_rate(capsys):
    bench_learner.main(["--events", "2000", "--eager-events", "50", "--keys", "10", "--repeats", "1"])
    out = capsys.readouterr().out
    for name in ("Learner (compiled, ObGD), learn_batch", "Learner (compiled, ObGD), learn_one", "Learner, traced",
                 "Learner, 7 outputs", "Ensemble (default_ensemble), learn_batch", "Ensemble, predict_one + learn_one",
                 "Learner, traced, oscillatory pairs", "eager torch Adam", "river LinearRegression",
                 "river StandardScaler | LinearRegression", "StatefulRegressor (river adapter, Adam)",
                 "StatefulRegressor (river adapter, ObGD)", "KeyedLearner (10 keys"):
        assert name in out
    for rate in re.findall(r"^(?:Learner|Ensemble|StatefulRegressor|river|KeyedLearner).*?\s([0-9,]+)\s", out, re.M):
        assert int(rate.replace(",", "")) > 0
    assert re.search(r"traced learning costs [0-9.]+x the truncated path", out)
    assert re.search(r"seven outputs [0-9.]+x \(seven learners would cost 7x\)", out)
    assert re.search(r"predict_one \+ learn_one at [0-9.]+x river LinearRegression", out)


def test_ray_benchmark_runs_and_prints_both_engines(capsys):
    from psann_stream.scenarios import bench_ray

    bench_ray.main(["--rows", "20000", "--keys", "50", "--batch", "4096"])
    out = capsys.readouterr().out
    assert re.search(r"single process, KeyedLearner .* rows/s", out) and re.search(r"Ray, 2 shards .* rows/s", out)


def test_bench_measures_rate_latency_and_memory_per_model():
    from psann_stream.scenarios.bench import measure

    for name, n in (("psann_stream learn_batch", 2000), ("psann_stream learn_one", 300),
                    ("psann_stream recommended learn_batch", 2000), ("river LinearRegression", 300)):
        r = measure(name, n)
        assert r["events"] == n and r["events_per_s"] > 0 and r["peak_mb"] >= 0
        assert 0 < r["p50_us"] <= r["p99_us"]
        assert r["p50_us"] * 1e-6 * 0.5 <= 1 / r["events_per_s"]  # the calls are most of the time
