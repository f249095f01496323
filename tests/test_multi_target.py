"""Several targets per event (a model with ``out_features = T``): the compiled loop against the torch
autograd reference for every optimiser, gradient path and readout; ObGD's l1 bound on every move
whatever the targets; the RLS readout of T outputs as T readouts sharing one P; what a user sees
(shapes, errors naming the column, skipped rows); checkpoints, delayed labels and keyed learners."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psann_stream import ConfigError, KeyedLearner, Learner, NonFiniteInputError, StateConfig, StatefulNet
from psann_stream._packing import flat_params


def _stream(n: int, seed: int, T: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Four inputs and ``T`` targets of different scales and offsets (one remembers the last input)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    cols = [np.sin(X[:, 0]) + 0.5 * X[:, 1], 10.0 * np.roll(X[:, 2], 1) + 3.0, -0.1 * X[:, 3] * X[:, 0]]
    return X, np.stack(cols[:T], axis=1)


@given(st.integers(0, 10_000), st.sampled_from(["obgd", "adam", "intentional"]),
       st.sampled_from(["truncated", "traced"]), st.sampled_from(["gradient", "rls"]), st.booleans(),
       st.integers(2, 3))
@settings(max_examples=24 if settings.default.max_examples <= 100 else 240)  # the thorough profile: 240
def test_compiled_loop_equals_the_autograd_reference_with_several_outputs(seed, opt, state_grad, readout, osc, T):
    """Predictions, weights, readout matrix and target statistics of the compiled loop against the
    torch backend (autograd through ``u . y_hat``, numpy's textbook RLS) over a whole prequential run."""
    X, Y = _stream(50, seed, T)
    runs = [Learner(StatefulNet(4, T, hidden=(6, 4), state=StateConfig(oscillatory=osc), seed=seed), backend=b,
                    optimizer=opt, state_grad=state_grad, readout=readout) for b in ("numba", "torch")]
    preds = [lrn.learn_batch(X, Y) for lrn in runs]
    assert preds[0].shape == (50, T)
    torch.testing.assert_close(preds[0], preds[1], rtol=1e-7, atol=1e-9)
    fast, ref = (lrn.state_dict() for lrn in runs)
    for k in ref["model"]:
        torch.testing.assert_close(fast["model"][k], ref["model"][k], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(fast["readout"]["P"], ref["readout"]["P"], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(fast["y_stats"]["mean"], ref["y_stats"]["mean"], rtol=1e-12, atol=0.0)
    torch.testing.assert_close(fast["monitor"], ref["monitor"], rtol=1e-6, atol=1e-9)


@given(st.integers(0, 10_000), st.floats(1e-3, 1e12), st.sampled_from(["truncated", "traced"]))
def test_every_obgd_move_is_at_most_one_over_kappa_in_l1_with_several_outputs(seed, scale, state_grad):
    """C10 with several outputs: ObGD's error is ``||D||`` along ``grad(u . y_hat)``, so however large
    and however spread over the outputs the errors are, no event moves the weights by more than
    ``1 / kappa`` in l1 (no target normaliser, so the errors are the raw targets)."""
    rng = np.random.default_rng(seed)
    kappa = 1.25
    lrn = Learner(StatefulNet(4, 3, hidden=(6,), seed=seed), normalize_y=False, state_grad=state_grad,
                  optimizer_kwargs={"kappa": kappa})
    for _ in range(20):
        before = flat_params(lrn.model)
        lrn.learn_one(rng.standard_normal(4), rng.standard_normal(3) * scale)
        assert np.abs(flat_params(lrn.model) - before).sum() <= (1.0 / kappa) * (1 + 1e-9)


def test_rls_readout_of_several_outputs_is_one_readout_per_output_sharing_p():
    """With the layers below all but frozen, the RLS readout of T outputs predicts each output exactly
    as a one-output learner of that target alone (same P, same steps; each output its own target
    statistics), to rounding of the frozen layers' tiny steps."""
    X, Y = _stream(200, 0)
    kw = dict(readout="rls", rls_error_clip=None, optimizer_kwargs={"lr": 1e-15})
    many = Learner(StatefulNet(4, 3, hidden=(8,), seed=3), **kw).learn_batch(X, Y)
    for k in range(3):
        net = StatefulNet(4, 3, hidden=(8,), seed=3)
        one = StatefulNet(4, 1, hidden=(8,), seed=3)
        with torch.no_grad():  # the same trunk, and output k's head row
            for (name, p), q in zip(one.named_parameters(), net.parameters()):
                p.copy_(q[k:k + 1] if name.startswith("head") else q)
        alone = Learner(one, **kw).learn_batch(X, Y[:, k])
        torch.testing.assert_close(many[:, k], alone, rtol=1e-9, atol=1e-9)


def test_several_outputs_are_learned_together():
    """One trunk, three heads: every output ends below half the error of predicting its running mean
    (over the last fifth of the stream), including the one that needs the previous event's input (a
    head that did not learn, or learned another output's error, stays at that error)."""
    X, Y = _stream(6000, 1)
    lrn = Learner(StatefulNet(4, 3, hidden=(32,), state=StateConfig(oscillatory=True), seed=0), state_grad="traced",
                  readout="rls")
    pred = lrn.learn_batch(X, Y)
    tail = slice(4800, None)
    mae = np.abs(pred[tail] - Y[tail]).mean(axis=0)
    running_mean = np.cumsum(Y, axis=0) / np.arange(1, len(Y) + 1)[:, None]
    naive = np.abs(np.roll(running_mean, 1, axis=0)[tail] - Y[tail]).mean(axis=0)
    assert (mae < 0.5 * naive).all(), (mae, naive)


def test_shapes_and_errors_with_several_outputs():
    X, Y = _stream(5, 0)
    lrn = Learner(StatefulNet(4, 3, hidden=(4,), seed=0), on_nonfinite="skip")
    assert lrn.n_outputs == 3
    assert lrn.predict_one(X[0]).shape == (3,)
    assert lrn.learn_one(X[0], Y[0]).shape == (3,)
    assert lrn.predict_batch(X).shape == (5, 3)
    bad = Y.copy()
    bad[2, 1] = np.nan
    out = lrn.learn_batch(X, bad)
    assert out.shape == (5, 3) and np.isnan(out[2]).all() and np.isfinite(out[[0, 1, 3, 4]]).all()
    assert lrn.n_skipped == 1
    strict = Learner(StatefulNet(4, 3, hidden=(4,), seed=0))
    with pytest.raises(NonFiniteInputError, match="event 2 of this batch .*: y column 1 is nan"):
        strict.learn_batch(X, bad)
    assert strict.n_learned == 0
    with pytest.raises(ConfigError, match=r"Y has shape \(5, 2\); this learner has 3 outputs, so it needs \[5, 3\]"):
        strict.learn_batch(X, Y[:, :2])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_resumed_run_with_several_outputs_equals_an_uninterrupted_one(backend):
    X, Y = _stream(300, 2)
    make = lambda: Learner(StatefulNet(4, 3, hidden=(6,), state=StateConfig(oscillatory=True), seed=1),  # noqa: E731
                           backend=backend, state_grad="traced", readout="rls")
    whole = make()
    want = whole.learn_batch(X, Y)
    first = make()
    got = [first.learn_batch(X[:170], Y[:170])]
    second = make()
    second.load_state_dict(first.state_dict())
    got.append(second.learn_batch(X[170:], Y[170:]))
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_delayed_labels_with_several_outputs_learn_as_learn_batch_does():
    """A label learned right after its prediction (learn_pending) is learned exactly as learn_batch
    learns the event."""
    X, Y = _stream(120, 3)
    make = lambda: Learner(StatefulNet(4, 3, hidden=(6,), seed=2), state_grad="traced", readout="rls")  # noqa: E731
    want = make().learn_batch(X, Y)
    lrn = make()
    got = []
    for n in range(len(X)):
        _, snaps = lrn.predict_pending(X[n:n + 1])
        got.append(lrn.learn_pending(snaps, Y[n:n + 1]))
    np.testing.assert_array_equal(np.concatenate(got), want)


@pytest.mark.parametrize("per_key", [False, True])
def test_keyed_learner_with_several_outputs_equals_one_learner_per_key(per_key):
    """Keys with their own weights learn as one Learner each; with shared weights and one key, as
    one Learner."""
    X, Y = _stream(240, 4)
    keys = [n % 3 for n in range(240)] if per_key else [0] * 240
    kl = KeyedLearner(StatefulNet(4, 3, hidden=(6,), seed=5), per_key_weights=per_key, readout="rls")
    got = kl.learn_batch(keys, X, Y)
    assert got.shape == (240, 3)
    for key in sorted(set(keys)):
        idx = [n for n, k in enumerate(keys) if k == key]
        alone = Learner(StatefulNet(4, 3, hidden=(6,), seed=5), readout="rls", monitor=False).learn_batch(X[idx], Y[idx])
        np.testing.assert_array_equal(got[idx], alone)
    assert kl.learn_one(7, X[0], Y[0]).shape == (3,)


# ---------------------------------------------------------------------- the engine and the CLI
def _targets_table(n: int = 400, seed: int = 0, list_column: bool = False):
    import pyarrow as pa

    X, Y = _stream(n, seed)
    cols = {"x": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 4),
            "key": pa.array([f"k{i % 5}" for i in range(n)])}
    if list_column:
        cols["y"] = pa.FixedSizeListArray.from_arrays(pa.array(Y.reshape(-1)), 3)
    else:
        cols.update({f"y{k}": pa.array(Y[:, k]) for k in range(3)})
    return pa.table(cols), X, Y


@pytest.mark.parametrize("list_column", [False, True])
def test_engine_learns_several_target_columns_as_the_learner_does(tmp_path, list_column):
    """Three target columns (or one list column of three) through the engine equal the keyed learner
    on the same rows; the output holds the predictions, targets and errors as lists of three."""
    from psann_stream import ColumnMap
    from psann_stream.engine import Engine
    from psann_stream.io import TableSource
    from psann_stream.sinks import read_parts

    t, X, Y = _targets_table(list_column=list_column)
    make = lambda: KeyedLearner(StatefulNet(4, 3, hidden=(6,), seed=0), per_key_weights=True, monitor=False)  # noqa: E731
    cols = ColumnMap("x", target="y" if list_column else ["y0", "y1", "y2"], key="key")
    Engine(TableSource(t, batch_size=64), make(), cols, output=tmp_path / "out").run()
    out = read_parts(tmp_path / "out")
    want = make().learn_batch(t.column("key").to_pylist(), X, Y)
    got = np.array(out.column("prediction").to_pylist())
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.array(out.column("target").to_pylist()), Y)
    np.testing.assert_array_equal(np.array(out.column("error").to_pylist()), want - Y)


def test_engine_dead_letters_a_row_with_a_bad_target_naming_its_column(tmp_path):
    import pyarrow as pa

    from psann_stream import BadInputError, ColumnMap
    from psann_stream.engine import Engine
    from psann_stream.io import TableSource
    from psann_stream.sinks import read_parts

    t, _, _ = _targets_table(100)
    y1 = t.column("y1").to_pylist()
    y1[7], y1[9] = None, float("inf")
    t = t.set_column(t.schema.get_field_index("y1"), "y1", pa.array(y1, pa.float64()))
    cols = ColumnMap("x", target=["y0", "y1", "y2"])
    lrn = Learner(StatefulNet(4, 3, hidden=(6,), seed=0))
    stats = Engine(TableSource(t, batch_size=32), lrn, cols, output=tmp_path / "out", dead_letter=tmp_path / "dead",
                   on_bad_input="dead-letter").run()
    dead = read_parts(tmp_path / "dead")
    assert dead.column("reason").to_pylist() == ["target y1 is null", "target y1 is inf"]
    assert stats.rows_in == 100 and stats.predicted == 98 and stats.dead_lettered == 2
    assert read_parts(tmp_path / "out").num_rows == 98
    with pytest.raises(BadInputError, match="target y1 is null"):
        Engine(TableSource(t, batch_size=32), Learner(StatefulNet(4, 3, hidden=(6,), seed=0)), cols).run()


def test_engine_refuses_a_learner_whose_outputs_do_not_match_the_targets():
    from psann_stream import ColumnMap
    from psann_stream.engine import Engine
    from psann_stream.io import TableSource

    t, _, _ = _targets_table(10)
    with pytest.raises(ConfigError, match=r"the stream has 3 target\(s\) \(y0, y1, y2\) but the learner learns 1 per "
                                          r"event; build its model with out_features=3"):
        Engine(TableSource(t), Learner(StatefulNet(4, hidden=(6,))), ColumnMap("x", target=["y0", "y1", "y2"]))
    with pytest.raises(ConfigError, match="target column 'key': expected a numeric type"):
        ColumnMap("x", target=["y0", "key"]).bind(t.schema)


def test_cli_learns_comma_separated_targets_with_one_model(tmp_path, capsys):
    import pyarrow as pa

    from psann_stream.cli import main
    from psann_stream.sinks import read_parts

    t, _, Y = _targets_table(600)
    with pa.ipc.new_file(str(tmp_path / "s.arrow"), t.schema) as w:
        for b in t.to_batches(max_chunksize=200):
            w.write_batch(b)
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y0,y1,y2",
                 "--output", str(tmp_path / "out")]) == 0
    assert "600 predicted, 0 dead-lettered" in capsys.readouterr().out
    out = read_parts(tmp_path / "out")
    assert np.array(out.column("prediction").to_pylist()).shape == (600, 3)
    np.testing.assert_array_equal(np.array(out.column("target").to_pylist()), Y)


