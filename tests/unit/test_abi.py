"""The ctypes mirrors match the C structs (from the built objects' BTF), and decoding."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from otel_netreceiver.flows.model import Direction, Family, FailureReason, Histogram, Transport
from otel_netreceiver.probes import abi, libbpf
from otel_netreceiver.probes.loader import OBJECTS_DIR
from otel_netreceiver.probes.tcp import (FLOW_KEY, FLOW_STATS, TcpSettings, decode_key,
                                         decode_stats)

OBJECT = OBJECTS_DIR / "tcp.bpf.o"


@pytest.fixture(scope="module")
def tcp_object() -> Path:
    if not OBJECT.exists():
        pytest.skip(f"{OBJECT} not built: run `make bpf`")
    return OBJECT


@pytest.mark.parametrize("struct_name", sorted(abi.MIRRORS))
def test_mirror_matches_btf(tcp_object, struct_name):
    size, offsets = libbpf.struct_layout(str(tcp_object), struct_name)
    mirror = abi.MIRRORS[struct_name]
    assert ctypes.sizeof(mirror) == size
    assert {name: getattr(mirror, name).offset for name, _ in mirror._fields_} == offsets


@pytest.mark.parametrize("raw, family, text", [
    (bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 1]), abi.Family.IPV4, "198.18.0.1"),
    (bytes(12) + bytes([127, 0, 0, 1]), abi.Family.IPV4, "127.0.0.1"),
    (bytes(range(1, 13)) + bytes([10, 0, 0, 255]), abi.Family.IPV4, "10.0.0.255"),
    (bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 1]), abi.Family.IPV6, "::ffff:c612:1"),
    (bytes.fromhex("20010db8000000000000000000000001"), abi.Family.IPV6, "2001:db8::1"),
    (bytes(15) + b"\x01", abi.Family.IPV6, "::1"),
])
def test_address_text(raw, family, text):
    assert abi.address_text(raw, family) == text


@pytest.mark.parametrize("bounds, expected", [
    ((0.001, 0.5, 300.0), [1_000_000, 500_000_000, 300_000_000_000]),
    ((0.00001,), [10_000]),
    ((), []),
])
def test_bounds_in_nanoseconds(bounds, expected):
    assert abi.bounds_ns(bounds) == expected


@pytest.mark.parametrize("bounds", [(1.0, 0.5), (1.0, 1.0), tuple(range(1, 18))])
def test_bad_bounds_rejected(bounds):
    with pytest.raises(ValueError):
        abi.bounds_ns(bounds)


def test_settings_carry_bounds_and_counts():
    settings = abi.make_settings((0.001, 1.0), (0.00001,))
    assert (settings.duration_nbounds, settings.rtt_nbounds) == (2, 1)
    assert list(settings.duration_bounds_ns[:3]) == [1_000_000, 1_000_000_000, 0]


def raw_key(direction: abi.Direction) -> abi.FlowKey:
    key = abi.FlowKey()
    key.id.cgroup_id, key.id.tgid = 4242, 17
    key.id.comm[:5] = list(b"nginx")
    key.peer[:] = list(bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 1]))
    key.local[:] = list(bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 2]))
    key.server_port, key.direction = 443, direction
    key.transport, key.family = abi.Transport.TCP, abi.Family.IPV4
    return key


@pytest.mark.parametrize("direction, local", [
    (abi.Direction.OUTGOING, ""), (abi.Direction.INCOMING, "198.18.0.2")])
def test_decode_key(direction, local):
    key = decode_key(raw_key(direction))
    assert (key.workload.cgroup_id, key.workload.pid, key.workload.comm) == (4242, 17, "nginx")
    assert (key.transport, key.family, key.peer_address) == (Transport.TCP, Family.IPV4,
                                                             "198.18.0.1")
    assert key.direction == Direction(direction.name.lower())
    assert (key.server_port, key.local_address) == (443, local)


def test_decode_histogram_seconds_and_overflow():
    raw = abi.FlowStats()
    raw.rtt.buckets[0], raw.rtt.buckets[2], raw.rtt.buckets[16] = 1, 2, 3
    raw.rtt.sum_ns, raw.rtt.count = 1_500_000_000, 6
    hist = decode_stats(raw, TcpSettings(rtt_bounds=(0.001, 1.0))).rtt
    assert hist.counts == [1, 0, 5] and hist.count == 6 and hist.sum == 1.5


def test_decode_stats():
    raw = abi.FlowStats(opened=3, closed=2, active=1, bytes_tx=10, bytes_rx=20,
                        packets_tx=3, packets_rx=4, retransmits=1, resets_tx=1, resets_rx=0)
    raw.failed[abi.Failure.TIMEOUT] = 7
    stats = decode_stats(raw, TcpSettings())
    assert (stats.opened, stats.closed, stats.active) == (3, 2, 1)
    assert (stats.bytes_sent, stats.bytes_received, stats.retransmits) == (10, 20, 1)
    assert stats.failed[FailureReason.TIMEOUT] == 7 and stats.failed[FailureReason.REFUSED] == 0
    assert stats.duration is None and stats.rtt is None  # no samples in the interval


def test_decode_stats_reads_every_field_in_place():
    raw = abi.FlowStats()
    names = [name for name, _ in abi.FlowStats._fields_ if name not in ("failed", "duration", "rtt")]
    for number, name in enumerate(names, start=1):
        setattr(raw, name, number * 11)
    for i in range(abi.FAIL_MAX):
        raw.failed[i] = 100 + i
    for hist, base in ((raw.duration, 1000), (raw.rtt, 2000)):
        for i in range(abi.HIST_BUCKETS):
            hist.buckets[i] = base + i
        hist.sum_ns, hist.count = base * 1_000_000, base + 99
    settings = TcpSettings()
    stats = decode_stats(raw, settings)
    assert [stats.opened, stats.closed, stats.active] == [11, 22, 33]
    assert [stats.bytes_sent, stats.bytes_received, stats.packets_sent, stats.packets_received,
            stats.retransmits, stats.resets_sent, stats.resets_received] == [44, 55, 66, 77, 88, 99, 110]
    assert list(stats.failed.values()) == [100 + i for i in range(abi.FAIL_MAX)]
    assert stats.failed[FailureReason.REFUSED] == raw.failed[abi.Failure.REFUSED]
    for decoded, bounds, base in ((stats.duration, settings.duration_bounds, 1000),
                                  (stats.rtt, settings.rtt_bounds, 2000)):
        buckets = [base + i for i in range(abi.HIST_BUCKETS)]
        assert decoded == Histogram(bounds, buckets[:len(bounds)] + [sum(buckets[len(bounds):])],
                                    base / 1000, base + 99)
    assert stats.rtt.sum == 2.0 and stats.rtt.count == 2099


def test_flow_stats_unpacks_the_whole_mirror():
    assert FLOW_STATS.size == ctypes.sizeof(abi.FlowStats)


def test_flow_key_unpacks_every_field_of_the_mirror():
    raw = raw_key(abi.Direction.INCOMING)
    raw.id.comm[5:] = list(b"-worker\0x\0\0")
    assert FLOW_KEY.size == ctypes.sizeof(abi.FlowKey)
    assert FLOW_KEY.unpack(bytes(raw)) == (
        raw.id.cgroup_id, raw.id.tgid, bytes(raw.id.comm), bytes(raw.peer), bytes(raw.local),
        raw.server_port, raw.direction, raw.transport, raw.family)
    assert decode_key(bytes(raw)) == decode_key(raw)
    assert decode_key(raw).workload.comm == "nginx-worker"


def test_keys_of_one_workload_share_one_workload_object():
    workloads = {}
    first = decode_key(raw_key(abi.Direction.OUTGOING), workloads)
    second = decode_key(raw_key(abi.Direction.INCOMING), workloads)
    assert first.workload is second.workload and first != second
    assert decode_key(raw_key(abi.Direction.OUTGOING)).workload == first.workload


@pytest.mark.parametrize("family", [abi.Family.IPV4, abi.Family.IPV6])
def test_keys_with_one_peer_share_its_address_text(family):
    raw = bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 77])
    assert abi.address_text(bytearray(raw), family) is abi.address_text(bytes(raw), family)
