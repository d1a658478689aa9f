"""SIGTERM during traffic: the final export arrives, exit 0 within 5 s, no program left.

The agent runs with an interval of an hour, so the only export the receiver can get is
the final one. Namespace hosts `nrb*` on 198.18.23.0/24.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support import bpf_programs, traffic
from tests.support.agent_process import agent_process
from tests.support.hosts import host_pair
from tests.support.otlp_server import GrpcReceiver

pytestmark = pytest.mark.e2e

CONFIG = """
collection_interval: 1h
initial_delay: 1h
enrich:
  cloud:
    detectors: []
service:
  telemetry:
    logs: {level: info, encoding: json}
"""
SUBNET, RR_PORT, HOLD_PORT, COUNT = "198.18.23", 8080, 9000, 4
STOP_LIMIT_S = 5.0  # the bound for final export + detach


def eventually(predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def value(points, name, **attributes):
    wanted = {k.replace("_", "."): v for k, v in attributes.items()}
    [point] = [p for p in points if p.name == name and all(p.attributes.get(k) == v for k, v in wanted.items())]
    return point.value


def test_sigterm_during_traffic_final_export_and_clean_detach(tmp_path):
    with GrpcReceiver() as receiver, host_pair("nrb", SUBNET) as pair:
        server = pair.server.address
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        with agent_process(tmp_path, CONFIG, env) as agent:
            ours = eventually(lambda: bpf_programs.held_by(agent.proc.pid))
            assert ours, "the agent holds no BPF program"
            sink = traffic.Generator(pair.server.argv(*traffic.argv("sink", address=server, port=HOLD_PORT)))
            rr = traffic.Generator(pair.server.argv(*traffic.argv(
                "rr-server", address=server, port=RR_PORT, count=COUNT)))
            assert sink.line().get("ready") and rr.line().get("ready")
            hold = traffic.Generator(pair.client.argv(*traffic.argv("hold", address=server, port=HOLD_PORT)))
            try:
                assert hold.line().get("connected")
                hold.send("send 1000")
                assert hold.line()["sent"] == 1000
                client = traffic.run(pair.client.argv(*traffic.argv(
                    "rr-client", address=server, port=RR_PORT, count=COUNT)))
                truth = rr.result()
                time.sleep(1)  # let the closed sockets leave LAST_ACK / FIN_WAIT in the kernel
                hold.send("send 500")  # traffic in flight while the agent stops
                code, took = agent.terminate(timeout_s=STOP_LIMIT_S)
                assert hold.line()["sent"] == 1500
                output = agent.output()
            finally:
                hold.stop()
                sink.stop()
                rr.stop()
    print(f"agent stopped in {took:.2f}s")
    assert code == 0, f"exit {code} after {took:.1f}s: {output[-2000:]}"
    assert "Traceback" not in output
    logs = [json.loads(line) for line in output.splitlines() if line.strip()]  # JSON lines only
    messages = " | ".join(entry["msg"] for entry in logs)
    assert "running; exporters: otlp" in messages and "stopped after a final export" in messages
    assert all(entry["level"] in ("info", "warning") for entry in logs), logs
    assert len(receiver.received.requests) == 1, "expected exactly the final export"
    points = receiver.received.points()
    out = [p for p in points if p.attributes.get("network.peer.address") == server
           and p.attributes.get("network.connection.direction") == "outgoing"]
    assert value(out, "tcp.connection.opened", server_port=RR_PORT) == client["connections"] == COUNT
    assert value(out, "tcp.connection.closed", server_port=RR_PORT) == COUNT
    assert value(out, "tcp.io", server_port=RR_PORT, network_io_direction="transmit") == client["sent"]
    assert value(out, "tcp.io", server_port=RR_PORT, network_io_direction="receive") == truth["sent"]
    assert value(out, "tcp.connection.opened", server_port=HOLD_PORT) == 1
    assert value(out, "tcp.connection.active", server_port=HOLD_PORT) == 1
    assert 1000 <= value(out, "tcp.io", server_port=HOLD_PORT, network_io_direction="transmit") <= 1500
    # programs are freed once the last fd is closed (after an RCU grace period)
    assert eventually(lambda: not (ours & bpf_programs.loaded())), "programs still loaded"
