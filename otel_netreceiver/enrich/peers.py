"""Peer identity: the workload on the other side of a flow, as `peer.*` attributes.

Two sources, tried in order:

1. Local workloads. When both ends of a connection run on this host, the snapshot holds
   both halves: the client's outgoing flow and the server's incoming one. `observe`
   indexes servers by (transport, address, port) from incoming flows and clients by
   (transport, server address, port, client address) from outgoing flows, the client's
   addresses read from its network namespace. Each half then names the other.
2. Pods from the Kubernetes watch, by pod IP (host-network pods own no IP).

Attributes are the peer's workload names prefixed with `peer.` (see PEER_KEYS); host-wide
attributes (host.*, cloud.*) and labels are left out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from typing import Protocol

from otel_netreceiver.enrich.base import Attributes, WorkloadResolver
from otel_netreceiver.flows.model import Direction, FlowKey, Snapshot, Workload

log = logging.getLogger(__name__)

PEER_KEYS = (
    "container.id", "k8s.pod.name", "k8s.namespace.name", "k8s.container.name",
    "k8s.deployment.name", "k8s.replicaset.name", "k8s.statefulset.name",
    "k8s.daemonset.name", "k8s.job.name", "k8s.cronjob.name", "process.executable.name",
)
_AMBIGUOUS: Attributes = {}  # two different workloads behind one key: name neither
_CACHE_LIMIT = 4096

NetnsReader = Callable[[int], tuple[int, frozenset[str]]]


class PodsByIp(Protocol):
    def by_ip(self, ip: str): ...


def parse_fib_trie(text: str) -> set[str]:
    """IPv4 addresses local to a namespace, from /proc/<pid>/net/fib_trie."""
    found, last = set(), ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:]
        elif stripped == "/32 host LOCAL" and last:
            found.add(last)
    return found


def parse_if_inet6(text: str) -> set[str]:
    """IPv6 addresses of a namespace, from /proc/<pid>/net/if_inet6."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            found.add(str(ipaddress.IPv6Address(int(fields[0], 16))))
    return found


def read_netns(pid: int) -> tuple[int, frozenset[str]]:
    """(network namespace inode, its local addresses) of a process; (0, {}) if it is gone."""
    try:
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        with open(f"/proc/{pid}/net/fib_trie") as v4, open(f"/proc/{pid}/net/if_inet6") as v6:
            return inode, frozenset(parse_fib_trie(v4.read()) | parse_if_inet6(v6.read()))
    except OSError:
        return 0, frozenset()


def _is_loopback(address: str) -> bool:
    # called twice per flow: text tests, as flow keys spell addresses canonically
    return address.startswith("127.") or address == "::1"


class WorkloadPeers:
    """A PeerResolver naming local workloads (both halves seen) and known pods."""

    def __init__(self, workloads: WorkloadResolver, pods: PodsByIp | None = None,
                 netns: NetnsReader = read_netns) -> None:
        self._workloads = workloads
        self._pods = pods
        self._read_netns = netns
        self._netns: dict[int, tuple[int, frozenset[str]]] = {}
        self._servers: dict[tuple, Attributes] = {}
        self._clients: dict[tuple, Attributes] = {}
        self._described: dict[Workload, Attributes] = {}

    def observe(self, snapshot: Snapshot) -> None:
        """Index this snapshot's local servers and clients (called before enrichment)."""
        self._servers, self._clients, self._described = {}, {}, {}
        for table in (snapshot.tcp, snapshot.udp):
            for key in table:
                if key.direction is Direction.INCOMING:
                    self._index_server(key)
                else:
                    self._index_client(key)

    def _index_server(self, key: FlowKey) -> None:
        netns = self._namespace(key.workload)[0] if _is_loopback(key.local_address) else 0
        _put(self._servers, (key.transport, netns, key.local_address, key.server_port),
             self._describe(key.workload))

    def _index_client(self, key: FlowKey) -> None:
        netns, addresses = self._namespace(key.workload)
        scope = netns if _is_loopback(key.peer_address) else 0
        described = self._describe(key.workload)
        for address in addresses or {""}:
            _put(self._clients, (key.transport, scope, key.peer_address, key.server_port, address),
                 described)

    def _namespace(self, workload: Workload) -> tuple[int, frozenset[str]]:
        if workload.pid <= 0:
            return 0, frozenset()
        if workload.pid not in self._netns:
            if len(self._netns) >= _CACHE_LIMIT:
                self._netns.clear()
            self._netns[workload.pid] = self._read_netns(workload.pid)
        return self._netns[workload.pid]

    def _describe(self, workload: Workload) -> Attributes:
        """The peer.* attributes naming a workload (once per workload and snapshot)."""
        if workload not in self._described:
            attributes = {**self._workloads.resource(workload),
                          **self._workloads.point_attributes(workload)}
            self._described[workload] = {f"peer.{k}": attributes[k] for k in PEER_KEYS
                                         if k in attributes}
        return self._described[workload]

    def peer_attributes(self, key: FlowKey) -> Attributes:
        found = self._local_peer(key)
        if found is None and self._pods is not None:
            pod = self._pods.by_ip(key.peer_address)
            if pod is not None:
                found = {f"peer.{k}": v for k, v in pod.attributes.items() if k in PEER_KEYS}
        return dict(found or {})

    def _local_peer(self, key: FlowKey) -> Attributes | None:
        loopback = _is_loopback(key.peer_address)
        netns = self._namespace(key.workload)[0] if loopback else 0
        if key.direction is Direction.OUTGOING:
            return self._servers.get((key.transport, netns, key.peer_address, key.server_port))
        exact = (key.transport, netns, key.local_address, key.server_port, key.peer_address)
        return self._clients.get(exact, self._clients.get(exact[:-1] + ("",)))


def _put(index: dict, key: tuple, attributes: Attributes) -> None:
    """Remember who sits behind a key; two different workloads make it ambiguous."""
    if key in index and index[key] != attributes:
        index[key] = _AMBIGUOUS
    else:
        index[key] = attributes
