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
from otel_netreceiver.flows.model import Direction, FlowKey, Snapshot, Transport, Workload

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
    version: int  # changes whenever by_ip may answer differently

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
    """A PeerResolver naming local workloads (both halves seen) and known pods.

    The index is built anew from every snapshot, from what each key contributes and looks
    up (worked out once per key while it stays in the snapshots). Answers are shared,
    never copied: the same object while the peer stays the same (callers must not modify
    them).
    """

    def __init__(self, workloads: WorkloadResolver, pods: PodsByIp | None = None,
                 netns: NetnsReader = read_netns) -> None:
        self._workloads = workloads
        self._pods = pods
        self._read_netns = netns
        self._netns: dict[int, tuple[int, frozenset[str]]] = {}
        self._servers: dict[tuple, Attributes] = {}
        self._clients: dict[tuple, Attributes] = {}
        self._described: dict[Workload, Attributes] = {}
        self._last_described: dict[Workload, Attributes] = {}
        self._slots: dict[FlowKey, _Slots] = {}
        self._pod_answers: dict[int, tuple[object, Attributes]] = {}
        self._pods_version = None
        # True after `observe` when every key of the last snapshot would get the very
        # answer object it got then (same keys, workloads and pods): see Enricher. Else
        # the keys that might not (those whose peer's index entries changed), or None
        self.unchanged = False
        self.changed_keys: set[FlowKey] | None = None

    def observe(self, snapshot: Snapshot) -> None:
        """Index this snapshot's local servers and clients (called before enrichment).

        The index depends only on the keys and their workloads' descriptions: when both
        are last snapshot's, last snapshot's index is kept as it is.
        """
        slots, fresh, known = self._slots, {}, True
        for table in (snapshot.tcp, snapshot.udp):
            for key in table:
                found = slots.get(key)
                if found is None:
                    found, known = self._slots_of(key), False
                fresh[key] = found
        self._slots = fresh
        self._last_described, self._described = self._described, {}
        pods_version = getattr(self._pods, "version", None) if self._pods is not None else 0
        pods_kept = pods_version is not None and pods_version == self._pods_version
        self._pods_version = pods_version
        self.unchanged, self.changed_keys = False, None
        if known and len(fresh) == len(slots) and self._descriptions_kept():
            self.unchanged = pods_kept
            return
        servers, clients = self._servers, self._clients
        self._servers, self._clients = {}, {}
        for key, found in fresh.items():
            index = self._servers if found.serves else self._clients
            described = self._described.get(key.workload) or self._describe(key.workload)
            for slot in found.offers:
                _put(index, slot, described)
        if pods_kept:
            self.changed_keys = _asking(fresh, _moved(servers, self._servers), _moved(clients, self._clients))

    def _descriptions_kept(self) -> bool:
        """Describe last snapshot's workloads again; True if none changed."""
        kept = True
        for workload, last in self._last_described.items():
            kept = self._describe(workload) is last and kept
        return kept

    def _slots_of(self, key: FlowKey) -> _Slots:
        """Where a key sits in the index and where its peer would be."""
        transport = key.transport is Transport.TCP  # enums hash slowly; slots are hashed often
        if key.direction is Direction.INCOMING:
            netns = self._namespace(key.workload)[0] if _is_loopback(key.local_address) else 0
            offers = ((transport, netns, key.local_address, key.server_port),)
        else:
            netns, addresses = self._namespace(key.workload)
            scope = netns if _is_loopback(key.peer_address) else 0
            offers = tuple((transport, scope, key.peer_address, key.server_port, address)
                           for address in addresses or {""})
        netns = self._namespace(key.workload)[0] if _is_loopback(key.peer_address) else 0
        if key.direction is Direction.OUTGOING:
            wants = ((transport, netns, key.peer_address, key.server_port),)
        else:
            exact = (transport, netns, key.local_address, key.server_port, key.peer_address)
            wants = (exact, exact[:-1] + ("",))
        return _Slots(key.direction is Direction.INCOMING, offers, wants)

    def _namespace(self, workload: Workload) -> tuple[int, frozenset[str]]:
        if workload.pid <= 0:
            return 0, frozenset()
        if workload.pid not in self._netns:
            if len(self._netns) >= _CACHE_LIMIT:
                self._netns.clear()
            self._netns[workload.pid] = self._read_netns(workload.pid)
        return self._netns[workload.pid]

    def _describe(self, workload: Workload) -> Attributes:
        """The peer.* attributes naming a workload: once per snapshot, and the last
        snapshot's object while they are equal."""
        attributes = {**self._workloads.resource(workload), **self._workloads.point_attributes(workload)}
        described = {f"peer.{k}": attributes[k] for k in PEER_KEYS if k in attributes}
        last = self._last_described.get(workload)
        self._described[workload] = described = last if last == described else described
        return described

    def peer_attributes(self, key: FlowKey) -> Attributes:
        found = self._local_peer(key)
        if found is None and self._pods is not None:
            found = self._pod_peer(key.peer_address)
        return found or _NOBODY

    def _local_peer(self, key: FlowKey) -> Attributes | None:
        slots = self._slots.get(key) or self._slots_of(key)
        index = self._clients if slots.serves else self._servers
        for slot in slots.wants:
            found = index.get(slot)
            if found is not None:
                return found
        return None

    def _pod_peer(self, address: str) -> Attributes | None:
        """A pod's peer.* attributes: the same object while the store holds the same pod."""
        pod = self._pods.by_ip(address)
        if pod is None:
            return None
        last = self._pod_answers.get(id(pod))
        if last is None or last[0] is not pod:
            if len(self._pod_answers) >= _CACHE_LIMIT:
                self._pod_answers.clear()
            last = self._pod_answers[id(pod)] = (
                pod, {f"peer.{k}": v for k, v in pod.attributes.items() if k in PEER_KEYS})
        return last[1]


class _Slots:
    """A key's index entries (`offers`, in the servers' index when it `serves`) and the
    entries of the other index that would name its peer (`wants`, in order)."""

    __slots__ = ("serves", "offers", "wants")

    def __init__(self, serves: bool, offers: tuple, wants: tuple) -> None:
        self.serves, self.offers, self.wants = serves, offers, wants


_NOBODY: Attributes = {}  # the answer when no peer is known (shared: never modified)


def _moved(old: dict, new: dict) -> set:
    """The entries of an index that came, left or now name someone else."""
    moved = old.keys() - new.keys()
    moved.update(slot for slot, attributes in new.items() if old.get(slot) is not attributes)
    return moved


def _asking(slots: dict[FlowKey, "_Slots"], servers: set, clients: set) -> set[FlowKey]:
    """The keys that look up any of the moved index entries (servers' or clients')."""
    if not servers and not clients:
        return set()
    return {key for key, found in slots.items()
            if not (clients if found.serves else servers).isdisjoint(found.wants)}


def _put(index: dict, key: tuple, attributes: Attributes) -> None:
    """Remember who sits behind a key; two different workloads make it ambiguous."""
    found = index.get(key)
    if found is None or found is attributes:
        index[key] = attributes
    elif found != attributes:
        index[key] = _AMBIGUOUS
