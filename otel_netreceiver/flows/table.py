"""Cumulative flow series built from per-interval deltas.

The kernel hands over what changed in one interval (per flow key); `FlowTable` adds it to
a cumulative `Series` whose `start_ns` is when the key was first seen, and forgets keys
that stayed idle (no change and no active connection) for `idle_intervals` intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import FailureReason, FlowKey, Histogram, Series, Snapshot, TcpStats

_COUNTERS = ("opened", "closed", "active", "bytes_sent", "bytes_received", "packets_sent",
             "packets_received", "retransmits", "resets_sent", "resets_received")


def add_tcp(total: TcpStats, delta: TcpStats) -> None:
    """Add a delta into cumulative stats (counters, failures by reason, histograms)."""
    for name in _COUNTERS:
        setattr(total, name, getattr(total, name) + getattr(delta, name))
    for reason, count in delta.failed.items():
        total.failed[reason] = total.failed.get(reason, 0) + count
    total.duration = _add_hist(total.duration, delta.duration)
    total.rtt = _add_hist(total.rtt, delta.rtt)


def _add_hist(total: Histogram | None, delta: Histogram | None) -> Histogram | None:
    if delta is None:
        return total
    if total is None:
        return copy_histogram(delta)
    total.merge(delta)
    return total


def copy_histogram(hist: Histogram | None) -> Histogram | None:
    return None if hist is None else Histogram(hist.bounds, list(hist.counts), hist.sum, hist.count)


def copy_series(series: Series) -> Series:
    """An independent copy of a TCP series (`copy.deepcopy` costs ~20x more per series)."""
    stats = series.stats
    return Series(series.start_ns, TcpStats(
        stats.opened, stats.closed, stats.active, dict(stats.failed), stats.bytes_sent,
        stats.bytes_received, stats.packets_sent, stats.packets_received, stats.retransmits,
        stats.resets_sent, stats.resets_received, copy_histogram(stats.duration),
        copy_histogram(stats.rtt)))


def empty_tcp(duration_bounds: tuple[float, ...], rtt_bounds: tuple[float, ...]) -> TcpStats:
    """Zero stats with both histograms present (so every series exports them)."""
    return TcpStats(failed={reason: 0 for reason in FailureReason},
                    duration=Histogram.empty(duration_bounds), rtt=Histogram.empty(rtt_bounds))


@dataclass
class _Entry:
    series: Series
    idle: int = 0
    shared: bool = False  # `series` is in a snapshot: copy it before the next change


class FlowTable:
    """Cumulative TCP series per FlowKey, fed once per interval with deltas."""

    def __init__(self, duration_bounds: tuple[float, ...], rtt_bounds: tuple[float, ...],
                 idle_intervals: int = 10):
        self.duration_bounds, self.rtt_bounds = duration_bounds, rtt_bounds
        self.idle_intervals = idle_intervals
        self._entries: dict[FlowKey, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, deltas: dict[FlowKey, TcpStats], now_ns: int) -> None:
        """Add one interval's deltas, then age and evict idle keys."""
        for key, delta in deltas.items():
            entry = self._entries.get(key)
            if entry is None:
                stats = empty_tcp(self.duration_bounds, self.rtt_bounds)
                entry = self._entries[key] = _Entry(Series(start_ns=now_ns, stats=stats))
            if entry.shared:
                entry.series, entry.shared = copy_series(entry.series), False
            add_tcp(entry.series.stats, delta)
            entry.idle = -1  # becomes 0 below: changed this interval
        self._age()

    def _age(self) -> None:
        for key, entry in list(self._entries.items()):
            entry.idle += 1
            if entry.idle >= self.idle_intervals and entry.series.stats.active == 0:
                del self._entries[key]

    def fill(self, snapshot: Snapshot) -> None:
        """Put every series into `snapshot.tcp`; the table never changes them afterwards.

        Snapshots may outlive the interval, so a handed-out series is copied before the
        table next changes it (copy on write): one Series per key is kept, an unchanged
        series is the same object in successive snapshots, and the work per interval
        follows the keys that changed. Readers of a snapshot must not modify it.
        """
        for key, entry in self._entries.items():
            snapshot.tcp[key] = entry.series
            entry.shared = True
