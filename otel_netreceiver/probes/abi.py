"""ctypes mirrors of bpf/netreceiver.h, one per C struct.

tests/unit/test_abi.py checks MIRRORS against tcp.bpf.o's BTF, tests/unit/test_dns_abi.py
checks SKB_MIRRORS against skb.bpf.o's.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import sys
from ctypes import Structure, c_int64, c_uint8, c_uint16, c_uint32, c_uint64
from enum import IntEnum

COMM_LEN = 16
ADDR_LEN = 16
HIST_MAX_BOUNDS = 16
HIST_BUCKETS = HIST_MAX_BOUNDS + 1


class Direction(IntEnum):
    OUTGOING = 0
    INCOMING = 1


class Family(IntEnum):
    IPV4 = 4
    IPV6 = 6


class Transport(IntEnum):
    TCP = 6
    UDP = 17


class Failure(IntEnum):
    REFUSED = 0
    TIMEOUT = 1
    RESET = 2
    UNREACHABLE = 3
    OTHER = 4


FAIL_MAX = 5


class Loss(IntEnum):
    """enum nr_loss; the names (lowercase) are the loss reasons user space reports."""

    SOCKETS_FULL = 0
    FLOWS_FULL = 1
    LISTENERS_FULL = 2
    RINGBUF_FULL = 3
    CLOSE_MISSED = 4


LOSS_MAX = 8


class Gauge(IntEnum):
    SOCKETS = 0
    SOCKETS_REPLACED = 1


GAUGE_MAX = 4


class Identity(Structure):
    _fields_ = [
        ("cgroup_id", c_uint64),
        ("tgid", c_uint32),
        ("comm", c_uint8 * COMM_LEN),
        ("_pad", c_uint32),
    ]


class FlowKey(Structure):
    _fields_ = [
        ("id", Identity),
        ("peer", c_uint8 * ADDR_LEN),
        ("local", c_uint8 * ADDR_LEN),
        ("server_port", c_uint16),
        ("direction", c_uint8),
        ("transport", c_uint8),
        ("family", c_uint8),
        ("_pad", c_uint8 * 3),
    ]


class Histogram(Structure):
    _fields_ = [
        ("buckets", c_uint64 * HIST_BUCKETS),
        ("sum_ns", c_uint64),
        ("count", c_uint64),
    ]


class FlowStats(Structure):
    _fields_ = [
        ("opened", c_uint64),
        ("closed", c_uint64),
        ("active", c_int64),
        ("failed", c_uint64 * FAIL_MAX),
        ("bytes_tx", c_int64),
        ("bytes_rx", c_int64),
        ("packets_tx", c_int64),
        ("packets_rx", c_int64),
        ("retransmits", c_int64),
        ("resets_tx", c_uint64),
        ("resets_rx", c_uint64),
        ("duration", Histogram),
        ("rtt", Histogram),
    ]


class Settings(Structure):
    _fields_ = [
        ("duration_bounds_ns", c_uint64 * HIST_MAX_BOUNDS),
        ("rtt_bounds_ns", c_uint64 * HIST_MAX_BOUNDS),
        ("duration_nbounds", c_uint32),
        ("rtt_nbounds", c_uint32),
        ("flags", c_uint32),
        ("_pad", c_uint32),
    ]


# --- UDP flows and DNS: the cgroup_skb object skb.bpf.o --------------------------------

MAX_DNS_PORTS = 8
DNS_CAPTURE = 512
SKB_SETTING_IPV6, SKB_SETTING_DNS_TCP = 1 << 0, 1 << 1
SKB_SETTING_UDP, SKB_SETTING_DNS = 1 << 2, 1 << 3  # which parts of skb.bpf.o run


class SkbLoss(IntEnum):
    """enum nr_skb_loss: indexes the `losses` array of skb.bpf.o."""

    FLOWS_FULL = 0
    RINGBUF_FULL = 1
    OWNERS_FULL = 2


SKB_LOSS_MAX = 4


class UdpStats(Structure):
    _fields_ = [("bytes_tx", c_uint64), ("bytes_rx", c_uint64),
                ("packets_tx", c_uint64), ("packets_rx", c_uint64)]


class SkbSettings(Structure):
    _fields_ = [("dns_ports", c_uint16 * MAX_DNS_PORTS), ("flags", c_uint32)]


class DnsEvent(Structure):
    _fields_ = [("timestamp_ns", c_uint64), ("id", Identity),
                ("local", c_uint8 * ADDR_LEN), ("remote", c_uint8 * ADDR_LEN),
                ("local_port", c_uint16), ("remote_port", c_uint16),
                ("payload_len", c_uint16), ("captured", c_uint16),
                ("sent", c_uint8), ("transport", c_uint8), ("family", c_uint8),
                ("_pad", c_uint8 * 5), ("payload", c_uint8 * DNS_CAPTURE)]


# C struct name -> mirror, for the ABI test against tcp.bpf.o
MIRRORS = {
    "nr_identity": Identity,
    "nr_flow_key": FlowKey,
    "nr_histogram": Histogram,
    "nr_flow_stats": FlowStats,
    "nr_settings": Settings,
}

# C struct name -> (mirror, the object whose BTF has it), for the cgroup_skb ABI test
SKB_MIRRORS = {
    "nr_identity": (Identity, "skb"),
    "nr_flow_key": (FlowKey, "skb"),
    "nr_udp_stats": (UdpStats, "skb"),
    "nr_skb_settings": (SkbSettings, "skb"),
    "nr_dns_event": (DnsEvent, "skb"),
}


def address_text(raw: bytes, family: int) -> str:
    """A 16-byte address as text; IPv4 families are stored v4-mapped (the last 4 bytes).

    Interned: thousands of flow keys share a few hundred peers, and each would otherwise
    hold its own copy of the text (an interned string goes when its last user does).
    """
    if family == Family.IPV4:
        return sys.intern(socket.inet_ntop(socket.AF_INET, bytes(raw)[12:]))
    return sys.intern(str(ipaddress.IPv6Address(bytes(raw))))


def comm_text(raw) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def bounds_ns(bounds_s: tuple[float, ...]) -> list[int]:
    """Histogram bounds in seconds -> integer nanoseconds (at most HIST_MAX_BOUNDS)."""
    if len(bounds_s) > HIST_MAX_BOUNDS:
        raise ValueError(f"at most {HIST_MAX_BOUNDS} histogram bounds, got {len(bounds_s)}")
    result = [round(b * 1e9) for b in bounds_s]
    if result != sorted(set(result)):
        raise ValueError(f"histogram bounds must increase: {bounds_s}")
    return result


def make_settings(duration_s: tuple[float, ...], rtt_s: tuple[float, ...]) -> Settings:
    settings = Settings()
    for name, bounds in (("duration", duration_s), ("rtt", rtt_s)):
        values = bounds_ns(bounds)
        getattr(settings, f"{name}_bounds_ns")[:len(values)] = values
        setattr(settings, f"{name}_nbounds", len(values))
    return settings


assert ctypes.sizeof(FlowKey) == 72 and ctypes.sizeof(Identity) == 32
