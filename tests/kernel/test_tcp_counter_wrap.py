"""32-bit kernel counters that wrap: packets and retransmits keep counting forward.

`segs_out`, `segs_in` and `total_retrans` are 32-bit in struct tcp_sock: segs_out wraps
after ~83 minutes at 10 Gbit/s. A wrap cannot be waited for in a test, so the test makes
the socket's entry say its last reading was just below 2^32 (what a flush right before a
wrap leaves), then compares the next interval's packet counts with TCP_INFO, the ground
truth: the step across the wrap plus what was sent since, never a drop of ~4.29e9.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

import pytest

from otel_netreceiver.flows.model import Direction
from otel_netreceiver.probes import libbpf, tcp
from otel_netreceiver.probes.loader import object_path
from otel_netreceiver.probes.tcp import TcpCollector
from tests.kernel.test_tcp_namespaces import KEEP_ALL, Place, collect, namespaces
from tests.support import traffic

pytestmark = pytest.mark.kernel

PORT = 9590
BEHIND = 1000  # how far below the real reading the faked last reading is, modulo 2^32
TCPI_SEGS_OUT, TCPI_SEGS_IN = 136, 140  # offsets in struct tcp_info (linux/tcp.h)
C_SEGS_OUT, C_SEGS_IN = 2, 3  # enum counter in bpf/tcp.bpf.c


def segs(sock: socket.socket) -> tuple[int, int]:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("<II", info, TCPI_SEGS_OUT)


def packets(snap, port: int) -> dict[Direction, tuple[int, int]]:
    return {key.direction: (stats.packets_sent, stats.packets_received)
            for key, stats in traffic.matching(snap, peer_address="127.0.0.1", server_port=port,
                                               pid=os.getpid())}


def fake_wrap(collector: TcpCollector, port: int) -> int:
    """Set the last segs_out/segs_in readings of our outgoing entry on `port` to BEHIND
    below what they are, modulo 2^32 (a value near 2^32: the counters are small here)."""
    size, offsets = libbpf.struct_layout(str(object_path("tcp")), "sock_state")
    fd = collector._loader.loaded.map("sockets").fd
    keys, values = libbpf.read_batch_bytes(fd, 8, size, collector.settings.sockets_max)
    changed = 0
    for i in range(len(keys) // 8):
        value = bytearray(values[i * size:(i + 1) * size])
        key = tcp.decode_key(bytes(value[offsets["key"]:offsets["key"] + tcp.FLOW_KEY.size]))
        if key.server_port != port or key.direction is not Direction.OUTGOING:
            continue
        last = offsets["last"]
        for counter in (C_SEGS_OUT, C_SEGS_IN):
            at = last + 8 * counter
            (reading,) = struct.unpack_from("<q", value, at)
            struct.pack_into("<q", value, at, (reading - BEHIND) % 2**32)
            assert (reading - BEHIND) % 2**32 > reading  # the faked last reading is above it
        libbpf.update(fd, ctypes.c_uint64(int.from_bytes(keys[i * 8:(i + 1) * 8], "little")),
                      (ctypes.c_char * size).from_buffer(value))
        changed += 1
    return changed


def test_packets_keep_counting_across_a_32_bit_wrap():
    with TcpCollector(KEEP_ALL) as collector, namespaces(1, prefix="nrx") as [path]:
        place = Place(path, PORT)
        try:
            pair = place.open()
            place.talk(pair, 100, 200)
            before = packets(collect(collector), PORT)[Direction.OUTGOING]
            sent, received = segs(pair[0])
            assert fake_wrap(collector, PORT) == 1
            for n in range(5):
                place.talk(pair, 1000 + n, 3000)
            after = packets(collect(collector), PORT)[Direction.OUTGOING]
            now_sent, now_received = segs(pair[0])
        finally:
            place.close_all()
    # the faked step across the wrap, then every segment TCP_INFO says moved since
    assert after[0] - before[0] == BEHIND + (now_sent - sent)
    assert after[1] - before[1] == BEHIND + (now_received - received)
