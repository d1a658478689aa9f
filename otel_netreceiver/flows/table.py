"""Cumulative flow series built from per-interval deltas.

The kernel hands over what changed in one interval (per flow key); `FlowTable` adds it to
a cumulative `Series` whose `start_ns` is when the key was first seen, and forgets keys
that stayed idle (no change and no active connection) for `idle_intervals` intervals.

Series and their stats are never changed once made: a change makes a new Series (sharing
what did not change, e.g. a histogram without new samples). So snapshots can hold them
without copies, and an unchanged series is the same object in successive snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import FailureReason, FlowKey, Histogram, Series, Snapshot, TcpStats


def add_tcp(total: TcpStats, delta: TcpStats) -> TcpStats:
    """New stats: `total` plus `delta` (counters, failures by reason, histograms).

    Neither input is changed; parts the delta leaves as they were are shared.
    """
    failed = total.failed
    if any(delta.failed.values()):
        failed = dict(failed)
        for reason, count in delta.failed.items():
            failed[reason] = failed.get(reason, 0) + count
    return TcpStats(
        total.opened + delta.opened, total.closed + delta.closed, total.active + delta.active,
        failed, total.bytes_sent + delta.bytes_sent, total.bytes_received + delta.bytes_received,
        total.packets_sent + delta.packets_sent, total.packets_received + delta.packets_received,
        total.retransmits + delta.retransmits, total.resets_sent + delta.resets_sent,
        total.resets_received + delta.resets_received,
        add_histogram(total.duration, delta.duration), add_histogram(total.rtt, delta.rtt))


def add_histogram(total: Histogram | None, delta: Histogram | None) -> Histogram | None:
    """A new histogram `total` + `delta`; one of them when the other adds nothing."""
    if delta is None or (delta.count == 0 and total is not None):
        return total
    if total is None:
        return delta
    if delta.bounds != total.bounds:
        raise ValueError("cannot add histograms with different bounds")
    return Histogram(total.bounds, [a + b for a, b in zip(total.counts, delta.counts)],
                     total.sum + delta.sum, total.count + delta.count)


def empty_tcp(duration_bounds: tuple[float, ...], rtt_bounds: tuple[float, ...]) -> TcpStats:
    """Zero stats with both histograms present (so every series exports them)."""
    return TcpStats(failed={reason: 0 for reason in FailureReason},
                    duration=Histogram.empty(duration_bounds), rtt=Histogram.empty(rtt_bounds))


@dataclass
class _Entry:
    series: Series
    changed: int  # the last apply() that changed it


class FlowTable:
    """Cumulative TCP series per FlowKey, fed once per interval with deltas."""

    def __init__(self, duration_bounds: tuple[float, ...], rtt_bounds: tuple[float, ...],
                 idle_intervals: int = 10):
        self.duration_bounds, self.rtt_bounds = duration_bounds, rtt_bounds
        self.idle_intervals = idle_intervals
        self._entries: dict[FlowKey, _Entry] = {}
        self._empty = empty_tcp(duration_bounds, rtt_bounds)  # shared, never changed
        self._applied = 0  # apply() calls so far

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, deltas: dict[FlowKey, TcpStats], now_ns: int) -> None:
        """Add one interval's deltas, then evict keys idle for `idle_intervals` intervals."""
        self._applied += 1
        for key, delta in deltas.items():
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(Series(now_ns, add_tcp(self._empty, delta)), self._applied)
            else:
                entry.series = Series(entry.series.start_ns, add_tcp(entry.series.stats, delta))
                entry.changed = self._applied
        self._evict()

    def _evict(self) -> None:
        """Forget keys unchanged for `idle_intervals` intervals with nothing active."""
        last = self._applied - self.idle_intervals
        idle = [key for key, entry in self._entries.items()
                if entry.changed <= last and entry.series.stats.active == 0]
        for key in idle:
            del self._entries[key]

    def fill(self, snapshot: Snapshot) -> None:
        """Put every series into `snapshot.tcp` (readers of a snapshot must not modify it).

        The table never changes a series it made, so no copy is needed; an unchanged
        series is the same object as in the last snapshot, so the work per interval
        follows the keys that changed, not every key tracked.
        """
        tcp = snapshot.tcp
        for key, entry in self._entries.items():
            tcp[key] = entry.series
