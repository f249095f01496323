"""Killing a command-line run the hard way: start it in its own session, wait for its first
checkpoint file, then SIGKILL every process of that session (the CLI and whatever it started, such
as a local Ray), by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True, check=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines()) if int(s) == sid]


def kill_after_first_checkpoint(cmd: Sequence[str], checkpoint_dir: Path, *, env: Mapping[str, str] | None = None,
                                timeout: float = 120.0) -> None:
    """Run ``cmd``; as soon as ``checkpoint_dir`` holds a checkpoint, SIGKILL its whole session. Fails
    if the command ended (or did not checkpoint) first, showing its stderr."""
    proc = subprocess.Popen(list(cmd), env=None if env is None else dict(env), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not any(Path(checkpoint_dir).glob("ckpt-*.psck")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # still running at its first checkpoint
    finally:
        kill_session(proc)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (it was started with ``start_new_session=True``),
    by PID, then reap ``proc`` and close its stderr pipe."""
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
