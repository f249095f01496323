"""Durable, atomic file writes: the one way psann_stream replaces a file (checkpoints, output parts).

The bytes go to a temporary file in the target's directory, which is flushed and ``fsync``-ed, then
renamed over the final name (an atomic replace on POSIX), and the directory is ``fsync``-ed so that
the rename itself survives a power loss. A crash leaves the old file (or none) or the new one, never
a half-written file under the final name; a leftover temporary file starts with ``prefix`` and ends
in ``.tmp``, so its owner can find and delete it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory (its entries: created, renamed or deleted files)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(final: Path, write: Callable[[str], None], *, prefix: str) -> Path:
    """Create or replace ``final`` with what ``write(temporary_path)`` writes (module doc); returns
    ``final``. ``write`` may open the path itself (e.g. pyarrow writers); whatever it raises leaves
    ``final`` as it was and removes the temporary file."""
    directory = final.parent
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)
    return final
