"""The one table that maps catalog metrics onto the flow model's fields.

Each entry names the Snapshot table a metric reads (tcp, udp, dns) and how to turn one
series' stats into (extra attributes, value) pairs; the value is a number or a
`Histogram`. Attribute keys here are exported names (`error.type`, not `tcp.error.type`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from otel_netreceiver.flows.model import FailureReason, Histogram, RecordKind

Value = int | float | Histogram
Points = Iterable[tuple[dict[str, str], Value]]

TRANSMIT = {"network.io.direction": "transmit"}
RECEIVE = {"network.io.direction": "receive"}


@dataclass(frozen=True, slots=True)
class Field:
    """How one metric reads a series' stats.

    Most metrics read fixed stats attributes: `names[i]` is the value of the point with
    extra attributes `extras[i]` (no point while it is None, e.g. a histogram without
    samples), so the builder can read all of a series' values at once and pair them with
    attribute sets it made once. A metric whose extras depend on the stats gives
    (extra, value) pairs through `varying` instead.
    """

    kind: RecordKind
    names: tuple[str, ...] = ()
    extras: tuple[dict[str, str], ...] = ({},)
    varying: Callable[[object], Points] | None = None

    def points(self, stats) -> Points:
        """(extra attributes, value) of every point of one series."""
        if self.varying is not None:
            return self.varying(stats)
        values = (getattr(stats, name) for name in self.names)
        return [(extra, value) for extra, value in zip(self.extras, values) if value is not None]


def _one(kind: RecordKind, name: str) -> Field:
    return Field(kind, (name,))


def _io(kind: RecordKind, sent: str, received: str) -> Field:
    return Field(kind, (sent, received), (TRANSMIT, RECEIVE))


# One extra-attributes dict per reason, so that the builder finds its set by identity.
_FAILED = {reason: {"error.type": reason.value} for reason in FailureReason}


def _failed(stats) -> Points:
    """Only reasons that happened: like an SDK counter, a reason's series starts with its
    first failure (zero points for every reason of every flow were a third of the points)."""
    return [(_FAILED[reason], count) for reason, count in stats.failed.items() if count]


FIELDS: dict[str, Field] = {
    "tcp.connection.opened": _one(RecordKind.TCP, "opened"),
    "tcp.connection.closed": _one(RecordKind.TCP, "closed"),
    "tcp.connection.failed": Field(RecordKind.TCP, varying=_failed),
    "tcp.connection.active": _one(RecordKind.TCP, "active"),
    "tcp.connection.duration": _one(RecordKind.TCP, "duration"),
    "tcp.io": _io(RecordKind.TCP, "bytes_sent", "bytes_received"),
    "tcp.packet.count": _io(RecordKind.TCP, "packets_sent", "packets_received"),
    "tcp.retransmit.count": _one(RecordKind.TCP, "retransmits"),
    "tcp.reset.count": _io(RecordKind.TCP, "resets_sent", "resets_received"),
    "tcp.rtt": _one(RecordKind.TCP, "rtt"),
    "udp.io": _io(RecordKind.UDP, "bytes_sent", "bytes_received"),
    "udp.packet.count": _io(RecordKind.UDP, "packets_sent", "packets_received"),
    "dns.lookup.duration": _one(RecordKind.DNS, "duration"),
    "dns.lookup.timeout.count": _one(RecordKind.DNS, "timeouts"),
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
