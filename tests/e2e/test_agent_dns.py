"""End to end through every stage: DNS lookups and the connections they lead to.

A client in an emulated containerd container resolves names at dnsmasq (a namespace host)
and connects to the answer. The OTLP export must carry the lookups per name and outcome
(the client's own count), the container and pod of the client as the Resource, and the
connection's `server.address` as the name the client resolved. Namespace hosts `nrb*`
on 198.18.25.0/24.
"""

from __future__ import annotations

from collections import Counter

import pytest

from otel_netreceiver.metrics import catalog
from tests.support import traffic
from tests.support.agent_process import EVERY_SECOND, agent_process
from tests.support.dns import client_argv, dnsmasq, run_client
from tests.support.hosts import emulated_container, host_pair
from tests.support.otlp_server import GrpcReceiver

pytestmark = pytest.mark.e2e

CATALOG = catalog.load()
SUBNET, PORT, ROUNDS = "198.18.25", 8080, 3


def lookups(points, server):
    """(name, error.type) -> latest cumulative count of dns.lookup.duration, for our server."""
    latest: dict[tuple, tuple[int, int]] = {}
    for p in points:
        if p.name == "dns.lookup.duration" and p.attributes.get("server.address") == server:
            key = (p.attributes["dns.question.name"], p.attributes.get("error.type", ""))
            if key not in latest or p.time_ns > latest[key][0]:
                latest[key] = (p.time_ns, p.count)
    return {key: count for key, (_, count) in latest.items()}


def test_lookups_and_named_connections(tmp_path):
    with GrpcReceiver() as receiver, host_pair("nrb", SUBNET) as pair, \
            emulated_container("containerd") as box:
        server = pair.server.address
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        with agent_process(tmp_path, EVERY_SECOND, env), dnsmasq(pair.server, {"web.test": server}) as dns:
            sink = traffic.Generator(pair.server.argv(*traffic.argv(
                "sink", address=server, port=PORT, count=ROUNDS)))
            try:
                assert sink.line().get("ready")
                report = run_client(box.argv(*pair.client.argv(*client_argv(
                    dns.address, ["web.test", "nope.test"], ROUNDS, connect_port=PORT))))
                received = sink.result()
            finally:
                sink.stop()
            answered = Counter({tuple(k.split()): v for k, v in report["answered"].items()})
            truth = {(name, "" if rcode == "noerror" else rcode): n for (name, rcode), n in answered.items()}
            assert truth == {("web.test", ""): ROUNDS, ("nope.test", "nxdomain"): ROUNDS}

            def named_connections(points):
                return [p for p in points if p.name == "tcp.connection.opened"
                        and p.attributes.get("network.peer.address") == server
                        and p.attributes.get("server.port") == PORT
                        and p.attributes.get("network.connection.direction") == "outgoing"]

            def complete(points):
                opened = named_connections(points)
                udp = [p for p in points if p.name == "udp.packet.count"
                       and p.attributes.get("network.peer.address") == dns.address]
                return lookups(points, dns.address) == truth and opened and udp and \
                    max(opened, key=lambda p: p.time_ns).value == ROUNDS
            points = receiver.received.wait_for(complete)
    assert received["received"] == 100 * ROUNDS == 100 * report["connected"][f"web.test {server}"]
    last = max(named_connections(points), key=lambda p: p.time_ns)
    assert last.attributes["server.address"] == "web.test"
    dns_points = [p for p in points if p.name == "dns.lookup.duration"
                  and p.attributes.get("server.address") == dns.address]
    for p in dns_points + [last]:
        assert p.resource["container.id"] == box.container_id
        assert p.resource["container.runtime"] == "containerd"
        assert p.resource["k8s.pod.uid"] == box.pod_uid
    for p in dns_points:
        assert p.unit == "s" and p.bounds == CATALOG.metrics["dns.lookup.duration"].bounds
        assert p.attributes["process.executable.name"] == report["comm"]
    # the queries and answers themselves are UDP datagrams of the same workload
    queries = sum(answered.values())
    for direction in ("transmit", "receive"):
        udp = [p for p in points if p.name == "udp.packet.count"
               and p.attributes.get("network.peer.address") == dns.address
               and p.attributes.get("server.port") == 53
               and p.attributes.get("network.io.direction") == direction]
        assert max(udp, key=lambda p: p.time_ns).value == queries, direction
