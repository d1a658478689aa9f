"""TCP flows on the real kernel: counts, bytes, failures, retransmits, resets, RTT.

Two namespace hosts joined by veth (prefix `nrk`, a /24 of 198.18.70-74 per test; tests
that run later reuse them);
ground truth comes from the generators in tests/support/traffic.py. Other agents may see
the same traffic and we see theirs: every assertion is filtered by our addresses.
"""

from __future__ import annotations

import pytest

from otel_netreceiver.flows.model import FailureReason
from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings
from tests.support import traffic
from tests.support.hosts import host_pair

pytestmark = pytest.mark.kernel

# tests collect many times a second: never evict an idle key during a test
KEEP_ALL = TcpSettings(idle_intervals=1_000_000)


@pytest.fixture(scope="module")
def collector():
    with TcpCollector(KEEP_ALL) as tcp:
        yield tcp


def single(pairs):
    """The one (key, stats) a filter must match."""
    assert len(pairs) == 1, f"expected one flow, got {[key for key, _ in pairs]}"
    return pairs[0]


def closed(count, **fields):
    """A collect_until predicate: the matching flow has `count` closed connections."""
    return lambda snap: sum(s.closed for _, s in traffic.matching(snap, **fields)) >= count


def serve(host, mode, **options):
    """Start a server generator in `host`; returns it once it listens."""
    server = traffic.Generator(host.argv(*traffic.argv(mode, **options)))
    assert server.line().get("ready")
    return server


def add_ipv6(pair, subnet):
    """IPv6 addresses from the documentation-benchmark range, without DAD delay."""
    for host, last in ((pair.client, 1), (pair.server, 2)):
        link = host.run("ip", "-o", "link", "show", "type", "veth").stdout.split(":")[1].strip()
        link = link.split("@")[0]
        host.run("ip", "-6", "addr", "add", f"2001:2:0:{subnet}::{last}/64", "dev", link,
                 "nodad")
    return "2001:2:0:{0}::1".format(subnet), "2001:2:0:{0}::2".format(subnet)


CASES = {
    # name: (listen address, connect address, family, server peer, client peer)
    "ipv4": ("198.18.70.2", "198.18.70.2", "ipv4", "198.18.70.1", "198.18.70.2"),
    "v4-mapped": ("::", "::ffff:198.18.70.2", "ipv4", "198.18.70.1", "198.18.70.2"),
    "ipv6": ("2001:2:0:10::2", "2001:2:0:10::2", "ipv6", "2001:2:0:10::1", "2001:2:0:10::2"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_request_response_counts_and_bytes_exact(collector, case):
    listen, connect, family, server_peer, client_peer = CASES[case]
    count, request, response, port = 5, 300, 7000, 8080
    with host_pair("nrk", "198.18.70") as pair:
        add_ipv6(pair, 10)
        server = serve(pair.server, "rr-server", address=listen, port=port, count=count,
                       request=request, response=response)
        client = traffic.run(pair.client.argv(*traffic.argv(
            "rr-client", address=connect, port=port, count=count, request=request)))
        truth = server.result()
        assert client["received"] == truth["sent"] == count * response
        out = dict(direction="outgoing", peer_address=client_peer, pid=client["pid"])
        inc = dict(direction="incoming", peer_address=server_peer, pid=truth["pid"])
        snap = traffic.collect_until(collector, lambda s: closed(count, **out)(s)
                                     and closed(count, **inc)(s))
    out_key, out_stats = single(traffic.matching(snap, **out))
    in_key, in_stats = single(traffic.matching(snap, **inc))
    for key, stats in ((out_key, out_stats), (in_key, in_stats)):
        assert (stats.opened, stats.closed, stats.active) == (count, count, 0)
        assert key.server_port == port and key.family.value == family
    assert (out_stats.bytes_sent, out_stats.bytes_received) == (client["sent"], client["received"])
    assert (in_stats.bytes_sent, in_stats.bytes_received) == (truth["sent"], truth["received"])
    assert in_key.local_address == client_peer and out_key.local_address == ""
    ours = [key for key, _ in traffic.matching(snap, peer_address=client_peer)
            + traffic.matching(snap, peer_address=server_peer)]
    assert not {key.server_port for key in ours} & set(client["local_ports"])


@pytest.mark.parametrize("mode, subnet, reason, errno_name", [
    ("refused", "198.18.71", FailureReason.REFUSED, "ECONNREFUSED"),
    ("timeout", "198.18.72", FailureReason.TIMEOUT, "ETIMEDOUT"),
])
def test_failed_connects_by_reason(collector, mode, subnet, reason, errno_name):
    port, count = 9100, 4
    with host_pair("nrk", subnet) as pair:
        if mode == "timeout":
            pair.server.run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port),
                            "--syn", "-j", "DROP")
            pair.client.run("sysctl", "-qw", "net.ipv4.tcp_syn_retries=1")
        result = traffic.run(pair.client.argv(*traffic.argv(
            "fail", address=pair.server.address, port=port, count=count)))
        assert result["errors"] == {errno_name: count}
        fields = dict(direction="outgoing", peer_address=pair.server.address,
                      server_port=port, pid=result["pid"])
        snap = traffic.collect_until(
            collector, lambda s: sum(st.failed.get(reason, 0)
                                     for _, st in traffic.matching(s, **fields)) >= count)
    _, stats = single(traffic.matching(snap, **fields))
    assert stats.failed[reason] == count
    assert sum(stats.failed.values()) == count
    assert (stats.opened, stats.closed, stats.active) == (0, 0, 0)


