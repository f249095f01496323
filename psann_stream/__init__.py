"""psann_stream: online streaming learning with stateful sine networks (PSANN) whose state is a
provably bounded dynamical system.

Public API (everything else is private):

* :class:`StateConfig` and the state helpers in :mod:`psann_stream.state`
* :class:`StatefulNet`, :class:`StatefulSineLayer`, :class:`SineActivation`
* :func:`rollout`, :func:`predict_sequence`, :func:`predict_sequence_online`
* the error types, all subclasses of :class:`PsannStreamError`
"""

from .errors import ConfigError, NonFiniteInputError, PsannStreamError, StateShapeError
from .layers import SineActivation, StateBounds, StatefulSineLayer
from .model import State, StatefulNet
from .rollout import Rollout, predict_sequence, predict_sequence_online, rollout
from .state import StateConfig

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "NonFiniteInputError",
    "PsannStreamError",
    "Rollout",
    "SineActivation",
    "State",
    "StateBounds",
    "StateConfig",
    "StateShapeError",
    "StatefulNet",
    "StatefulSineLayer",
    "predict_sequence",
    "predict_sequence_online",
    "rollout",
]
