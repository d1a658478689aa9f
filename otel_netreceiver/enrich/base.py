"""Base enrichment: flow keys to OpenTelemetry attributes, workloads to Resources.

Richer enrichers (containers, Kubernetes, cloud, DNS names) plug in through the two
hooks `WorkloadResolver` and `PeerResolver`; with none configured every workload maps
to the host resource and every peer to its IP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from otel_netreceiver.flows.model import (
    AttributeValue,
    Direction,
    DnsKey,
    EnrichedSnapshot,
    Family,
    FlowKey,
    Record,
    RecordKind,
    Snapshot,
    Transport,
    Workload,
)

Attributes = dict[str, AttributeValue]


class WorkloadResolver(Protocol):
    """Adds resource attributes (container, pod ...) and point attributes for a workload."""

    def resource(self, workload: Workload) -> Attributes: ...

    def point_attributes(self, workload: Workload) -> Attributes: ...


class PeerResolver(Protocol):
    """Adds attributes describing the remote side of a flow (domain name, peer workload).

    A resolver may also define `observe(snapshot)`: the Enricher calls it once per
    snapshot before any `peer_attributes`, so it can index the snapshot's flows (local
    peers are found by matching the two halves of a connection).
    """

    def peer_attributes(self, key: FlowKey) -> Attributes: ...


class HostOnly:
    """The default workload resolver: everything under the host resource, named by process."""

    def resource(self, workload: Workload) -> Attributes:
        return {}

    def point_attributes(self, workload: Workload) -> Attributes:
        return {"process.executable.name": workload.comm} if workload.comm else {}


def flow_attributes(key: FlowKey) -> Attributes:
    """The catalog's flow attributes; `server.address` defaults to the server's IP."""
    outgoing = key.direction is Direction.OUTGOING
    return {
        "network.transport": _TEXT[key.transport],
        "network.type": _TEXT[key.family],
        "network.connection.direction": _TEXT[key.direction],
        "network.peer.address": key.peer_address,
        "server.address": key.peer_address if outgoing else key.local_address,
        "server.port": key.server_port,
    }


# Enum member -> attribute text, read once (an Enum's `.value` is a slow property).
_TEXT = {member: member.value for enum in (Transport, Family, Direction) for member in enum}


def dns_attributes(key: DnsKey) -> Attributes:
    attributes: Attributes = {
        "dns.question.name": key.question_name,
        "server.address": key.server_address,
    }
    if key.error_type:
        attributes["error.type"] = key.error_type
    return attributes


class Enricher:
    """Turns a Snapshot into an EnrichedSnapshot: one pass, no state of its own."""

    def __init__(
        self,
        host_resource: Attributes,
        workloads: WorkloadResolver | None = None,
        peers: list[PeerResolver] | None = None,
        on_shutdown: list[Callable[[float], None]] | None = None,
    ) -> None:
        self._host = host_resource
        self._workloads = workloads or HostOnly()
        self._peers = peers or []
        self._on_shutdown = on_shutdown or []  # e.g. stop a Kubernetes watch

    @property
    def host_resource(self) -> Attributes:
        """The resource every workload starts from (host, cloud, OTEL_RESOURCE_ATTRIBUTES)."""
        return dict(self._host)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop background helpers (watches); enrichment keeps working with what it knows."""
        for stop in self._on_shutdown:
            stop(timeout)

    def enrich(self, snapshot: Snapshot) -> EnrichedSnapshot:
        out = EnrichedSnapshot(snapshot.time_ns, losses=snapshot.losses, gauges=snapshot.gauges)
        for peer in self._peers:
            observe = getattr(peer, "observe", None)
            if observe is not None:
                observe(snapshot)
        # Thousands of series share a few workloads: resolve each workload once per snapshot.
        described: dict[Workload, tuple[tuple, Attributes]] = {}
        for kind, table in ((RecordKind.TCP, snapshot.tcp), (RecordKind.UDP, snapshot.udp)):
            for key, series in table.items():
                attributes = flow_attributes(key)
                for peer in self._peers:
                    attributes.update(peer.peer_attributes(key))
                out.records.append(self._record(described, kind, key.workload, attributes, series))
        for key, series in snapshot.dns.items():
            out.records.append(self._record(described, RecordKind.DNS, key.workload,
                                            dns_attributes(key), series))
        return out

    def _record(self, described: dict, kind, workload, attributes, series) -> Record:
        found = described.get(workload)
        if found is None:
            resource = {**self._host, **self._workloads.resource(workload)}
            found = described[workload] = (tuple(sorted(resource.items())),
                                           self._workloads.point_attributes(workload))
        attributes.update(found[1])
        return Record(kind, found[0], attributes, series)
