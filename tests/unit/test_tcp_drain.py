"""TcpCollector.drain: the drained map's bytes become one delta (the kernel's words) per
flow key; add_words adds such words to a total exactly as add_tcp adds decoded stats."""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import pytest

from otel_netreceiver.flows.model import FailureReason, Histogram, Series, Snapshot, TcpStats
from otel_netreceiver.flows.table import FlowTable, add_tcp, empty_tcp
from otel_netreceiver.probes import abi, libbpf, tcp


@dataclass
class FakeMap:
    fd: int
    max_entries: int = 64


def raw_key(port: int, comm: bytes = b"curl") -> abi.FlowKey:
    key = abi.FlowKey()
    key.id.cgroup_id, key.id.tgid = 99, 7
    key.id.comm[:len(comm)] = list(comm)
    key.peer[:] = list(bytes(10) + b"\xff\xff" + bytes([198, 18, 90, 1]))
    key.server_port, key.direction = port, abi.Direction.OUTGOING
    key.transport, key.family = abi.Transport.TCP, abi.Family.IPV4
    return key


def raw_stats(seed: int, failures: bool = False, rtt: bool = False) -> abi.FlowStats:
    stats = abi.FlowStats(opened=seed, closed=seed // 2, active=seed - seed // 2,
                          bytes_tx=100 * seed, bytes_rx=7 * seed, packets_tx=seed + 1,
                          packets_rx=seed + 2, retransmits=seed % 3, resets_tx=1, resets_rx=2)
    if failures:
        stats.failed[abi.Failure.REFUSED], stats.failed[abi.Failure.OTHER] = seed, 1
    if rtt:
        stats.rtt.buckets[1], stats.rtt.buckets[16] = seed, 2
        stats.rtt.sum_ns, stats.rtt.count = 5000 * seed, seed + 2
    return stats


@pytest.fixture
def drained(monkeypatch):
    """drain() of a collector whose old map holds the given (key, stats) entries."""
    def run(entries):
        keys = b"".join(bytes(key) for key, _ in entries)
        values = b"".join(bytes(stats) for _, stats in entries)
        reads = []

        def read_batch_bytes(fd, key_size, value_size, max_entries, delete=False):
            reads.append((fd, key_size, value_size, max_entries, delete))
            return keys, values

        monkeypatch.setattr(libbpf, "read_batch_bytes", read_batch_bytes)
        monkeypatch.setattr(libbpf, "update", lambda *args: None)
        collector = tcp.TcpCollector()
        collector._inner, collector._outer_fd = [FakeMap(11), FakeMap(12)], 10
        deltas = collector.drain()
        assert reads == [(11, ctypes.sizeof(abi.FlowKey), ctypes.sizeof(abi.FlowStats), 64, True)]
        assert collector._slot == 1 and collector.drained_last == len(entries)
        return deltas
    return run


def test_empty_map_gives_no_deltas(drained):
    assert drained([]) == {}


def decoded(deltas: dict) -> dict:
    settings = tcp.TcpSettings()
    return {key: tcp.stats_from_words(words, settings.duration_bounds, settings.rtt_bounds)
            for key, words in deltas.items()}


def test_each_entry_is_decoded_like_decode_key_and_decode_stats(drained):
    settings = tcp.TcpSettings()
    entries = [(raw_key(80), raw_stats(3)), (raw_key(443), raw_stats(5, failures=True, rtt=True)),
               (raw_key(8080, b"nginx"), raw_stats(0, rtt=True))]
    expected = {tcp.decode_key(key): tcp.decode_stats(stats, settings) for key, stats in entries}
    deltas = decoded(drained(entries))
    assert deltas == expected and len(deltas) == 3
    refused = deltas[tcp.decode_key(raw_key(443))].failed
    assert refused[FailureReason.REFUSED] == 5 and refused[FailureReason.OTHER] == 1
    rtt = deltas[tcp.decode_key(raw_key(8080, b"nginx"))].rtt
    assert rtt == Histogram(settings.rtt_bounds, [0, 0] + [0] * 9 + [2], 0.0, 2)


