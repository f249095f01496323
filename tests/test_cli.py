"""The ``psann-stream`` command line: the demo learns, and errors are one line."""

from __future__ import annotations

import re
import time

import pytest

from psann_stream.cli import main


def test_demo_stateful_model_beats_the_same_network_without_state(capsys):
    """After warm-up, the faded prequential error of the stateful model is far below the same
    network with its state off and below persistence: the state carries the sine's direction."""
    assert main(["demo", "--steps", "8000", "--every", "2000"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+[0-9,]+$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [2000, 4000, 6000, 8000], out
    stateful, stateless, persistence = map(float, rows[-1][2:])
    assert stateful < 0.5 * stateless
    assert stateful < persistence
    assert re.search(r"cumulative MAE over 8000 steps: stateful [0-9.]+", out)
    assert re.search(r"layer 1: max \|state\| [0-9.]+ <= limit", out)
    assert "monitor: 0 alert(s)" in out


def test_demo_rejects_bad_arguments_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--steps", "0"])
    assert info.value.code == 2
    assert "--steps and --every must be >= 1" in capsys.readouterr().err


def _arrow_file(path, n=3000):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    t = pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4),
        "y": pa.array(np.sin(x.sum(axis=1)).astype(np.float64)),
        "key": pa.array([f"k{i % 7}" for i in range(n)]),
    })
    with pa.ipc.new_file(str(path), t.schema) as w:
        for b in t.to_batches(max_chunksize=500):
            w.write_batch(b)


def test_run_resume_and_inspect(tmp_path, capsys):
    from psann_stream.sinks import read_parts

    _arrow_file(tmp_path / "s.arrow")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nhidden = [8]\n[state]\nrho = 0.8\n[learner]\nper_key_weights = true\noptimizer = "intentional"\n')
    base = ["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y", "--key", "key",
            "--config", str(cfg), "--checkpoint-every", "1000"]
    assert main(base + ["--output", str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "ca")]) == 0
    out = capsys.readouterr().out
    assert "done: 3,000 rows in" in out and "3,000 predicted, 0 dead-lettered" in out
    assert main(base + ["--output", str(tmp_path / "b"), "--checkpoint-dir", str(tmp_path / "cb"), "--resume"]) == 0
    assert main(base + ["--output", str(tmp_path / "b"), "--checkpoint-dir", str(tmp_path / "cb"), "--resume"]) == 0
    assert read_parts(tmp_path / "a").equals(read_parts(tmp_path / "b"))  # resuming a finished run adds nothing
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "ca")]) == 0
    shown = capsys.readouterr().out
    assert "position: [6, 0]" in shown and "optimizer 'intentional'" in shown and "7 hot key(s)" in shown


def test_run_learns_with_the_default_ensemble_keyed_or_not_and_with_one_learner_where_asked(tmp_path, capsys):
    """docs/engine.md, "Which model learns": a run without a model section learns with default_ensemble,
    keyed by --key or not (its predictions are the ensemble's, bit for bit), ``--model learner`` with
    one Learner or KeyedLearner; each run says which and why."""
    import numpy as np
    import pyarrow as pa

    from psann_stream import KeyedLearner, Learner, StatefulNet
    from psann_stream.ensemble import default_ensemble
    from psann_stream.sinks import read_parts

    _arrow_file(tmp_path / "s.arrow", n=1000)
    t = pa.ipc.open_file(str(tmp_path / "s.arrow")).read_all()
    X = np.array(t.column("x").to_pylist(), dtype=np.float64)
    y = np.array(t.column("y").to_pylist(), dtype=np.float64)
    base = ["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y"]
    keys = t.column("key").to_pylist()
    members = "model: default_ensemble: wide memory, fixed state, adam, linear, lagged linear, echo state"
    for extra, want, line in (
            ([], default_ensemble(4), f"{members} (the default; --model learner: one Learner at"),
            (["--model", "learner"], Learner(StatefulNet(4, hidden=(32, 32), seed=0)),
             "model: one learner, hidden (32, 32) (--model learner)"),
            (["--key", "key"], default_ensemble(4, keyed=True), f"{members} (the default; --model learner: one KeyedLearner at"),
            (["--key", "key", "--model", "learner"], KeyedLearner(StatefulNet(4, hidden=(32, 32), seed=0)),
             "model: one learner, hidden (32, 32) (--model learner)")):
        out_dir = tmp_path / f"out{len(extra)}"
        assert main(base + extra + ["--output", str(out_dir)]) == 0
        assert line in capsys.readouterr().out
        by_key = "--key" in extra
        expected = np.concatenate([np.reshape(want.learn_batch(*([keys[a:a + 500]] if by_key else []), X[a:a + 500],
                                                               y[a:a + 500]), -1) for a in (0, 500)])
        np.testing.assert_array_equal(np.array(read_parts(out_dir).column("prediction").to_pylist()), expected)


