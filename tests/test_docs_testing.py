"""docs/testing.md's examples run as written and show what the text says."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _run(code: str, scope: dict | None = None) -> dict:
    scope = {} if scope is None else scope
    exec(compile(code, str(DOC), "exec"), scope)
    return scope


def test_doc_has_three_examples():
    assert len(_blocks()) == 3


def test_ours_pass_and_legacy_collapse_is_reported():
    scope = _run(_blocks()[0])
    assert all(v is None for v in scope["ours"].values())
    msg = str(scope["theirs"]["no_collapse"])
    assert "stopped responding" in msg and "contraction" not in scope["theirs"]
    early, late = (float(v) for v in re.findall(r"differing by (\S+) per unit .* and by (\S+) \(last", msg)[0])
    assert 0.002 < early < 0.02 and late < 2e-9  # the text: about 0.007, then about 5e-10


def test_the_integrator_is_caught_by_the_checks_the_text_names():
    scope = _run(_blocks()[0])
    scope = _run(_blocks()[1], scope)
    failed = {n for n, v in scope["broken"].items() if v is not None}
    assert failed == {"envelope", "contraction", "fixed_point", "kernel_agreement"}


def test_the_gru_passes_every_applicable_check():
    scope = _run(_blocks()[2])
    assert all(v is None for v in scope["gru"].values())
    assert "kernel_agreement" not in scope["gru"] and "contraction" not in scope["gru"]