def test_kernel_keys_that_decode_alike_are_added(drained):
    settings = tcp.TcpSettings()
    # the comm bytes after the terminating NUL differ: one FlowKey, two kernel keys
    one, two = raw_key(80, b"curl"), raw_key(80, b"curl\0xy")
    first, second = raw_stats(2), raw_stats(4, failures=True, rtt=True)
    deltas = decoded(drained([(one, first), (two, second)]))
    assert deltas == {tcp.decode_key(one): add_tcp(tcp.decode_stats(first, settings),
                                                   tcp.decode_stats(second, settings))}
    assert deltas[tcp.decode_key(one)].failed[FailureReason.REFUSED] == 4


def words(stats: abi.FlowStats) -> tuple[int, ...]:
    return tcp.FLOW_STATS.unpack(bytes(stats))


SETTINGS = tcp.TcpSettings()
BOUNDS = (SETTINGS.duration_bounds, SETTINGS.rtt_bounds)
HISTORY = [raw_stats(9, failures=True, rtt=True), raw_stats(1, rtt=True), raw_stats(2)]


def with_duration(stats: abi.FlowStats) -> abi.FlowStats:
    stats.duration.buckets[0], stats.duration.buckets[13], stats.duration.buckets[16] = 1, 2, 4
    stats.duration.sum_ns, stats.duration.count = 123_456_789, 7
    return stats


@pytest.mark.parametrize("total", [
    empty_tcp(),                                          # a new key's total
    TcpStats(),                                           # no histograms, no failure reasons
    TcpStats(failed={FailureReason.RESET: 3}),            # some reasons only
    tcp.decode_stats(HISTORY[0], SETTINGS),               # histograms with samples
], ids=["empty", "bare", "one-reason", "history"])
@pytest.mark.parametrize("entry", [
    raw_stats(0), raw_stats(4), raw_stats(6, failures=True), raw_stats(3, rtt=True),
    with_duration(raw_stats(5, failures=True, rtt=True)),
    abi.FlowStats(active=-2, closed=2, bytes_tx=2**40),
], ids=["zero", "counters", "failures", "rtt", "everything", "closing"])
def test_add_words_equals_add_tcp_of_the_decoded_words(total, entry):
    expected = add_tcp(total, tcp.decode_stats(entry, SETTINGS))
    assert tcp.add_words(BOUNDS, total, words(entry)) == expected


def test_add_words_shares_what_the_words_leave_as_it_was():
    total = tcp.decode_stats(with_duration(raw_stats(9, failures=True, rtt=True)), SETTINGS)
    result = tcp.add_words(BOUNDS, total, words(raw_stats(1)))
    assert result.failed is total.failed and result.rtt is total.rtt
    assert result.duration is total.duration and result.opened == total.opened + 1
    changed = tcp.add_words(BOUNDS, total, words(raw_stats(1, failures=True, rtt=True)))
    assert changed.failed is not total.failed and changed.rtt is not total.rtt
    assert total == tcp.decode_stats(with_duration(raw_stats(9, failures=True, rtt=True)),
                                     SETTINGS)  # the total itself is left as it was
    assert set(tcp._NO_FAILURES.values()) == {0}


def test_add_words_refuses_other_bounds():
    total = TcpStats(duration=Histogram.empty((0.5,)))
    with pytest.raises(ValueError, match="different bounds"):
        tcp.add_words(BOUNDS, total, words(with_duration(raw_stats(1))))


def test_collect_tables_the_drained_words(drained):
    """What collect() does with drain's deltas: the table adds them with add_words."""
    settings, collector_key = tcp.TcpSettings(), tcp.decode_key(raw_key(80))
    table = FlowTable()
    for entry in HISTORY:
        table.apply(drained([(raw_key(80), entry)]), 5, functools.partial(tcp.add_words, BOUNDS))
    snapshot = Snapshot(time_ns=9)
    table.fill(snapshot)
    expected = empty_tcp()
    for entry in HISTORY:
        expected = add_tcp(expected, tcp.decode_stats(entry, settings))
    assert snapshot.tcp == {collector_key: Series(5, expected)}
