"""The cgroup_skb objects' structs in bpf/netreceiver.h match their ctypes mirrors, and
decoding of what the kernel sends."""

import struct
from collections import Counter

import pytest

from otel_netreceiver.probes import abi, libbpf
from otel_netreceiver.probes.cgroup_skb import (SkbProbe, SkbSettings, address_text,
                                                ctypes_layout, cgroup2_root)
from otel_netreceiver.probes.dns import DnsCollector, DnsSettings
from otel_netreceiver.probes.loader import OBJECTS_DIR, ProbeLoadError
from otel_netreceiver.probes.udp import UdpCollector, UdpSettings, flow_key
from otel_netreceiver.flows.model import Direction, Family, Workload

@pytest.mark.parametrize("name", sorted(abi.SKB_MIRRORS))
def test_mirror_matches_btf(name):
    mirror, obj = abi.SKB_MIRRORS[name]
    path = OBJECTS_DIR / f"{obj}.bpf.o"
    if not path.exists():
        pytest.skip(f"{path.name} not built (make bpf)")
    size, offsets = libbpf.struct_layout(str(path), name)
    assert ctypes_layout(mirror) == (size, offsets)


def mapped(text):
    return bytes(10) + b"\xff\xff" + bytes(int(part) for part in text.split("."))


@pytest.mark.parametrize("raw, family, text", [
    (mapped("198.18.30.1"), 4, "198.18.30.1"),
    (bytes.fromhex("20010db8000000000000000000000001"), 6, "2001:db8::1"),
])
def test_address_text(raw, family, text):
    assert address_text(raw, family) == text


@pytest.mark.parametrize("parts, flags", [
    ({"udp", "dns"}, abi.SKB_SETTING_DNS_TCP | abi.SKB_SETTING_UDP | abi.SKB_SETTING_DNS),
    ({"dns"}, abi.SKB_SETTING_DNS_TCP | abi.SKB_SETTING_DNS),
    ({"udp"}, abi.SKB_SETTING_UDP),  # DNS over TCP means nothing without the DNS part
])
def test_settings_to_c(parts, flags):
    settings = SkbSettings(dns_ports=(53, 5353), ipv6=False, dns_over_tcp=True).to_c(
        frozenset(parts))
    assert list(settings.dns_ports)[:3] == [53, 5353, 0] and settings.flags == flags
    with pytest.raises(ValueError):
        SkbSettings(dns_ports=tuple(range(1, 10))).to_c()