def test_retransmits_match_tcp_info(collector):
    """Random loss on the data path; the sender's tcpi_total_retrans is the truth.

    We read the same kernel counter (tcp_sock.total_retrans) from the first SYN to the
    socket's destruction; the generator reads TCP_INFO after the peer's FIN, when all its
    data and its FIN are acknowledged, so nothing of the sender can be retransmitted
    later: the two should agree exactly (10% is the tolerance the issue allows).
    """
    port = 9200
    with host_pair("nrk", "198.18.73") as pair:
        pair.server.run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port), "-m",
                        "statistic", "--mode", "random", "--probability", "0.03", "-j", "DROP")
        sink = serve(pair.server, "sink", address=pair.server.address, port=port)
        sender = traffic.run(pair.client.argv(*traffic.argv(
            "bulk", address=pair.server.address, port=port, size=8 << 20)), timeout=120)
        assert sink.result()["received"] == sender["sent"]
        fields = dict(direction="outgoing", peer_address=pair.server.address, pid=sender["pid"])
        snap = traffic.collect_until(collector, closed(1, **fields))
    _, stats = single(traffic.matching(snap, **fields))
    truth = sender["total_retrans"]
    assert truth > 0, "no loss happened: the test proves nothing"
    assert abs(stats.retransmits - truth) <= 0.1 * truth
    assert stats.bytes_sent == sender["sent"]


def test_linger_zero_reset_sent_and_received(collector):
    port = 9300
    with host_pair("nrk", "198.18.74") as pair:
        sink = serve(pair.server, "sink", address=pair.server.address, port=port)
        client = traffic.run(pair.client.argv(*traffic.argv(
            "abort", address=pair.server.address, port=port, size=1000)))
        server = sink.result()
        assert server["errors"] == ["ECONNRESET"] and server["received"] == 1000
        out = dict(direction="outgoing", peer_address=pair.server.address, pid=client["pid"])
        inc = dict(direction="incoming", peer_address=pair.client.address, pid=server["pid"])
        snap = traffic.collect_until(collector, lambda s: closed(1, **out)(s)
                                     and closed(1, **inc)(s)
                                     and single(traffic.matching(s, **out))[1].resets_sent)
    _, out_stats = single(traffic.matching(snap, **out))
    _, in_stats = single(traffic.matching(snap, **inc))
    assert (out_stats.resets_sent, out_stats.resets_received) == (1, 0)
    assert (in_stats.resets_sent, in_stats.resets_received) == (0, 1)


def test_rtt_plausible_and_one_duration_per_closed_connection(collector):
    count, port = 6, 8081
    with host_pair("nrk", "198.18.70") as pair:
        server = serve(pair.server, "rr-server", address=pair.server.address, port=port,
                       count=count, request=10, response=10)
        client = traffic.run(pair.client.argv(*traffic.argv(
            "rr-client", address=pair.server.address, port=port, count=count, request=10)))
        truth = server.result()
        sides = [dict(direction="outgoing", peer_address=pair.server.address, pid=client["pid"]),
                 dict(direction="incoming", peer_address=pair.client.address, pid=truth["pid"])]
        snap = traffic.collect_until(collector, lambda s: all(closed(count, **f)(s) for f in sides))
    for fields in sides:
        _, stats = single(traffic.matching(snap, **fields))
        assert stats.closed == count
        assert stats.duration.count == stats.closed == sum(stats.duration.counts)
        assert stats.rtt.count >= count and sum(stats.rtt.counts) == stats.rtt.count
        assert stats.rtt.counts[-1] == 0, "an RTT above 1 s on veth"
        assert 1e-6 <= stats.rtt.sum / stats.rtt.count <= 1.0
        assert 0 < stats.duration.sum < 60 * count
