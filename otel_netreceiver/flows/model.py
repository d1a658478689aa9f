"""The flow model: what the kernel side hands to enrichment and the metrics builder.

One `Snapshot` per collection interval. Values are cumulative since each series'
`start_ns`; the metrics builder turns them into delta when asked. Nothing here knows
metric names: `metrics/` maps these fields onto the catalog in metadata.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Direction(str, Enum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class Transport(str, Enum):
    TCP = "tcp"
    UDP = "udp"


class Family(str, Enum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


class FailureReason(str, Enum):
    """Why a connect failed; values are the `error.type` attribute values."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    RESET = "reset"
    UNREACHABLE = "unreachable"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Workload:
    """The local owner of a socket, as the kernel saw it.

    `cgroup_id` is the cgroup v2 id (inode of the cgroup directory); enrichment turns it
    into container / pod attributes. `pid` (tgid) and `comm` name the process; 0 and ""
    when the kernel could not tell (e.g. a connection found at start and never used).
    """

    cgroup_id: int
    pid: int
    comm: str
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _keep_hash(self, (self.cgroup_id, self.pid, self.comm))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):
        return Workload, (self.cgroup_id, self.pid, self.comm)


@dataclass(frozen=True, slots=True)
class FlowKey:
    """One aggregate: workload x peer x server port x direction x transport x family.

    Ephemeral ports never appear. `local_address` is set for incoming flows only (it is
    the `server.address` of an incoming flow) and is "" for outgoing ones.
    Addresses are text (`198.18.0.1`, `2001:db8::1`); v4-mapped IPv6 is reported as IPv4.
    """

    workload: Workload
    transport: Transport
    family: Family
    direction: Direction
    peer_address: str
    server_port: int
    local_address: str = ""
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _keep_hash(self, (self.workload, self.transport, self.family, self.direction,
                          self.peer_address, self.server_port, self.local_address))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):  # the hash is this process's: unpickling computes it again
        return FlowKey, (self.workload, self.transport, self.family, self.direction,
                         self.peer_address, self.server_port, self.local_address)


def _keep_hash(key, fields: tuple) -> None:
    """Keys are hashed in several dicts per interval: hash their fields once.

    (A frozen dataclass would hash every field again on each lookup, the enums among
    them through a Python-level Enum.__hash__.)
    """
    object.__setattr__(key, "_hash", hash(fields))


@dataclass(slots=True)
class Histogram:
    """Explicit-bucket histogram in seconds; `counts` has len(bounds) + 1 entries."""

    bounds: tuple[float, ...]
    counts: list[int]
    sum: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> "Histogram":
        return cls(bounds=bounds, counts=[0] * (len(bounds) + 1))


@dataclass(slots=True)
class TcpStats:
    """Cumulative TCP counters of one flow key."""

    opened: int = 0
    closed: int = 0
    active: int = 0
    failed: dict[FailureReason, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    duration: Histogram | None = None
    rtt: Histogram | None = None


@dataclass(slots=True)
class UdpStats:
    """Cumulative UDP counters of one flow key (payload bytes, datagrams)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0


@dataclass(frozen=True, slots=True)
class DnsKey:
    """One DNS aggregate: who asked, which name, which server, which outcome."""

    workload: Workload
    question_name: str
    server_address: str
    error_type: str = ""  # lowercase rcode name when not NOERROR, else ""
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _keep_hash(self, (self.workload, self.question_name, self.server_address, self.error_type))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):
        return DnsKey, (self.workload, self.question_name, self.server_address, self.error_type)


@dataclass(slots=True)
class DnsStats:
    """Cumulative DNS counters of one key."""

    duration: Histogram | None = None
    timeouts: int = 0


@dataclass(slots=True)
class Series:
    """A value with the time its cumulative count started (OTLP start_time_unix_nano)."""

    start_ns: int
    stats: TcpStats | UdpStats | DnsStats


@dataclass(slots=True)
class Snapshot:
    """Everything observed up to `time_ns`, cumulative per series.

    `losses` counts what could not be observed (map full, ring buffer full, malformed
    packets ...) by reason; `gauges` are the agent's own instantaneous readings (map fill,
    flows tracked ...). Both are exported as the agent's own telemetry.
    """

    time_ns: int
    tcp: dict[FlowKey, Series] = field(default_factory=dict)
    udp: dict[FlowKey, Series] = field(default_factory=dict)
    dns: dict[DnsKey, Series] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)


AttributeValue = str | int | float | bool


class RecordKind(str, Enum):
    TCP = "tcp"
    UDP = "udp"
    DNS = "dns"


@dataclass(slots=True)
class Record:
    """One enriched series: which Resource it belongs to and its data point attributes.

    `resource` is a sorted tuple of (key, value) so records of one workload group
    together; `attributes` are the point attributes shared by every metric of the series
    (`network.*`, `server.*`, `process.executable.name`, `peer.*`, `dns.*` ...).
    """

    kind: RecordKind
    resource: tuple[tuple[str, AttributeValue], ...]
    attributes: dict[str, AttributeValue]
    series: Series


@dataclass(slots=True)
class EnrichedSnapshot:
    """A Snapshot after enrichment: what the metrics builder consumes."""

    time_ns: int
    records: list[Record] = field(default_factory=list)
    losses: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