def test_cgroup2_root_from_mounts(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"
                      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    assert str(cgroup2_root(str(mounts))) == "/sys/fs/cgroup/unified"


def event(transport, payload, sent=1, captured=None):
    record = abi.DnsEvent(timestamp_ns=5, local_port=40000, remote_port=53,
                       payload_len=len(payload), sent=sent, transport=transport, family=4)
    record.id.cgroup_id, record.id.tgid = 42, 7
    record.id.comm[:3] = list(b"dig")
    record.local[:], record.remote[:] = list(mapped("198.18.30.1")), list(mapped("198.18.30.2"))
    record.captured = len(payload) if captured is None else captured
    record.payload[:len(payload)] = list(payload)
    return bytes(record)


class TrackerSpy:
    """Stands for the DnsTracker: keeps what the collector hands it."""

    def __init__(self):
        self.seen, self.losses = [], Counter()

    def observe_fields(self, *fields):
        self.seen.append(fields)


def decoded(*records):
    collector = DnsCollector()
    collector.tracker = TrackerSpy()
    collector._on_records(list(records))
    return collector.tracker


def test_decode_udp_event():
    (seen,) = decoded(event(17, b"\x12\x34" + bytes(10))).seen
    assert seen == (5, Workload(42, 7, "dig"), True, ("198.18.30.1", 40000),
                    ("198.18.30.2", 53), b"\x12\x34" + bytes(10))


def test_decode_uses_the_family_of_each_record():
    v4, v6 = event(17, bytes(12)), bytearray(event(17, bytes(12)))
    v6[82] = 6  # the same 16 bytes read as IPv6: the cache must not mix them up
    first, second = decoded(v4, bytes(v6)).seen
    assert first[3][0] == "198.18.30.1" and second[3][0] == "::ffff:198.18.30.1"


@pytest.mark.parametrize("payload, count, cut", [
    (b"\x00\x02ab\x00\x01c", 2, 0),   # two messages in one segment
    (b"\x00\x09abc", 0, 1),          # a message continued in the next segment
])
def test_decode_tcp_event_splits_length_prefixed_messages(payload, count, cut):
    tracker = decoded(event(6, payload))
    assert (len(tracker.seen), tracker.losses["dns.tcp_message_cut"]) == (count, cut)


def test_udp_flow_key_conversion():
    raw = abi.FlowKey(server_port=9999, direction=1, transport=17, family=4)
    raw.id.cgroup_id, raw.id.tgid = 42, 7
    raw.peer[:], raw.local[:] = list(mapped("198.18.30.1")), list(mapped("198.18.30.2"))
    key = flow_key(raw)
    assert (key.direction, key.family, key.peer_address, key.local_address, key.server_port) == (
        Direction.INCOMING, Family.IPV4, "198.18.30.1", "198.18.30.2", 9999)
    raw.direction = 0
    assert flow_key(raw).local_address == "" and flow_key(raw).direction == Direction.OUTGOING


def test_event_header_format_matches_mirror():
    assert struct.calcsize("<QQI16sI16s16sHHHHBBB5x") == abi.DnsEvent.payload.offset


def test_unreadable_record_is_counted_not_raised():
    collector = DnsCollector()
    collector._on_records([b"\x00" * 10, b"\x00" * 60])
    assert collector.tracker.losses["dns.bad_record"] == 2 and collector.records == 2


@pytest.mark.parametrize("make", [
    lambda path: DnsCollector(DnsSettings(object_path=path)),
    lambda path: UdpCollector(UdpSettings(object_path=path)),
])
def test_missing_object_is_a_one_line_error(tmp_path, make):
    with pytest.raises(ProbeLoadError, match=r"not built: run `make bpf`$") as failure:
        make(str(tmp_path / "missing.bpf.o")).__enter__()
    assert "\n" not in str(failure.value)


class FakeMap:
    def __init__(self):
        self.max_entries = None

    def set_max_entries(self, count):
        self.max_entries = count


class FakeObject:
    """What SkbProbe's configure step writes: the settings global and map sizes."""

    def __init__(self):
        self.globals, self.maps = {}, {}

    def set_global(self, name, data):
        self.globals[name] = data

    def map(self, name):
        return self.maps.setdefault(name, FakeMap())


@pytest.fixture
def loads(monkeypatch):
    """Every load SkbProbe asks for: (configured object, skipped programs, open?)."""
    from contextlib import contextmanager

    from otel_netreceiver.probes import cgroup_skb
    made = []

    @contextmanager
    def attached(name, configure, path=None, cgroup=None, skip=frozenset()):
        obj = FakeObject()
        configure(obj)
        made.append({"name": name, "obj": obj, "skip": skip, "open": True})
        try:
            yield obj
        finally:
            made[-1]["open"] = False

    monkeypatch.setattr(cgroup_skb, "attached", attached)
    return made


def flags_of(obj):
    return abi.SkbSettings.from_buffer_copy(obj.globals["settings"]).flags


@pytest.mark.parametrize("parts, flags, skip, ring, udp_entries", [
    (("udp", "dns"), abi.SKB_SETTING_UDP | abi.SKB_SETTING_DNS | abi.SKB_SETTING_DNS_TCP,
     frozenset(), DnsSettings.ring_buffer_bytes, UdpSettings.max_flows),
    (("udp",), abi.SKB_SETTING_UDP, frozenset(), 4096, UdpSettings.max_flows),
    (("dns",), abi.SKB_SETTING_DNS | abi.SKB_SETTING_DNS_TCP,
     frozenset({"udp_bind4", "udp_bind6"}), DnsSettings.ring_buffer_bytes, 1),
])
def test_probe_loads_once_with_only_the_parts_in_use(loads, parts, flags, skip, ring,
                                                     udp_entries):
    probe = SkbProbe(SkbSettings(ipv6=False))
    makers = {"udp": lambda: UdpCollector(probe=probe), "dns": lambda: DnsCollector(probe=probe)}
    collectors = [makers[part]() for part in parts]
    for collector in collectors:
        probe.__enter__()  # what each collector's __enter__ does first
    assert len(loads) == 1 and loads[0]["name"] == "skb" and loads[0]["skip"] == skip
    obj = loads[0]["obj"]
    assert flags_of(obj) == flags
    assert obj.maps["dns_events"].max_entries == ring
    assert obj.maps["udp_flows_a"].max_entries == obj.maps["udp_flows_b"].max_entries == udp_entries
    for collector in collectors[1:]:
        probe.__exit__(None, None, None)
    assert loads[0]["open"]  # detached only when the last user leaves
    probe.__exit__(None, None, None)
    assert not loads[0]["open"] and probe.loaded is None


def test_probe_refuses_parts_after_load(loads):
    probe = SkbProbe()
    probe.use("udp", lambda obj: None)
    with probe:
        with pytest.raises(RuntimeError, match="after the object was loaded"):
            probe.use("dns", lambda obj: None)
    with pytest.raises(ValueError, match="unknown cgroup_skb part 'tcp'"):
        probe.use("tcp", lambda obj: None)


def test_probe_without_parts_attaches_nothing(loads):
    with pytest.raises(ValueError, match="no part in use"):
        SkbProbe().__enter__()
    assert loads == []