# ---------------------------------------------------------------------- the real feed
def test_multi_target_etth1_holds_the_single_target_scenario(etth1_path):
    """The seven-target events are the single-target scenario's with every reading as a target: its OT
    column is that scenario's target, and one model per target learns OT exactly as the single-target
    run does."""
    from psann_stream.scenarios.etth1 import COLUMNS, etth1, etth1_readings
    from psann_stream.scenarios.multi_target import run_multi_target
    from psann_stream.scenarios.run import run_scenario

    X, Y = etth1_readings(etth1_path, 600)
    Xs, ys, _ = etth1(etth1_path, 600).arrays()
    ot = COLUMNS.index("OT")
    np.testing.assert_array_equal(Y[:, ot], ys)
    np.testing.assert_allclose(X, Xs, rtol=1e-6)  # the scenario table stores its inputs as float32
    multi = run_multi_target(etth1_path, seeds=(0,), models=["per target: river LinearRegression"], n=600)
    single = run_scenario("etth1", 600, 0, ["river LinearRegression"], data=etth1_path)
    got = multi["models"]["per target: river LinearRegression"][0]["mae_per_target"][ot]
    assert got == pytest.approx(single["models"]["river LinearRegression"]["mae"], rel=1e-6)


def test_on_etth1_one_model_learns_seven_readings_better_as_changes_than_as_levels(etth1_path):
    """docs/scenarios.md: hourly readings move little from hour to hour; the joint model that learns
    each reading's change from its current value has a lower error on every target than the same model
    learning the levels (first 3,000 events, seed 0)."""
    from psann_stream.scenarios.multi_target import run_multi_target

    r = run_multi_target(etth1_path, seeds=(0,), models=["psann_stream (joint)", "psann_stream (joint, change)"], n=3000)
    level = np.array(r["models"]["psann_stream (joint)"][0]["mae_per_target"])
    change = np.array(r["models"]["psann_stream (joint, change)"][0]["mae_per_target"])
    assert (change < level).all(), (change, level)


