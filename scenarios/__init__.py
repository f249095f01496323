"""Stream generators and evaluation scenarios, installed as ``psann_stream.scenarios``."""

from .sine import SineStream, regime_switching_sine

__all__ = ["SineStream", "regime_switching_sine"]
