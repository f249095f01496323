"""docs/scale-out.md's end-to-end walkthrough (Kafka in, delayed labels, Kafka out) runs as written
against the test broker and does what its text says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tansu import tansu_broker

DOC = Path(__file__).resolve().parent.parent / "docs" / "scale-out.md"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with tansu_broker(tmp_path_factory.mktemp("tansu") / "broker.log") as address:
        yield address


def test_the_kafka_walkthrough_with_delayed_labels_runs_and_learns(broker, tmp_path, monkeypatch, capsys):
    (code,) = re.findall(r"### End to end.*?```python\n(.*?)```", DOC.read_text(), flags=re.S)
    monkeypatch.setenv("PSANN_BROKER", broker)
    monkeypatch.setenv("PSANN_WORKDIR", str(tmp_path))
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    assert capsys.readouterr().out.strip() == "799 796 3"
    f = scope["forecasts"].sort_by([("offset", "ascending"), ("row", "ascending")])
    x = scope["x"]
    err = np.abs(f["prediction"].to_numpy() - x[1:800])
    assert f.num_rows == 799 and err[-200:].mean() < 0.5 * err[:100].mean()  # it learned from late labels
