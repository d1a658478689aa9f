"""The protocol every kernel-side collector (TCP, UDP, DNS) implements for the agent."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..flows.model import Snapshot


@runtime_checkable
class Collector(Protocol):
    """Loads its BPF object on enter, detaches on exit, and fills snapshots in between."""

    def __enter__(self) -> "Collector":
        """Load and attach; raises ProbeLoadError / ProbeAttachError (one-line str())."""
        ...

    def __exit__(self, *exc) -> None:
        """Detach and close everything."""
        ...

    def collect(self, snapshot: Snapshot) -> None:
        """Once per interval: add this collector's cumulative series, losses and gauges."""
        ...
