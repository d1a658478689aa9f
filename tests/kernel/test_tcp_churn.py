"""A burst of short connections: exact counts, no loss, reads that grow with flow keys."""

from __future__ import annotations

import pytest

from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings
from tests.support import traffic
from tests.support.hosts import host_pair

pytestmark = pytest.mark.kernel

# tests collect many times a second: never evict an idle key during a test
KEEP_ALL = TcpSettings(idle_intervals=1_000_000)

CONNECTIONS = 20_000


def test_connection_burst_counted_exactly_without_loss():
    with TcpCollector(KEEP_ALL) as collector, host_pair("nrk", "198.18.73") as pair:
        before = traffic.collect_until(collector, lambda s: True)
        result = traffic.run(pair.server.argv(*traffic.argv(
            "churn", address="127.0.0.1", count=CONNECTIONS)), timeout=180)
        assert result["connections"] == result["accepted"] == CONNECTIONS
        fields = dict(peer_address="127.0.0.1", server_port=result["port"], pid=result["pid"])
        first = traffic.collect_until(collector, lambda s: True)
        drained = collector.drained_last  # one drain covered the whole burst
        snap = traffic.collect_until(collector, lambda s: sum(
            st.closed for _, st in traffic.matching(s, **fields)) >= 2 * CONNECTIONS)
    flows = {key.direction.value: stats for key, stats in traffic.matching(snap, **fields)}
    assert set(flows) == {"incoming", "outgoing"}
    seen = [(key, stats.opened, stats.closed, stats.active)
            for key, stats in traffic.matching(snap, server_port=result["port"])]
    for stats in flows.values():
        assert (stats.opened, stats.closed, stats.active) == (CONNECTIONS, CONNECTIONS, 0), \
            (seen, snap.losses, snap.gauges)
        assert sum(stats.failed.values()) == 0
    assert snap.losses == before.losses and not any(snap.losses.values())
    # what user space read for the burst is one entry per flow key, not per connection
    # (counted on our port only: other agents' tests may hold thousands of connections)
    assert sum(st.opened for _, st in traffic.matching(first, **fields)) == 2 * CONNECTIONS
    assert len(traffic.matching(first, server_port=result["port"])) == 2
    assert drained <= len(first.tcp)
