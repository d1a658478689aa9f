"""Base enrichment: flow keys to OpenTelemetry attributes, workloads to Resources.

Richer enrichers (containers, Kubernetes, cloud, DNS names) plug in through the two
hooks `WorkloadResolver` and `PeerResolver`; with none configured every workload maps
to the host resource and every peer to its IP.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_
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
    peers are found by matching the two halves of a connection). After `observe` it may
    set `unchanged = True` to promise that every key of the last snapshot would get the
    very object it got then, or else `changed_keys` to the only keys that might not;
    keys that no resolver lists are not asked.
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
    """Turns a Snapshot into an EnrichedSnapshot.

    Everything is resolved again every snapshot (workloads, peers, names), but what comes
    out the same is handed out as the same objects: a workload's resource and point
    attributes are the last snapshot's while they are equal, and a flow key whose
    resolvers all answered with the objects they answered last time gets last time's
    attribute dict (and, if its series is the same object too, last time's Record). So a
    snapshot costs a few lookups per key, and the metrics builder recognises an unchanged
    series by identity. Records and their attributes are shared: readers must not modify
    them.
    """

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
        self._described: dict[Workload, tuple[tuple, Attributes]] = {}  # last snapshot's
        self._keys: dict[object, _KeyAttributes] = {}  # last snapshot's, per flow or DNS key

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
        keys: dict[object, _KeyAttributes] = {}
        suspects = self._suspects()
        for kind, table, of_key in ((RecordKind.TCP, snapshot.tcp, flow_attributes),
                                    (RecordKind.UDP, snapshot.udp, flow_attributes),
                                    (RecordKind.DNS, snapshot.dns, dns_attributes)):
            self._add_records(out.records, kind, table, of_key, described, keys,
                              set() if kind is RecordKind.DNS else suspects)
        self._described, self._keys = described, keys
        return out

    def _suspects(self) -> set | None:
        """The keys whose resolvers might answer otherwise than for last snapshot; None:
        any key."""
        suspects: set = set()
        for peer in self._peers:
            if not getattr(peer, "unchanged", False):
                changed = getattr(peer, "changed_keys", None)
                if changed is None:
                    return None
                suspects |= changed
        return suspects

    def _add_records(self, records: list[Record], kind: RecordKind, table: dict, of_key: Callable,
                     described: dict, keys: dict, suspects: set | None) -> None:
        """A Record per key of one Snapshot table; a key whose workload and resolvers
        answered with last snapshot's objects gets last snapshot's attribute dict.
        Resolvers are not asked again for a key of last snapshot that is not `suspects`."""
        last = self._keys
        resolvers = [] if kind is RecordKind.DNS else [peer.peer_attributes for peer in self._peers]
        for key, series in table.items():
            workload = described.get(key.workload) or self._describe(described, key.workload)
            made = last.get(key)
            if not (made is not None and made.point is workload[1] and suspects is not None
                    and (not suspects or key not in suspects)):
                answers = [resolve(key) for resolve in resolvers]
                if made is None or made.point is not workload[1] or not all(map(is_, made.answers, answers)):
                    made = _KeyAttributes(workload[1], answers, _merged(of_key(key), answers, workload[1]))
            keys[key] = made
            # last snapshot's Record while its series, resource and attributes are the same
            # objects: the builder then knows the series unchanged by one identity test
            record = made.record
            if record is None or record.series is not series or record.resource is not workload[0]:
                record = made.record = Record(kind, workload[0], made.attributes, series)
            records.append(record)

    def _describe(self, described: dict, workload: Workload) -> tuple[tuple, Attributes]:
        """(resource items, point attributes) of a workload; each is last snapshot's object
        while equal (a new pod name leaves the point attributes of its keys as they were)."""
        resource = {**self._host, **self._workloads.resource(workload)}
        items, point = tuple(sorted(resource.items())), self._workloads.point_attributes(workload)
        last = self._described.get(workload)
        if last is not None:
            items = last[0] if last[0] == items else items
            point = last[1] if last[1] == point else point
        found = last if last is not None and (items, point) == last else (items, point)
        described[workload] = found
        return found


def _merged(attributes: Attributes, answers: list[Attributes], point: Attributes) -> Attributes:
    """A key's point attributes: its own, then each resolver's answer, then the workload's."""
    for answer in answers:
        attributes.update(answer)
    attributes.update(point)
    return attributes


class _KeyAttributes:
    """What a key's attributes were made from (compared by identity), the result, and the
    last Record made with them."""

    __slots__ = ("point", "answers", "attributes", "record")

    def __init__(self, point: Attributes, answers: list[Attributes], attributes: Attributes) -> None:
        self.point, self.answers, self.attributes = point, answers, attributes
        self.record: Record | None = None
