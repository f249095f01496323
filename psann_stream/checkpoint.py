"""Checkpoint files: atomic, versioned, checksummed, and loaded without unpickling arbitrary objects.

A checkpoint is one file ``ckpt-<step>.psck`` in a directory::

    magic "PSANNCK" + format version (1 byte) | body length (8 bytes, little endian) | SHA-256 of body (32 bytes) | body

The body is ``torch.save`` of a payload made of tensors, numbers, strings, booleans, ``None``,
lists, tuples and dicts (what ``Learner.state_dict()`` and ``KeyedLearner.state_dict()`` return),
read back with ``torch.load(weights_only=True)``, which refuses any other object.

Writing is atomic (:func:`psann_stream.files.atomic_write`): the bytes go to a temporary file in the
same directory, which is ``fsync``-ed, renamed over the final name (an atomic replace on POSIX), and
the directory is ``fsync``-ed. A crash leaves either the old set of checkpoints or the new one, never a half file
under a checkpoint name. :func:`load_latest` verifies length and checksum, and when the newest file
is truncated or corrupt it says so (a :class:`CheckpointWarning`) and falls back to the previous good
one.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError
from .files import atomic_write

__all__ = ["CheckpointWarning", "save_checkpoint", "load_checkpoint", "load_latest", "list_checkpoints"]

MAGIC = b"PSANNCK"
VERSION = 1
_HEADER = struct.Struct("<7sBQ32s")  # magic, version, body length, sha256
_NAME = re.compile(r"^ckpt-(\d{12})\.psck$")


class CheckpointWarning(UserWarning):
    """A checkpoint was unreadable and an older one is used instead; the message says which and why."""


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(
    directory: str | os.PathLike[str], payload: Mapping[str, Any], *, step: int, keep_last: int = 3
) -> Path:
    """Write ``payload`` as the checkpoint of ``step`` atomically; keep the newest ``keep_last`` files.

    Returns the checkpoint's path. ``step`` (an event count, >= 0) orders checkpoints.
    """
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10**12:
        raise CheckpointError(f"save_checkpoint: step = {step!r} must be an integer in [0, 10**12).")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise CheckpointError(f"save_checkpoint: keep_last = {keep_last!r} must be an integer >= 1.")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    body = buf.getvalue()
    header = _HEADER.pack(MAGIC, VERSION, len(body), hashlib.sha256(body).digest())
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(body)

    final = atomic_write(d / f"ckpt-{step:012d}.psck", write, prefix=".ckpt-")
    for _, old in list_checkpoints(d)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify one checkpoint file; raises :class:`CheckpointError` saying what is wrong."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {p}: cannot be read ({exc}).") from None
    if len(data) < _HEADER.size:
        raise CheckpointError(f"checkpoint {p}: truncated ({len(data)} bytes, shorter than the {_HEADER.size}-byte header).")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError(f"checkpoint {p}: not a psann_stream checkpoint (bad magic bytes).")
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint {p}: format version {version}, but this psann_stream reads version {VERSION}; "
            "load it with the release that wrote it."
        )
    body = data[_HEADER.size :]
    if len(body) != length:
        raise CheckpointError(f"checkpoint {p}: truncated or padded (body {len(body)} bytes, header says {length}).")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {p}: checksum mismatch, the file is corrupt.")
    try:
        payload = torch.load(io.BytesIO(body), weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused content
        raise CheckpointError(
            f"checkpoint {p}: refused by safe loading ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "checkpoints hold only tensors, numbers, strings and containers."
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {p}: the payload is a {type(payload).__name__}, not a dict.")
    return payload


def load_latest(directory: str | os.PathLike[str]) -> tuple[int, dict[str, Any]] | None:
    """``(step, payload)`` of the newest good checkpoint in ``directory``, or ``None`` if there is none.

    Unreadable checkpoints newer than the one returned are reported with a :class:`CheckpointWarning`
    (they are left in place for inspection). If checkpoints exist but none is good, raises
    :class:`CheckpointError` listing each file and what is wrong with it.
    """
    found = list_checkpoints(directory)
    problems = []
    for step, path in reversed(found):
        try:
            payload = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warnings.warn(CheckpointWarning(f"{problem} Using the previous checkpoint, step {step}."), stacklevel=2)
        return step, payload
    if problems:
        raise CheckpointError("no readable checkpoint in " + str(directory) + ":\n  " + "\n  ".join(problems))
    return None
