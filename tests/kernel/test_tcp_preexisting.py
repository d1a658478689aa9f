"""Connections open before the agent starts are found, and counted from then on."""

from __future__ import annotations

import pytest

from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings
from tests.support import traffic
from tests.support.hosts import host_pair

pytestmark = pytest.mark.kernel

# tests collect many times a second: never evict an idle key during a test
KEEP_ALL = TcpSettings(idle_intervals=1_000_000)


def test_connection_opened_before_start_is_found_and_counted_after():
    port, before, after = 9400, 1111, 5000
    with host_pair("nrk", "198.18.71") as pair:
        sink = traffic.Generator(pair.server.argv(*traffic.argv(
            "sink", address=pair.server.address, port=port)))
        assert sink.line()["ready"]
        client = traffic.Generator(pair.client.argv(*traffic.argv(
            "hold", address=pair.server.address, port=port)))
        try:
            assert client.line()["connected"]
            client.send(f"send {before}")
            assert client.line()["sent"] == before
            with TcpCollector(KEEP_ALL) as collector:
                out = dict(direction="outgoing", peer_address=pair.server.address,
                           server_port=port, pid=client.proc.pid)
                client.send(f"send {after}")
                assert client.line()["sent"] == before + after
                client.send("close")
                truth = client.result()
                server = sink.result()
                inc = dict(direction="incoming", peer_address=pair.client.address,
                           server_port=port, pid=server["pid"])
                snap = traffic.collect_until(
                    collector, lambda s: all(st.closed for f in (out, inc)
                                             for _, st in traffic.matching(s, **f)))
        finally:
            client.stop()
            sink.stop()
    assert server["received"] == truth["sent"] == before + after
    for fields, sent, received in ((out, after, 0), (inc, 0, after)):
        [(_, stats)] = traffic.matching(snap, **fields)
        # closed without opened: only possible when the start pass adopted it
        assert (stats.opened, stats.closed, stats.active) == (0, 1, 0)
        assert (stats.bytes_sent, stats.bytes_received) == (sent, received)
        assert stats.duration is None  # start unknown: no duration sample
