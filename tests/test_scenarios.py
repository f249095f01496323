"""Scenario streams, prequential drift metrics and the scenario runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from psann_stream.cli import main
from psann_stream.scenarios.metrics import change_report, faded_mae, summary
from psann_stream.scenarios.run import run_scenario
from psann_stream.scenarios.streams import SCENARIOS


@given(st.lists(st.floats(0, 10), min_size=1, max_size=50), st.floats(0.5, 0.999))
def test_faded_mae_matches_its_definition(errors, alpha):
    e = np.array(errors)
    got = faded_mae(e, alpha)
    w = alpha ** np.arange(len(e) - 1, -1, -1)
    np.testing.assert_allclose(got[-1], (w * e).sum() / w.sum(), rtol=1e-12)


def test_recovery_is_counted_from_the_change_until_back_within_the_band():
    err = np.r_[np.full(200, 0.1), np.full(30, 2.0), np.full(400, 0.1)]
    (r,) = change_report(err, [200], alpha=0.9)
    faded = faded_mae(err, 0.9)
    assert faded[200 + r.recovery_steps] <= 1.1 * r.pre_level < faded[200 + r.recovery_steps - 1]
    assert r.max_after == pytest.approx(faded[200:].max())
    calm = change_report(np.full(300, 0.1), [100], alpha=0.9)[0]
    assert calm.recovery_steps == 0 and calm.excess_area == pytest.approx(0.0, abs=1e-12)
    never = change_report(np.r_[np.full(100, 0.1), np.full(100, 5.0)], [100], alpha=0.9)[0]
    assert never.recovery_steps is None


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_are_seeded_and_have_their_change_points(name):
    a, b = SCENARIOS[name](600, 3), SCENARIOS[name](600, 3)
    assert a.table.equals(b.table) and a.change_points == b.change_points
    assert not a.table.equals(SCENARIOS[name](600, 4).table)
    assert a.table.num_rows == 600 and all(0 < c < 600 for c in a.change_points)
    X, y, keys = a.arrays()
    assert X.shape == (600, a.n_features) and np.isfinite(X).all()
    assert (keys is not None) == a.keyed


def test_runner_scores_every_model_and_cli_writes_json(tmp_path, capsys):
    result = run_scenario("recurring", 3000, 0, ["psann_stream", "river LinearRegression"])
    assert set(result["models"]) == {"psann_stream", "river LinearRegression"}
    ours, lr = result["models"]["psann_stream"], result["models"]["river LinearRegression"]
    assert ours["mae"] < lr["mae"]  # the state disambiguates rising from falling; a linear model cannot
    assert len(ours["changes"]) == 3
    out = tmp_path / "r.json"
    assert main(["scenario", "run", "ar-switch", "--steps", "1000", "--models", "psann_stream,river HATR",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["scenario"] == "ar-switch"
    assert "psann_stream" in capsys.readouterr().out
    assert main(["scenario", "run", "nope"]) == 2
    assert "unknown scenario 'nope'" in capsys.readouterr().err


def test_summary_ignores_nothing_but_non_finite_predictions():
    s = summary(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 2.0]), [])
    assert s["mae"] == pytest.approx(0.5)


def test_the_plot_shows_every_models_faded_error_the_change_points_and_state_against_max_abs(tmp_path):
    from psann_stream.scenarios.metrics import POST_CHANGE
    from psann_stream.scenarios.plots import plot_scenario

    traces: dict = {}
    result = run_scenario("sine-switch", 800, 0, ["psann_stream", "psann_stream (ensemble)", "river HATR"], traces=traces)
    fig = plot_scenario(result, traces, tmp_path / "p.png")
    err_ax, state_ax, mix_ax = fig.axes
    spans = sorted(p.get_x() for p in err_ax.patches)
    assert spans == result["change_points"] and all(p.get_width() == POST_CHANGE for p in err_ax.patches)
    mix = result["psann_state"]["ensemble"]
    assert len(mix_ax.collections) == len(mix["members"]) == len(mix["weights"])
    np.testing.assert_allclose(np.sum(mix["weights"], axis=0), 1.0, rtol=0, atol=1e-12)
    lines = {line.get_label(): line for line in err_ax.get_lines()}
    for model in ("psann_stream", "river HATR"):
        np.testing.assert_array_equal(lines[model].get_ydata(), traces[model])
        assert traces[model][-1] == pytest.approx(result["models"][model]["faded_mae"])
    verticals = [line for line in err_ax.get_lines() if line.get_label().startswith("_")]
    assert sorted(line.get_xdata()[0] for line in verticals) == result["change_points"]
    st = result["psann_state"]
    state_lines = {line.get_label(): line for line in state_ax.get_lines()}
    assert state_lines["max_abs"].get_ydata()[0] == st["max_abs"]
    assert max(max(n) for n in st["layer_max_abs_state"]) <= st["max_abs"]  # the bound held
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_horizon_errors_reset_the_state_feed_back_predictions_and_restore_the_learner():
    from psann_stream import Learner, StatefulNet
    from psann_stream.scenarios.horizons import horizon_errors

    s = SCENARIOS["ramp"](1500, 0)
    X, y, _ = s.arrays()
    lrn = Learner(StatefulNet(4, hidden=(8,), seed=0))
    lrn.learn_batch(X[:1200], y[:1200])
    before = lrn.state_dict()
    h = horizon_errors(lrn, X, y, starts=[1300, 1400, 1495], horizon=6)  # the last start does not fit
    assert h["starts"] == 2 and h["h"] == [1, 2, 3, 4, 5, 6]
    assert h["free_running"][0] == h["teacher_forced"][0]  # step 1 sees the same true inputs
    # by hand: teacher-forced from a reset state; free-running feeds each prediction back as the newest lag
    forced, free = np.zeros(6), np.zeros(6)
    for t0 in (1300, 1400):
        ref = Learner(StatefulNet(4, hidden=(8,), seed=0))
        ref.load_state_dict(before)
        ref.reset(state=True)
        forced += np.abs(ref.predict_batch(X[t0:t0 + 6]) - y[t0:t0 + 6])
        ref.load_state_dict(before)
        ref.reset(state=True)
        x = X[t0].copy()
        for k in range(6):
            p = ref.predict_batch(x[None, :])[0]
            free[k] += abs(p - y[t0 + k])
            x = np.r_[x[1:], p]
    np.testing.assert_array_equal(h["teacher_forced"], forced / 2)
    np.testing.assert_array_equal(h["free_running"], free / 2)
    assert free[1:].sum() != forced[1:].sum()
    # nothing learned, nothing advanced: it continues exactly as a copy of its state before
    np.testing.assert_array_equal(lrn.learn_batch(X[1200:1300], y[1200:1300]),
                                  _continue(before, X[1200:1300], y[1200:1300]))


def _continue(sd, X, y):
    from psann_stream import Learner, StatefulNet

    ref = Learner(StatefulNet(4, hidden=(8,), seed=0))
    ref.load_state_dict(sd)
    return ref.learn_batch(X, y)


def test_suite_scores_every_model_per_seed_and_prints_a_table(monkeypatch):
    from psann_stream.scenarios import suite

    monkeypatch.setattr(suite, "LENGTH", {})
    small = {"recurring": lambda n, seed: SCENARIOS["recurring"](900, seed)}
    monkeypatch.setattr(suite, "SCENARIOS", small)
    result = suite.run_suite(["recurring"], ["psann_stream", "river LinearRegression", "ESN + RLS"], [0, 1], log=lambda m: None)
    per = result["recurring"]
    assert set(per) == {"psann_stream", "river LinearRegression", "ESN + RLS"} and all(set(r) == {"0", "1"} for r in per.values())
    r = per["psann_stream"]["0"]
    assert len(r["post_change_mae"]) == 3 and 0 < r["nmse_last20"] < 1.0  # learns the regimes: better than the mean
    assert per["river LinearRegression"]["0"]["mae"] > r["mae"]  # a linear model cannot tell rising from falling
    table = suite.markdown(result)
    assert table.count("**") == 2 and "| recurring |" in table


def test_tail_scores_match_their_definitions():
    from psann_stream.scenarios.suite import tail_scores

    y = np.arange(100.0)
    pred = y + np.where(np.arange(100) >= 50, 2.0, 1.0)
    r = tail_scores(pred, y, [50], np.ones(100, dtype=bool))
    assert r["mae"] == pytest.approx(1.5)
    assert r["nmse_last20"] == pytest.approx(4.0 / np.var(y[80:]))
    assert r["post_change_mae"] == [pytest.approx(2.0)]


@pytest.mark.parametrize("name", ["shock", "sine-switch"])
def test_keyed_copies_interleave_seeded_copies_with_their_change_points_and_outliers(name):
    from psann_stream.scenarios.keyed_copies import KEY_SEEDS, keyed_copies

    s = keyed_copies(name, 1200, 2, keys=3)
    X, y, keys = s.arrays()
    points, outliers = [], []
    for k in range(3):
        copy = SCENARIOS[name](400, 2 * KEY_SEEDS + k)
        Xc, yc, _ = copy.arrays()
        rows = np.flatnonzero(keys == f"k{k}")
        np.testing.assert_array_equal(X[rows], Xc)
        np.testing.assert_array_equal(y[rows], yc)
        points += rows[list(copy.change_points)].tolist()
        outliers += rows[list(copy.outliers)].tolist()
    assert s.change_points == tuple(sorted(points)) and s.outliers == tuple(sorted(outliers))
    assert s.keyed and s.persistence_column == SCENARIOS[name](400, 0).persistence_column
    assert (keys[1:] != keys[:-1]).sum() > 300  # interleaved, not one key after another
    assert keyed_copies(name, 1200, 2, keys=3).table.equals(s.table)
    assert not keyed_copies(name, 1200, 3, keys=3).table.equals(s.table)


def test_keyed_copies_refuse_what_they_cannot_build():
    from psann_stream.scenarios.keyed_copies import keyed_copies

    with pytest.raises(ValueError, match="keyed already"):
        keyed_copies("keyed-switch", 600, 0, keys=2)
    with pytest.raises(KeyError, match="no scenario 'nope'"):
        keyed_copies("nope", 600, 0, keys=2)
    with pytest.raises(ValueError, match="keys = 1 must be in"):
        keyed_copies("ramp", 600, 0, keys=1)


def test_the_suite_runs_keyed_copies_of_unkeyed_scenarios_under_their_own_name(monkeypatch):
    from psann_stream.scenarios import suite

    monkeypatch.setattr(suite, "LENGTH", {"ramp": 900, "keyed-switch": 900})
    result = suite.run_suite(["ramp", "keyed-switch"], ["persistence", "psann_stream"], [0], log=lambda m: None, copies=3)
    assert set(result) == {"ramp x3 keys", "keyed-switch"}
    assert set(result["ramp x3 keys"]) == {"persistence", "psann_stream"}
    assert set(result["keyed-switch"]) == {"psann_stream"}  # its inputs do not carry the last target
