"""psann_stream: online streaming learning with stateful sine networks (PSANN) whose state is a
provably bounded dynamical system.

Public API (everything else is private):

* :class:`StateConfig` and the state helpers in :mod:`psann_stream.state`
* :class:`StatefulNet`, :class:`StatefulSineLayer`, :class:`SineActivation`
* :func:`rollout`, :func:`predict_sequence`, :func:`predict_sequence_online`
* :class:`Learner` (one stream) and :class:`KeyedLearner` (many keyed streams)
* the streaming optimisers :class:`ObGD`, :class:`IntentionalSGD`, :class:`StreamingAdam`
* :class:`RunningStats` (online normaliser), :class:`Monitor`, :class:`Alert`, :class:`StabilityWarning`
* Arrow input: :class:`ColumnMap`, :class:`Position`, :func:`open_source` (:mod:`psann_stream.io`)
* checkpoint files: :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`load_latest`,
  :class:`CheckpointWarning` (:mod:`psann_stream.checkpoint`)
* the error types, all subclasses of :class:`PsannStreamError`
"""

from .checkpoint import CheckpointWarning, load_checkpoint, load_latest, save_checkpoint
from .errors import (
    BadInputError,
    CheckpointError,
    ConfigError,
    NonFiniteInputError,
    NonFiniteStateError,
    PsannStreamError,
    StateShapeError,
)
from .io import ColumnMap, Position, open_source
from .keyed import KeyedLearner
from .layers import SineActivation, StatefulSineLayer
from .learner import Learner
from .model import State, StatefulNet
from .monitor import Alert, Monitor, StabilityWarning
from .normalize import RunningStats
from .optim import IntentionalSGD, ObGD, StreamingAdam
from .rollout import Rollout, predict_sequence, predict_sequence_online, rollout
from .state import StateBounds, StateConfig

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "BadInputError",
    "CheckpointError",
    "CheckpointWarning",
    "ColumnMap",
    "ConfigError",
    "IntentionalSGD",
    "KeyedLearner",
    "Learner",
    "Monitor",
    "NonFiniteInputError",
    "NonFiniteStateError",
    "ObGD",
    "Position",
    "PsannStreamError",
    "Rollout",
    "RunningStats",
    "SineActivation",
    "StabilityWarning",
    "State",
    "StateBounds",
    "StateConfig",
    "StateShapeError",
    "StatefulNet",
    "StatefulSineLayer",
    "StreamingAdam",
    "load_checkpoint",
    "load_latest",
    "open_source",
    "predict_sequence",
    "predict_sequence_online",
    "rollout",
    "save_checkpoint",
]