def test_change_of_several_targets_needs_a_column_per_target():
    lrn = Learner(StatefulNet(4, 3, hidden=(4,), seed=0))
    from psann_stream.experts import Change

    with pytest.raises(ConfigError, match=r"Change.column = 2 is out of range for 4 input column\(s\) and 3 target"):
        Change(lrn, column=2)
    X, Y = _stream(50, 0)
    c = Change(lrn, column=[0, 1, 2])
    fresh = Learner(StatefulNet(4, 3, hidden=(4,), seed=0))
    np.testing.assert_array_equal(c.learn_batch(X, Y), fresh.learn_batch(X, Y - X[:, :3]) + X[:, :3])


def test_on_etth1_one_model_learning_the_changes_beats_persistence_on_every_reading(etth1_path):
    """README and docs/scenarios.md: over the whole file, the joint model learning each reading's
    change has a lower MAE than persistence on all seven readings (seed 0)."""
    from psann_stream.scenarios.multi_target import run_multi_target

    r = run_multi_target(etth1_path, seeds=(0,), models=["psann_stream (joint, change)"])
    mae = np.array(r["models"]["psann_stream (joint, change)"][0]["mae_per_target"])
    assert r["events"] == 17419
    assert (mae < np.array(r["persistence_mae"])).all(), (mae, r["persistence_mae"])


