"""Real Prometheus (Debian's /usr/bin/prometheus) scrapes the agent's prometheus exporter.

Prometheus runs with its own config and temporary storage on a free loopback port; a
PromQL query must return the test traffic's connection count. Namespace hosts `nrb*` on
198.18.24.0/24.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.support import traffic
from tests.support.agent_process import agent_process
from tests.support.hosts import host_pair
from tests.support.otlp_server import GrpcReceiver
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

PROMETHEUS = "/usr/bin/prometheus"
SUBNET, PORT, COUNT = "198.18.24", 8080, 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(check, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass  # Prometheus not listening yet
        if time.monotonic() > deadline:
            raise AssertionError(f"no result within {timeout_s}s")
        time.sleep(0.5)


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus scraping a target port every second; yields (web port, target port)."""
    if not shutil.which(PROMETHEUS):
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    web, target = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: otel-netreceiver
    static_configs:
      - targets: ["127.0.0.1:{target}"]
""")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield web, target
    finally:
        stop(proc, timeout=15)


def test_promql_returns_the_connection_count(tmp_path, prometheus):
    """Three exporters at once: Prometheus (queried), OTLP delta (summed), debug (stdout)."""
    web, target = prometheus
    receiver = GrpcReceiver()
    config = f"""
collection_interval: 1s
initial_delay: 0s
exporters:
  prometheus:
    endpoint: 127.0.0.1:{target}
  otlp/delta:
    endpoint: 127.0.0.1:{receiver.port}
    tls: {{insecure: true}}
    temporality: delta
  debug:
    verbosity: basic
enrich:
  cloud:
    detectors: []
"""
    with receiver, agent_process(tmp_path, config), host_pair("nrb", SUBNET) as pair:
        server = pair.server.address
        rr = traffic.Generator(pair.server.argv(*traffic.argv("rr-server", address=server, port=PORT,
                                                              count=COUNT)))
        assert rr.line().get("ready")
        client = traffic.run(pair.client.argv(*traffic.argv("rr-client", address=server, port=PORT,
                                                            count=COUNT)))
        truth = rr.result()
        promql = (f'sum(tcp_connection_closed_total{{network_peer_address="{server}",'
                  f'network_connection_direction="outgoing",server_port="{PORT}"}})')
        result = wait_for(lambda: [r for r in query(web, promql) if float(r["value"][1]) == COUNT])
        opened = query(web, promql.replace("closed", "opened"))
        received = query(web, f'sum(tcp_io_bytes_total{{network_peer_address="{server}",'
                              f'network_io_direction="receive",server_port="{PORT}"}})')
        up = query(web, 'up{job="otel-netreceiver"}')

        def closed_over_otlp(points):
            return sum(p.value for p in points if p.name == "tcp.connection.closed"
                       and p.attributes.get("network.peer.address") == server
                       and p.attributes.get("network.connection.direction") == "outgoing"
                       and p.attributes.get("server.port") == PORT)
        receiver.received.wait_for(lambda points: closed_over_otlp(points) >= COUNT)
        otlp_closed = closed_over_otlp(receiver.received.points())
    assert float(result[0]["value"][1]) == client["connections"] == truth["connections"] == COUNT
    assert float(opened[0]["value"][1]) == COUNT
    assert float(received[0]["value"][1]) == client["received"] == truth["sent"]
    assert up[0]["value"][1] == "1"
    assert otlp_closed == COUNT
