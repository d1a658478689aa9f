"""The one table that maps catalog metrics onto the flow model's fields.

Each entry names the Snapshot table a metric reads (tcp, udp, dns) and how to turn one
series' stats into (extra attributes, value) pairs; the value is a number or a
`Histogram`. Attribute keys here are exported names (`error.type`, not `tcp.error.type`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from otel_netreceiver.flows.model import Histogram, RecordKind

Value = int | float | Histogram
Points = Iterable[tuple[dict[str, str], Value]]

TRANSMIT = {"network.io.direction": "transmit"}
RECEIVE = {"network.io.direction": "receive"}


@dataclass(frozen=True, slots=True)
class Field:
    kind: RecordKind
    points: Callable[[object], Points]


def _one(attribute: str) -> Callable[[object], Points]:
    return lambda stats: [({}, getattr(stats, attribute))]


def _io(sent: str, received: str) -> Callable[[object], Points]:
    return lambda stats: [(TRANSMIT, getattr(stats, sent)), (RECEIVE, getattr(stats, received))]


def _histogram(attribute: str) -> Callable[[object], Points]:
    def points(stats) -> Points:
        value = getattr(stats, attribute)
        return [({}, value)] if value is not None else []
    return points


def _failed(stats) -> Points:
    return [({"error.type": reason.value}, count) for reason, count in stats.failed.items()]


FIELDS: dict[str, Field] = {
    "tcp.connection.opened": Field(RecordKind.TCP, _one("opened")),
    "tcp.connection.closed": Field(RecordKind.TCP, _one("closed")),
    "tcp.connection.failed": Field(RecordKind.TCP, _failed),
    "tcp.connection.active": Field(RecordKind.TCP, _one("active")),
    "tcp.connection.duration": Field(RecordKind.TCP, _histogram("duration")),
    "tcp.io": Field(RecordKind.TCP, _io("bytes_sent", "bytes_received")),
    "tcp.packet.count": Field(RecordKind.TCP, _io("packets_sent", "packets_received")),
    "tcp.retransmit.count": Field(RecordKind.TCP, _one("retransmits")),
    "tcp.reset.count": Field(RecordKind.TCP, _io("resets_sent", "resets_received")),
    "tcp.rtt": Field(RecordKind.TCP, _histogram("rtt")),
    "udp.io": Field(RecordKind.UDP, _io("bytes_sent", "bytes_received")),
    "udp.packet.count": Field(RecordKind.UDP, _io("packets_sent", "packets_received")),
    "dns.lookup.duration": Field(RecordKind.DNS, _histogram("duration")),
    "dns.lookup.timeout.count": Field(RecordKind.DNS, _one("timeouts")),
}

# The agent's own telemetry: which input each metric reads, and the attribute its key fills.
# Snapshot.losses keys are reasons. Snapshot.gauges keys are free-form readings; pairs
# "<map>.tracked" / "<map>.capacity" also give the map's fill ratio.
AGENT_LOSSES = ("otel_netreceiver.events.lost", "reason")
AGENT_MAP_FILL = ("otel_netreceiver.map.fill", "map", ".tracked", ".capacity")
AGENT_GAUGES = ("otel_netreceiver.collector.gauge", "name")
AGENT_FLOWS_TRACKED = ("otel_netreceiver.flows.tracked", "kind")
AGENT_EXPORT_FAILURES = ("otel_netreceiver.export.failures", "exporter")
AGENT_COLLECTION_DURATION = "otel_netreceiver.collection.duration"

# Histogram bounds the TCP collector keeps in the kernel: its keyword -> catalog metric.
TCP_COLLECTOR_BOUNDS = {"duration_bounds": "tcp.connection.duration", "rtt_bounds": "tcp.rtt"}
DNS_COLLECTOR_BOUNDS = "dns.lookup.duration"
