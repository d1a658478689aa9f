"""FlowTable: per-interval deltas become cumulative series; idle keys are evicted."""

from __future__ import annotations

import dataclasses

import pytest

from otel_netreceiver.flows.model import (Direction, FailureReason, Family, FlowKey, Histogram,
                                          Snapshot, TcpStats, Transport, Workload)
from otel_netreceiver.flows.table import FlowTable, add_tcp, empty_tcp

DURATION, RTT = (0.1, 1.0), (0.001,)


def key(peer: str = "198.18.0.2", port: int = 80) -> FlowKey:
    return FlowKey(Workload(1, 2, "curl"), Transport.TCP, Family.IPV4, Direction.OUTGOING,
                   peer, port)


def delta(**counts) -> TcpStats:
    stats = TcpStats(**counts)
    stats.duration, stats.rtt = Histogram.empty(DURATION), Histogram.empty(RTT)
    return stats


def test_deltas_accumulate_and_start_time_is_first_seen():
    table = FlowTable()
    table.apply({key(): delta(opened=2, active=2, bytes_sent=10)}, now_ns=100)
    table.apply({key(): delta(closed=2, active=-2, bytes_sent=5)}, now_ns=200)
    snap = Snapshot(time_ns=200)
    table.fill(snap)
    series = snap.tcp[key()]
    assert series.start_ns == 100
    assert (series.stats.opened, series.stats.closed, series.stats.active) == (2, 2, 0)
    assert series.stats.bytes_sent == 15


def test_failures_and_histograms_merge():
    total = empty_tcp()
    one = delta(failed={FailureReason.TIMEOUT: 2})
    one.duration.counts, one.duration.sum, one.duration.count = [1, 0, 1], 2.05, 2
    total = add_tcp(add_tcp(total, one), one)
    assert total.failed[FailureReason.TIMEOUT] == 4 and total.failed[FailureReason.REFUSED] == 0
    assert total.duration.counts == [2, 0, 2] and total.duration.count == 4
    assert total.duration.sum == pytest.approx(4.1)


@pytest.mark.parametrize("active, idle_intervals, quiet, kept", [
    (0, 3, 2, True),    # not idle long enough
    (0, 3, 3, False),   # idle for 3 intervals, nothing active: evicted
    (1, 3, 10, True),   # a live connection keeps its key
])
def test_idle_eviction(active, idle_intervals, quiet, kept):
    table = FlowTable(idle_intervals=idle_intervals)
    table.apply({key(): delta(opened=1, active=active)}, now_ns=1)
    for step in range(quiet):
        table.apply({}, now_ns=2 + step)
    assert (len(table) == 1) is kept


def test_changed_key_is_not_evicted():
    table = FlowTable(idle_intervals=2)
    for step in range(5):
        table.apply({key(): delta(bytes_sent=1)}, now_ns=step)
    assert len(table) == 1


def test_snapshot_gets_copies():
    table = FlowTable()
    table.apply({key(): delta(opened=1)}, now_ns=1)
    first = Snapshot(time_ns=1)
    table.fill(first)
    table.apply({key(): delta(opened=1)}, now_ns=2)
    assert first.tcp[key()].stats.opened == 1


def test_unchanged_series_are_not_copied_again():
    table = FlowTable()
    table.apply({key(port=80): delta(opened=1), key(port=443): delta(opened=1)}, now_ns=1)
    first = Snapshot(time_ns=1)
    table.fill(first)
    table.apply({key(port=443): delta(opened=2)}, now_ns=2)
    second = Snapshot(time_ns=2)
    table.fill(second)
    assert second.tcp[key(port=80)] is first.tcp[key(port=80)]
    assert second.tcp[key(port=443)] is not first.tcp[key(port=443)]
    assert (first.tcp[key(port=443)].stats.opened, second.tcp[key(port=443)].stats.opened) == (1, 3)


def test_keys_stay_apart():
    table = FlowTable()
    table.apply({key(port=80): delta(opened=1), key(port=443): delta(opened=3)}, now_ns=1)
    snap = Snapshot(time_ns=1)
    table.fill(snap)
    assert {k.server_port: s.stats.opened for k, s in snap.tcp.items()} == {80: 1, 443: 3}


def test_add_tcp_changes_neither_input_and_shares_what_did_not_change():
    values = {f.name: index + 1 for index, f in enumerate(dataclasses.fields(TcpStats))}
    values["failed"] = {FailureReason.REFUSED: 3}
    values["duration"] = Histogram(DURATION, [1, 2, 3], 4.5, 6)
    values["rtt"] = Histogram(RTT, [7, 8], 0.5, 15)
    total = TcpStats(**values)
    change = TcpStats(**{name: 100 for name in values if name not in ("failed", "duration", "rtt")},
                      failed={FailureReason.REFUSED: 1}, duration=Histogram(DURATION, [0, 1, 0], 0.5, 1),
                      rtt=Histogram.empty(RTT))
    result = add_tcp(total, change)
    assert [getattr(result, name) - getattr(total, name) for name in values
            if name not in ("failed", "duration", "rtt")] == [100] * 10
    assert result.failed == {FailureReason.REFUSED: 4} and total.failed == {FailureReason.REFUSED: 3}
    assert result.duration == Histogram(DURATION, [1, 3, 3], 5.0, 7)
    assert total.duration == Histogram(DURATION, [1, 2, 3], 4.5, 6)
    assert result.rtt is total.rtt  # no samples in the delta: shared, not copied
    quiet = add_tcp(total, TcpStats(failed={FailureReason.REFUSED: 0}))
    assert quiet.failed is total.failed and quiet.duration is total.duration


def test_histograms_with_other_bounds_are_refused():
    with pytest.raises(ValueError, match="different bounds"):
        add_tcp(TcpStats(rtt=Histogram.empty(RTT)), TcpStats(rtt=Histogram((0.5,), [1, 0], 0.1, 1)))


def test_apply_adds_deltas_of_any_form_with_the_given_add():
    def add_opened(total: TcpStats, opened: int) -> TcpStats:
        return dataclasses.replace(total, opened=total.opened + opened)

    table = FlowTable()
    table.apply({key(port=1): 2, key(port=2): 5}, now_ns=10, add=add_opened)
    table.apply({key(port=1): 3}, now_ns=20, add=add_opened)
    snap = Snapshot(time_ns=20)
    table.fill(snap)
    assert {k.server_port: (s.start_ns, s.stats.opened) for k, s in snap.tcp.items()} == {
        1: (10, 5), 2: (10, 5)}
    assert snap.tcp[key(port=2)].stats == TcpStats(opened=5, failed=empty_tcp().failed)  # the empty total + 5


def test_a_histogram_appears_with_its_first_sample():
    """No empty histogram points: a flow whose connections never closed has no duration."""
    table = FlowTable()
    table.apply({key(): delta(opened=1, active=1)}, now_ns=100)
    snap = Snapshot(time_ns=100)
    table.fill(snap)
    assert (snap.tcp[key()].stats.duration, snap.tcp[key()].stats.rtt) == (None, None)
    sampled = delta()
    sampled.rtt = Histogram(RTT, [1, 0], 0.0005, 1)
    table.apply({key(): sampled}, now_ns=200)
    table.fill(snap)
    assert snap.tcp[key()].stats.rtt == sampled.rtt and snap.tcp[key()].stats.duration is None