def test_run_refuses_a_model_choice_it_cannot_keep_and_names_the_way_out(tmp_path, capsys):
    _arrow_file(tmp_path / "s.arrow", n=600)
    base = ["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y"]
    ens, model = tmp_path / "e.toml", tmp_path / "m.toml"
    ens.write_text("[ensemble]\n")
    model.write_text("[model]\nhidden = [8]\n")
    for extra, msg in ((["--config", str(ens), "--model", "learner"], "--model learner and an [ensemble] section contradict"),
                       (["--config", str(model), "--model", "ensemble"], "[model] configure one learner: drop them"),
                       (["--model", "ensemble", "--id", "key"], "--model ensemble cannot learn delayed labels (--id): use "
                                                                "--model learner"),
                       (["--model", "ensemble", "--key", "key", "--ray"], "--ray shards one keyed learner; an ensemble "
                                                                          "(--model ensemble) runs on one machine")):
        assert main(base + extra + ["--output", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    # a run checkpointed by one learner does not resume as the default ensemble: the error says where and what to pass
    ck = ["--output", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(base + ["--model", "learner"] + ck) == 0
    assert main(base + ck + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the newest checkpoint in {tmp_path / 'ck'} (step 600)" in err and "--model learner" in err, err
    assert main(base + ["--model", "learner"] + ck + ["--resume"]) == 0


def test_inspect_names_a_learners_optimizer_without_printing_its_buffers(tmp_path, capsys):
    _arrow_file(tmp_path / "s.arrow", n=600)
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y", "--model", "learner",
                 "--output", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "ck")]) == 0
    shown = capsys.readouterr().out
    assert "learner: psann_stream.learner/1, optimizer 'obgd'\n" in shown and "tensor([" not in shown, shown


def test_run_errors_are_one_line(tmp_path, capsys):
    _arrow_file(tmp_path / "s.arrow")
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "nope", "--target", "y"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("psann-stream: error: the stream's schema does not match") and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_init_from_continues_a_warm_up_on_another_source(tmp_path, capsys):
    """Warm up on one file, go on from its learner on another: the same predictions as one learner
    that learned both streams in order."""
    import numpy as np
    import pyarrow as pa

    from psann_stream import KeyedLearner, StatefulNet
    from psann_stream.sinks import read_parts

    _arrow_file(tmp_path / "s.arrow")
    whole = pa.ipc.open_file(str(tmp_path / "s.arrow")).read_all()
    for name, part in (("warm.arrow", whole.slice(0, 2000)), ("live.arrow", whole.slice(2000))):
        with pa.ipc.new_file(str(tmp_path / name), part.schema) as w:
            w.write_table(part)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nhidden = [8]\n[learner]\nper_key_weights = true\n")
    base = ["run", "--features", "x", "--target", "y", "--key", "key", "--config", str(cfg)]
    assert main(base + ["--input", str(tmp_path / "warm.arrow"), "--checkpoint-dir", str(tmp_path / "w")]) == 0
    assert main(base + ["--input", str(tmp_path / "live.arrow"), "--init-from", str(tmp_path / "w"),
                        "--output", str(tmp_path / "out")]) == 0
    ref = KeyedLearner(StatefulNet(4, hidden=(8,), seed=0), per_key_weights=True)
    x = whole["x"].combine_chunks().flatten().to_numpy().reshape(-1, 4).astype(np.float64)
    keys, y = whole["key"].to_numpy(zero_copy_only=False), whole["y"].to_numpy()
    ref.learn_batch(keys[:2000], x[:2000], y[:2000])
    want = ref.learn_batch(keys[2000:], x[2000:], y[2000:])
    assert np.array_equal(read_parts(tmp_path / "out")["prediction"].to_numpy(), want)
    capsys.readouterr()
    assert main(base + ["--input", str(tmp_path / "live.arrow"), "--init-from", str(tmp_path / "w"), "--resume",
                        "--checkpoint-dir", str(tmp_path / "w")]) == 2
    assert "Use one" in capsys.readouterr().err


def test_run_with_an_ensemble_section_resumes_and_refuses_bad_keys(tmp_path, capsys):
    from psann_stream.sinks import read_parts

    _arrow_file(tmp_path / "s.arrow", n=1200)
    cfg = tmp_path / "e.toml"
    cfg.write_text('[ensemble]\npersistence = 0\ntarget = "change"\neta = 2.0\n')
    base = ["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y", "--config", str(cfg),
            "--checkpoint-every", "500"]
    assert main(base + ["--output", str(tmp_path / "a"), "--checkpoint-dir", str(tmp_path / "ca")]) == 0
    assert "done: 1,200 rows in" in capsys.readouterr().out
    assert main(base + ["--output", str(tmp_path / "b"), "--checkpoint-dir", str(tmp_path / "cb"), "--resume"]) == 0
    assert read_parts(tmp_path / "a").equals(read_parts(tmp_path / "b"))
    capsys.readouterr()
    for text, want in (('[ensemble]\nshares = 0.1\n', "[ensemble] shares is not a setting; did you mean 'share'?"),
                       ('[ensemble]\npersistence = "OT"\n', "'OT' is not one of the --features"),
                       ('[ensemble]\n[learner]\noptimizer = "adam"\n', "drop [model], [state] and [learner]"),
                       ('[ensemble]\ntarget = "delta"\n', "target = 'delta' is not one of")):
        cfg.write_text(text)
        assert main(base[:-2] + ["--output", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err
        assert want in err and "Traceback" not in err, err


def _univariate_file(path, n=3000):
    """One numeric feature column 'v' (a null at row 1700), a target 'y' (NaN at row 1200), 500-row batches."""
    import numpy as np
    import pyarrow as pa

    v = np.sin(np.arange(n) * 0.1)
    y = np.roll(v, -1)
    y[1200] = np.nan
    t = pa.table({"v": pa.array([None if i == 1700 else float(x) for i, x in enumerate(v)], pa.float64()),
                  "y": pa.array(y)})
    with pa.ipc.new_file(str(path), t.schema) as w:
        for b in t.to_batches(max_chunksize=500):
            w.write_batch(b)


def test_a_univariate_stream_with_bad_rows_runs_and_the_progress_stays_honest(tmp_path, capsys):
    """One numeric --features column is a feature vector of width 1; a null cell is reported as null;
    the dead-lettered rows do not turn the faded MAE into NaN; the last progress line is printed once."""
    from psann_stream.sinks import read_parts

    _univariate_file(tmp_path / "u.arrow")
    assert main(["run", "--input", str(tmp_path / "u.arrow"), "--features", "v", "--target", "y",
                 "--on-bad-input", "dead-letter", "--dead-letter", str(tmp_path / "dead"),
                 "--progress-every", "0"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("rows ")]
    assert len(lines) == 6 and "nan" not in " ".join(lines)  # one line per batch, none repeated at the end
    assert lines[-1].startswith("rows 2,998 ")
    assert "2,998 predicted, 2 dead-lettered" in out
    dead = read_parts(tmp_path / "dead")
    assert dead.column("reason").to_pylist() == ["target is nan", "feature 0 is null"]


def test_the_compile_notice_says_what_is_happening_while_it_happens(capsys):
    from psann_stream.cli import _CompileNotice

    notice = _CompileNotice(after=0.05)
    notice.start()
    time.sleep(0.3)
    notice.stop()
    quiet = _CompileNotice(after=5.0)
    quiet.start()
    quiet.stop()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("compiling the per-event loop") and out[1].startswith("compiled in ") and len(out) == 2


def test_run_serves_metrics_and_closes_the_endpoint(tmp_path, capsys):
    """--metrics-port 0 picks a free port on 127.0.0.1 and says where; the endpoint is gone after the run."""
    import urllib.error
    import urllib.request

    _arrow_file(tmp_path / "s.arrow")
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x", "--target", "y", "--key", "key",
                 "--metrics-port", "0", "--progress-every", "1000"]) == 0
    out = capsys.readouterr().out
    url = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", out).group(1)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_run_with_delayed_labels_predicts_now_and_learns_labels_later(tmp_path, capsys):
    """--id: rows without a target are predicted and wait; label rows (features null) are learned;
    a label that never had a prediction is dead-lettered; the summary says what happened."""
    import pyarrow as pa

    from psann_stream.sinks import read_parts

    from test_engine_delayed import _events

    t, *_ = _events(n=200, keyed=True)
    with pa.ipc.new_file(str(tmp_path / "s.arrow"), t.schema) as w:
        for b in t.to_batches(max_chunksize=64):
            w.write_batch(b)
    args = ["run", "--input", str(tmp_path / "s.arrow"), "--features", "x0,x1", "--target", "y", "--key", "key",
            "--id", "id", "--label-horizon", "40", "--output", str(tmp_path / "out"), "--on-bad-input", "dead-letter",
            "--dead-letter", str(tmp_path / "dead")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "200 predicted, 1 dead-lettered" in out and re.search(r"delayed labels: [0-9,]+ learned, [0-9,]+ expired", out)
    assert read_parts(tmp_path / "out").num_rows == 200
    assert main(["run", "--input", str(tmp_path / "s.arrow"), "--features", "x0,x1", "--target", "y",
                 "--label-horizon", "5"]) != 0
    assert "--label-horizon is for labels that arrive later" in capsys.readouterr().err


def test_run_with_labels_from_a_second_file_equals_the_same_rows_in_one_stream(tmp_path, capsys):
    import pyarrow as pa

    from psann_stream.sinks import read_parts

    from test_merge import _streams

    events, labels, one = _streams()
    for name, t in (("ev", events), ("lb", labels), ("one", one)):
        with pa.ipc.new_file(str(tmp_path / f"{name}.arrow"), t.schema) as w:
            for b in t.to_batches(max_chunksize=40):
                w.write_batch(b)
    common = ["--features", "x0,x1", "--target", "y", "--id", "id", "--time", "t", "--label-horizon", "40"]
    assert main(["run", "--input", str(tmp_path / "one.arrow"), *common, "--output", str(tmp_path / "a")]) == 0
    assert main(["run", "--input", str(tmp_path / "ev.arrow"), "--labels-input", str(tmp_path / "lb.arrow"), *common,
                 "--output", str(tmp_path / "b")]) == 0
    a, b = read_parts(tmp_path / "a"), read_parts(tmp_path / "b")
    assert a["prediction"].to_pylist() == b["prediction"].to_pylist()
    capsys.readouterr()
    assert main(["run", "--input", str(tmp_path / "ev.arrow"), "--labels-input", str(tmp_path / "lb.arrow"),
                 "--features", "x0,x1", "--target", "y", "--id", "id"]) != 0
    assert "merged by --time" in capsys.readouterr().err
