"""The README's Python examples run as written and do what the text says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _run(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    return scope


def test_readme_has_six_python_examples():
    assert len(_blocks()) == 6


def test_readme_model_example_runs_and_learns(capsys):
    scope = _run(_blocks()[0])
    preds, x = scope["preds"], scope["x"]
    err = (preds - x[1:]).abs().squeeze(-1)
    assert float(err[-200:].mean()) < 0.5 * float(err[:200].mean())
    assert scope["free"].shape == (50, 1) and scope["more"].shape == (50, 1)
    assert "StateBounds(" in capsys.readouterr().out


def test_readme_learner_example_runs_and_learns():
    scope = _run(_blocks()[1])
    X, lrn, keyed = scope["X"], scope["lrn"], scope["keyed"]
    y = np.sin(X[:, 0])
    assert lrn.n_learned == 5000 and len(keyed.keys) == 100
    err = np.abs(scope["preds"] - y)
    assert err[-1000:].mean() < err[:1000].mean()


def test_readme_memory_example_recovers_a_delayed_value():
    scope = _run(_blocks()[2])
    assert scope["nmse"] < 0.1  # the text says ~0.03; no memory at all would give ~1.0


def test_readme_ensemble_example_learns_and_prints_its_weights(capsys):
    scope = _run(_blocks()[3])
    ens, X = scope["ens"], scope["X"]
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    err = np.abs(scope["preds"] - y)
    assert err[-500:].mean() < 0.5 * err[:500].mean()
    assert list(ens.weights) == ["wide memory", "fixed state", "adam", "linear", "lagged linear", "echo state"]
    assert abs(sum(ens.weights.values()) - 1.0) < 1e-12
    assert "'wide memory':" in capsys.readouterr().out


def test_readme_river_pipeline_example_runs_and_beats_linear_regression(capsys):
    scope = _run(_blocks()[4])
    assert scope["mae"].get() < 2.0  # river's StandardScaler | LinearRegression: 2.23 on this stream
    assert "MAE" in capsys.readouterr().out


def test_readme_delayed_labels_example_learns_from_late_labels(capsys):
    scope = _run(_blocks()[5])
    dl, X, y = scope["dl"], scope["X"], scope["y"]
    err = np.abs(scope["preds"] - y)
    assert err[-500:].mean() < 0.5 * err[:200].mean()
    assert (dl.n_learned, dl.n_pending) == (1980, 20)
    assert capsys.readouterr().out.strip() == "1980 20 []"
