"""Metrics for a long-running run: a Prometheus scrape in the middle of a run returns every series
with the values the engine holds at that moment; the faded error ignores what it cannot score."""

from __future__ import annotations

import urllib.request

import numpy as np
import pyarrow as pa
import pytest

from psann_stream import ColumnMap, KeyedLearner, StatefulNet
from psann_stream.engine import CheckpointPolicy, Engine
from psann_stream.io import TableSource
from psann_stream.observe import EngineMetrics, FadedError


def _table(n: int = 6000, keys: int = 30) -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = np.sin(x.sum(axis=1)).astype(np.float64)
    y[2500] = np.nan  # one bad row, dead-lettered
    return pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3), "y": pa.array(y),
                     "key": pa.array([f"k{i % keys}" for i in range(n)])})


def _parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _run_and_scrape(engine: Engine, **kwargs) -> dict[str, float]:
    """Run ``engine`` to its end with an :class:`EngineMetrics` (``kwargs``) attached, then scrape it once."""
    metrics = EngineMetrics(engine, **kwargs)
    port = metrics.serve(0)
    try:
        engine.run()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return _parse(r.read().decode())
    finally:
        metrics.close()


def test_a_scrape_during_a_run_returns_every_series_with_the_engines_values(tmp_path):
    engine = Engine(TableSource(_table(), batch_size=500), KeyedLearner(StatefulNet(3, hidden=(8,), seed=0)),
                    ColumnMap("x", target="y", key="key"), on_bad_input="dead-letter", dead_letter=tmp_path / "dead",
                    checkpoint=CheckpointPolicy(tmp_path / "ckpt", every_events=2000))
    metrics = EngineMetrics(engine, max_keys=10)
    port = metrics.serve(0)
    scraped = {}

    def scrape(step, path):
        if step == 4000:  # the second checkpoint, two thirds into the run
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                scraped.update(_parse(r.read().decode()))
            scraped["at_rows_in"] = engine.stats.rows_in

    engine.hooks["on_checkpoint"] = scrape
    try:
        engine.run()
    finally:
        metrics.close()
    assert scraped["psann_rows_in_total"] == 4000 and scraped["at_rows_in"] == 4000
    assert scraped["psann_rows_dead_lettered_total"] == 1
    assert scraped["psann_rows_predicted_total"] == 3999  # every row read is predicted or dead-lettered
    assert scraped["psann_checkpoints_total"] == 2
    assert 0.0 <= scraped["psann_checkpoint_age_seconds"] < 60 and scraped["psann_checkpoint_duration_seconds"] > 0
    assert scraped["psann_events_per_second"] > 0
    assert 0.0 < scraped["psann_faded_mae"] < 2.0  # finite: the NaN target was left out
    keys = {k: v for k, v in scraped.items() if k.startswith("psann_key_rows_total")}
    assert len(keys) == 11  # the first 10 keys seen, and the other 20 together (bounded cardinality)
    assert keys['psann_key_rows_total{key="k0"}'] == 134  # rows 0, 30, ..., 3990
    assert keys['psann_key_rows_total{key="other"}'] == 4000 - sum(v for k, v in keys.items() if "other" not in k)


def test_an_ensembles_mixture_weights_are_exported_per_member_and_target():
    """psann_ensemble_weight{member,target}: the weights the next event will be mixed with, named by
    member and target column, summing to 1 per target; psann_ensemble_outliers_total{target}: the
    events every member missed by far, per target."""
    from psann_stream.ensemble import Ensemble
    from psann_stream.experts import LinearRLS, Persistence

    rng = np.random.default_rng(1)
    X = rng.standard_normal((1500, 3))
    b = 2 * X[:, 1]
    b[[700, 900]] = 1e9  # outliers of target b that every member misses: counted, left out of the weights
    t = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 3), "a": X[:, 0], "b": b})
    ens = Ensemble({"last": Persistence(3, column=[0, 2]), "linear": LinearRLS(3, n_outputs=2)})
    engine = Engine(TableSource(t, batch_size=500), ens, ColumnMap("x", target=["a", "b"]))
    scraped = _run_and_scrape(engine, max_keys=0)
    got = {k: v for k, v in scraped.items() if k.startswith("psann_ensemble_weight")}
    assert scraped['psann_ensemble_outliers_total{target="a"}'] == 0
    assert scraped['psann_ensemble_outliers_total{target="b"}'] == 2 == ens.n_missed_by_all[1]
    assert len(got) == 4
    for t_, target in enumerate(("a", "b")):
        for k, member in enumerate(ens.names):
            assert got[f'psann_ensemble_weight{{member="{member}",target="{target}"}}'] == ens.weight_matrix[t_, k]
    assert got['psann_ensemble_weight{member="last",target="a"}'] > 0.9  # a is input 0: persistence is exact
    assert got['psann_ensemble_weight{member="linear",target="b"}'] > 0.9  # b = 2 x_1: the linear model learns it


@pytest.mark.filterwarnings("ignore::psann_stream.monitor.StabilityWarning")  # the alerts are the point here
def test_alerts_are_counted_by_kind(tmp_path):
    """Unnormalised inputs of scale 1e3 with Adam at lr 1 drive units dormant and gradients to vanish:
    the endpoint counts the learner's alerts by kind."""
    from psann_stream import Learner

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6000, 3)) * 1e3).astype(np.float32)
    t = pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 3),
                  "y": pa.array(np.sin(x.astype(np.float64).sum(axis=1)))})
    learner = Learner(StatefulNet(3, hidden=(8,), seed=0), normalize_x=False, optimizer="adam",
                      optimizer_kwargs={"lr": 1.0})
    engine = Engine(TableSource(t, batch_size=1000), learner, ColumnMap("x", target="y"))
    got = _run_and_scrape(engine)
    kinds = {a.kind for a in learner.alerts}
    assert kinds  # the run did alert
    for kind in kinds:
        assert got[f'psann_alerts_total{{kind="{kind}"}}'] == sum(a.kind == kind for a in learner.alerts)
    assert "psann_checkpoint_age_seconds" not in got  # no checkpoint policy: no checkpoint, no age


def test_the_faded_error_matches_batches_in_order_and_skips_what_it_cannot_score():
    class Batch:
        def __init__(self, y):
            self.y = np.asarray(y, dtype=np.float64)

    f = FadedError(alpha=0.5)
    f.batch(0, Batch([1.0, 2.0]))
    f.batch(1, Batch([np.nan, 5.0, 6.0]))  # read ahead before batch 0 is predicted
    f.predictions(0, np.array([2.0, 2.0]))  # errors 1, 0 against batch 0's targets
    assert f.value == pytest.approx((0 + 0.5 * 1) / (1 + 0.5))
    f.predictions(1, np.array([9.0, 5.0]))  # two predictions for three targets: a dead-lettered row, skipped
    assert f.value == pytest.approx((0 + 0.5 * 1) / (1 + 0.5))
    f.batch(2, Batch([1.0, np.nan]))
    f.predictions(2, np.array([1.0, 1.0]))  # the NaN pair is left out
    assert np.isfinite(f.value)
