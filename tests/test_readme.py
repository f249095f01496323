"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs_and_learns(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    scope: dict = {}
    exec(compile(blocks[0], str(README), "exec"), scope)
    preds, x = scope["preds"], scope["x"]
    err = (preds - x[1:]).abs().squeeze(-1)
    assert float(err[-200:].mean()) < 0.5 * float(err[:200].mean())
    assert scope["free"].shape == (50, 1) and scope["more"].shape == (50, 1)
    assert "StateBounds(" in capsys.readouterr().out
