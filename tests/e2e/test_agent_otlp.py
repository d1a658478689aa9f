"""End to end: the real agent process exports real traffic over OTLP to a server in the test.

Namespace hosts `nrb*` on 198.18.20-23.0/24; the client runs in an emulated docker
container, the server as a host process. Ground truth comes from the traffic generators
(bytes written and read, connections made, errno of failed connects). Other agents may
run at the same time: every assertion is filtered by our addresses and ports.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from otel_netreceiver.metrics import catalog
from tests.support import traffic
from tests.support.agent_process import EVERY_SECOND, agent_process
from tests.support.hosts import emulated_container, host_pair
from tests.support.otlp_server import GrpcReceiver, HttpReceiver

pytestmark = pytest.mark.e2e

CATALOG = catalog.load()
PORT, CLOSED_PORT = 8080, 8081
COUNT, REQUEST, RESPONSE, REFUSED = 5, 300, 7000, 3
TEMPORALITY = {"delta": 1, "cumulative": 2}


def run_traffic(subnet: str) -> dict:
    """Connections that succeed and fail between two namespace hosts; their ground truth."""
    with host_pair("nrb", subnet) as pair, emulated_container("docker") as container:
        server_address = pair.server.address
        server = traffic.Generator(pair.server.argv(*traffic.argv(
            "rr-server", address=server_address, port=PORT, count=COUNT, request=REQUEST,
            response=RESPONSE)))
        assert server.line().get("ready")
        client = traffic.run(container.argv(*pair.client.argv(*traffic.argv(
            "rr-client", address=server_address, port=PORT, count=COUNT, request=REQUEST))))
        failed = traffic.run(container.argv(*pair.client.argv(*traffic.argv(
            "fail", address=server_address, port=CLOSED_PORT, count=REFUSED))))
        served = server.result()
        truth = {"client": client, "server": served, "failed": failed,
                 "container_id": container.container_id, "client_address": pair.client.address,
                 "server_address": server_address}
        yield truth


def ours(points, truth, direction):
    """Points of our flows: outgoing from the client's view, incoming from the server's."""
    peer = truth["server_address"] if direction == "outgoing" else truth["client_address"]
    return [p for p in points if p.attributes.get("network.peer.address") == peer
            and p.attributes.get("network.connection.direction") == direction]


def latest(points, name, **attributes):
    """The value of the most recent point of `name` whose attributes include `attributes`."""
    wanted = {k.replace("_", "."): v for k, v in attributes.items()}
    matching = [p for p in points if p.name == name
                and all(p.attributes.get(k) == v for k, v in wanted.items())]
    assert matching, f"no {name} point with {wanted}"
    last = max(p.time_ns for p in matching)
    current = [p for p in matching if p.time_ns == last]
    assert len(current) == 1, f"{len(current)} {name} points with {wanted} at one time"
    return current[0]


def done(truth):
    """Wait predicate: every connection closed on both sides, every failure counted."""
    def predicate(points):
        try:
            out, inc = ours(points, truth, "outgoing"), ours(points, truth, "incoming")
            return (latest(out, "tcp.connection.closed", server_port=PORT).value == COUNT
                    and latest(inc, "tcp.connection.closed", server_port=PORT).value == COUNT
                    and latest(out, "tcp.connection.failed", server_port=CLOSED_PORT,
                               error_type="refused").value == REFUSED)
        except AssertionError:
            return False
    return predicate


def assert_conforms_to_catalog(points, temporality):
    """Every received point has its metric's name, description, unit, kind, declared
    attributes with values from their enums, and declared resource attributes."""
    assert points
    resource_names = set(CATALOG.resource_attributes) | {"deployment.environment"}
    for p in points:
        metric = CATALOG.metrics.get(p.name)
        assert metric is not None, f"{p.name} is not in metadata.yaml"
        assert (p.description, p.unit, p.kind) == (metric.description, metric.unit, metric.kind), p.name
        declared = {a.name: a for a in metric.attributes}
        assert set(p.attributes) <= set(declared), (p.name, p.attributes)
        for name, value in p.attributes.items():
            assert not declared[name].enum or value in declared[name].enum, (p.name, name, value)
        assert set(p.resource) <= resource_names, p.resource
        if metric.kind == "sum":
            assert p.monotonic == metric.monotonic, p.name
            expected = temporality if metric.monotonic else "cumulative"
            assert p.temporality == TEMPORALITY[expected], p.name
        if metric.kind == "histogram":
            assert p.temporality == TEMPORALITY[temporality], p.name
            if p.scope == CATALOG.flows_scope and p.name.startswith("tcp."):
                assert p.bounds == metric.bounds, p.name
        scope = CATALOG.agent_scope if p.name.startswith("otel_netreceiver.") else CATALOG.flows_scope
        assert p.scope == scope, p.name


def assert_resources(points, truth):
    host = {"host.name": socket.gethostname(), "host.id": Path("/etc/machine-id").read_text().strip(),
            "os.type": "linux", "deployment.environment": "e2e"}
    out = ours(points, truth, "outgoing")
    inc = ours(points, truth, "incoming")
    for p in out:
        assert p.resource == {**host, "container.id": truth["container_id"], "container.runtime": "docker"}
    for p in inc:
        assert p.resource == host
        assert p.attributes["process.executable.name"] == truth["server"]["comm"]
    agent = [p for p in points if p.scope == CATALOG.agent_scope]
    assert agent and all(p.resource["service.name"] == "otel-netreceiver" for p in agent)
    assert all(p.resource[k] == v for p in agent for k, v in host.items())


def assert_cumulative_values(points, truth):
    out, inc = ours(points, truth, "outgoing"), ours(points, truth, "incoming")
    client, server = truth["client"], truth["server"]
    assert client["sent"] == COUNT * REQUEST and server["sent"] == COUNT * RESPONSE
    expected = [
        (out, "tcp.connection.opened", {}, client["connections"]),
        (out, "tcp.connection.closed", {}, client["connections"]),
        (out, "tcp.connection.active", {}, 0),
        (out, "tcp.io", {"network_io_direction": "transmit"}, client["sent"]),
        (out, "tcp.io", {"network_io_direction": "receive"}, client["received"]),
        (inc, "tcp.connection.opened", {}, server["connections"]),
        (inc, "tcp.connection.closed", {}, server["connections"]),
        (inc, "tcp.io", {"network_io_direction": "transmit"}, server["sent"]),
        (inc, "tcp.io", {"network_io_direction": "receive"}, server["received"]),
    ]
    for series, name, attributes, value in expected:
        assert latest(series, name, server_port=PORT, **attributes).value == value, (name, attributes)
    assert latest(out, "tcp.connection.failed", server_port=CLOSED_PORT, error_type="refused").value \
        == truth["failed"]["errors"]["ECONNREFUSED"] == REFUSED
    assert latest(out, "tcp.connection.duration", server_port=PORT).count == COUNT
    assert latest(inc, "tcp.connection.duration", server_port=PORT).count == COUNT
    assert latest(out, "tcp.rtt", server_port=PORT).count >= COUNT
    for p in out + inc:
        assert p.attributes["server.address"] == truth["server_address"]
        assert p.attributes["network.transport"] == "tcp" and p.attributes["network.type"] == "ipv4"


@pytest.mark.parametrize("receiver_type, protocol, subnet", [
    (GrpcReceiver, "grpc", "198.18.20"),
    (HttpReceiver, "http/protobuf", "198.18.21"),
])
def test_cumulative_export_matches_catalog_and_ground_truth(tmp_path, receiver_type, protocol, subnet):
    with receiver_type() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
               "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e"}
        with agent_process(tmp_path, EVERY_SECOND, env):
            for truth in run_traffic(subnet):
                points = receiver.received.wait_for(done(truth))
    assert_conforms_to_catalog(points, "cumulative")
    assert_resources(points, truth)
    assert_cumulative_values(points, truth)
    if protocol == "http/protobuf":
        assert receiver.received.headers[0]["path"] == "/v1/metrics"


def test_delta_temporality(tmp_path):
    with GrpcReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
               "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
               "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e"}
        with agent_process(tmp_path, EVERY_SECOND, env):
            for truth in run_traffic("198.18.22"):
                def all_closed(points):
                    out = [p for p in ours(points, truth, "outgoing") if p.name == "tcp.connection.closed"
                           and p.attributes["server.port"] == PORT]
                    return sum(p.value for p in out) == COUNT
                points = receiver.received.wait_for(all_closed)
    assert_conforms_to_catalog(points, "delta")
    assert_resources(points, truth)
    out = ours(points, truth, "outgoing")
    for name, attributes, total in [
        ("tcp.connection.opened", {}, COUNT),
        ("tcp.io", {"network.io.direction": "transmit"}, truth["client"]["sent"]),
        ("tcp.io", {"network.io.direction": "receive"}, truth["client"]["received"]),
    ]:
        series = sorted((p for p in out if p.name == name and p.attributes["server.port"] == PORT
                         and all(p.attributes.get(k) == v for k, v in attributes.items())),
                        key=lambda p: p.time_ns)
        assert sum(p.value for p in series) == total, name
        # each delta starts where the previous one ended
        assert all(b.start_ns == a.time_ns for a, b in zip(series, series[1:])), name
    durations = [p for p in out if p.name == "tcp.connection.duration" and p.attributes["server.port"] == PORT]
    assert sum(p.count for p in durations) == COUNT