def test_cli_target_section_learns_each_targets_change_from_its_feature(tmp_path, capsys):
    """``[target] change_from`` wraps the learner in Change: the run's predictions equal
    Change(Learner) on the same rows; a wrong count or an unknown feature is a one-line error."""
    import pyarrow as pa

    from psann_stream.cli import main
    from psann_stream.experts import Change
    from psann_stream.sinks import read_parts

    _, X, Y = _targets_table(300)
    t = pa.table({**{f"x{j}": pa.array(X[:, j]) for j in range(4)}, **{f"y{k}": pa.array(Y[:, k]) for k in range(3)}})
    with pa.ipc.new_file(str(tmp_path / "s.arrow"), t.schema) as w:
        w.write_table(t)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nhidden = [6]\n[target]\nchange_from = ["x0", "x1", 2]\n')
    run = ["run", "--input", str(tmp_path / "s.arrow"), "--features", "x0,x1,x2,x3", "--target", "y0,y1,y2",
           "--config", str(cfg)]
    assert main(run + ["--output", str(tmp_path / "out")]) == 0
    got = np.array(read_parts(tmp_path / "out").column("prediction").to_pylist())
    want = Change(Learner(StatefulNet(4, 3, hidden=(6,), seed=0)), column=[0, 1, 2]).learn_batch(X, Y)
    np.testing.assert_array_equal(got, want)
    capsys.readouterr()
    cfg.write_text('[model]\nhidden = [6]\n[target]\nchange_from = ["x0", "x1"]\n')
    assert main(run) == 2
    assert "change_from names 2 column(s) for 3 target(s)" in capsys.readouterr().err
    cfg.write_text('[target]\nchange_from = ["x0", "nope", 2]\n')
    assert main(run) == 2
    assert "'nope' is not one of the --features" in capsys.readouterr().err
    cfg.write_text('[target]\nchange_form = "x0"\n')
    assert main(run) == 2
    assert "[target] change_form is not a setting; did you mean 'change_from'?" in capsys.readouterr().err
