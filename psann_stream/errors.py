"""The error types of psann_stream: one per failure kind, each message says what to do.

Every error a user can cause derives from :class:`PsannStreamError`, so an
application can catch all of them with one ``except``. Each subclass also derives
from the built-in exception a Python user would expect (``ValueError`` for bad
configuration or data), so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "PsannStreamError",
    "ConfigError",
    "BadInputError",
    "NonFiniteInputError",
    "NonFiniteStateError",
    "StateShapeError",
    "CheckpointError",
]


class PsannStreamError(Exception):
    """Base class of every error psann_stream raises on purpose."""


class ConfigError(PsannStreamError, ValueError):
    """A configuration value is invalid; the message names the field, the value and the allowed range."""


class BadInputError(PsannStreamError, ValueError):
    """An input row cannot be learned (non-finite or absurd value, null key); the message says where and why."""


class NonFiniteInputError(BadInputError):
    """An input or target holds NaN or inf; the message names step, stream and column."""


class StateShapeError(PsannStreamError, ValueError):
    """The held state does not fit the input (stream count or width); the message says how to reset it."""


class NonFiniteStateError(PsannStreamError, FloatingPointError):
    """A prediction, state or update became non-finite from finite data; the message names where.

    Raised before the offending update is applied, so the learner stays at its last good state.
    """


class CheckpointError(PsannStreamError, ValueError):
    """A saved state cannot be loaded (wrong format, version, shape or content)."""
