"""Cumulative flow series built from per-interval deltas.

The kernel hands over what changed in one interval (per flow key); `FlowTable` adds it to
a cumulative `Series` whose `start_ns` is when the key was first seen, and forgets keys
that stayed idle (no change and no active connection) for `idle_intervals` intervals.

Series and their stats are never changed once made: a change makes a new Series (sharing
what did not change, e.g. a histogram without new samples). So snapshots can hold them
without copies, and an unchanged series is the same object in successive snapshots.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .model import FailureReason, FlowKey, Histogram, Series, Snapshot, TcpStats


def add_tcp(total: TcpStats, delta: TcpStats) -> TcpStats:
    """New stats: `total` plus `delta` (counters, failures by reason, histograms).

    Neither input is changed; parts the delta leaves as they were are shared.
    """
    failed = add_failed(total.failed, delta.failed.items()) if any(delta.failed.values()) else total.failed
    return TcpStats(
        total.opened + delta.opened, total.closed + delta.closed, total.active + delta.active,
        failed, total.bytes_sent + delta.bytes_sent, total.bytes_received + delta.bytes_received,
        total.packets_sent + delta.packets_sent, total.packets_received + delta.packets_received,
        total.retransmits + delta.retransmits, total.resets_sent + delta.resets_sent,
        total.resets_received + delta.resets_received,
        add_histogram(total.duration, delta.duration), add_histogram(total.rtt, delta.rtt))


def add_failed(total: dict[FailureReason, int], counts: Iterable[tuple[FailureReason, int]]
               ) -> dict[FailureReason, int]:
    """A new failures-by-reason dict: `total` plus each (reason, count); `total` is left as it was."""
    failed = dict(total)
    for reason, count in counts:
        failed[reason] = failed.get(reason, 0) + count
    return failed


def add_histogram(total: Histogram | None, delta: Histogram | None) -> Histogram | None:
    """A new histogram `total` + `delta`; one of them when the other adds nothing (a
    histogram without samples is no histogram: `total` may stay None)."""
    if delta is None or delta.count == 0:
        return total
    if total is None:
        return delta
    if delta.bounds != total.bounds:
        raise ValueError("cannot add histograms with different bounds")
    return Histogram(total.bounds, list(map(operator.add, total.counts, delta.counts)),
                     total.sum + delta.sum, total.count + delta.count)


def empty_tcp() -> TcpStats:
    """Zero stats: no failure yet and no histogram until its first sample (as an SDK
    histogram, a series exports `tcp.rtt` and `tcp.connection.duration` once they have
    one: an empty point says nothing, and long-lived connections never close)."""
    return TcpStats(failed={reason: 0 for reason in FailureReason})


class FlowTable:
    """Cumulative TCP series per FlowKey, fed once per interval with deltas."""

    def __init__(self, idle_intervals: int = 10):
        self.idle_intervals = idle_intervals
        self._series: dict[FlowKey, Series] = {}
        self._changed: dict[FlowKey, int] = {}  # the last apply() that changed each key
        self._empty = empty_tcp()  # shared, never changed
        self._applied = 0  # apply() calls so far

    def __len__(self) -> int:
        return len(self._series)

    def apply(self, deltas: Mapping[FlowKey, Any], now_ns: int,
              add: Callable[[TcpStats, Any], TcpStats] = add_tcp) -> None:
        """Add one interval's deltas, then evict keys idle for `idle_intervals` intervals.

        The deltas are TcpStats, or what `add(total, delta)` adds to a total (the TCP
        collector's are the kernel's words).
        """
        self._applied += 1
        series, empty = self._series, self._empty
        for key, delta in deltas.items():
            old = series.get(key)
            series[key] = (Series(now_ns, add(empty, delta)) if old is None
                           else Series(old.start_ns, add(old.stats, delta)))
        self._changed.update(dict.fromkeys(deltas, self._applied))
        self._evict()

    def _evict(self) -> None:
        """Forget keys unchanged for `idle_intervals` intervals with nothing active."""
        last, series = self._applied - self.idle_intervals, self._series
        idle = [key for key, changed in self._changed.items()
                if changed <= last and series[key].stats.active == 0]
        for key in idle:
            del series[key], self._changed[key]

    def fill(self, snapshot: Snapshot) -> None:
        """Put every series into `snapshot.tcp` (readers of a snapshot must not modify it).

        The table never changes a series it made, so no copy is needed; an unchanged
        series is the same object as in the last snapshot. Keys are not hashed again
        (a dict update reuses the stored hashes).
        """
        snapshot.tcp.update(self._series)
