"""Kernel side, user half: the libbpf binding, the loader and the collectors."""

from .collector import Collector
from .loader import ProbeAttachError, ProbeError, ProbeLoadError

__all__ = ["Collector", "ProbeAttachError", "ProbeError", "ProbeLoadError"]
