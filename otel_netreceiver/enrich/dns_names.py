"""IP address -> the domain name a workload resolved, learned from DNS answers.

`DnsNames` is a bounded LRU, TTL-aware cache fed by the DNS tracker with every
successful answer; `DnsPeerResolver` plugs it into the `Enricher` so that outgoing TCP
and UDP flows carry `server.address` = that name instead of the IP.

Names are kept per workload (cgroup id), because two workloads may resolve different
names to one IP (shared CDN or load-balancer addresses), with a host-wide entry (the
most recent answer from anyone) as the fallback for workloads that did not resolve
the address themselves (e.g. a sidecar resolved it, or the answer was cached).
The name recorded is the question the workload asked, not the end of a CNAME chain:
it is the name in the workload's configuration.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from otel_netreceiver.flows.dns_parser import TYPE_A, TYPE_AAAA, TYPE_CNAME, Answer
from otel_netreceiver.flows.model import Direction, FlowKey

HOST_WIDE = -1  # the cache key of the host-wide entry of an address


def canonical_address(text: str) -> str:
    """One spelling per address; v4-mapped IPv6 becomes IPv4, as flow keys report it."""
    if ":" not in text:
        return text  # dotted IPv4 from inet_ntop or a flow key: already canonical
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def resolved_addresses(question: str, answers: Iterable[Answer]) -> list[tuple[str, int]]:
    """(address, ttl) of the A/AAAA answers reached from `question` through CNAMEs."""
    chain, found = {question}, []
    for answer in answers:
        if answer.name not in chain:
            continue  # not part of this question's answer: never trust it for the cache
        if answer.rtype == TYPE_CNAME:
            chain.add(answer.data)
        elif answer.rtype in (TYPE_A, TYPE_AAAA):
            found.append((answer.data, answer.ttl))
    return found


class DnsNames:
    """Bounded LRU of (workload, address) -> (name, expiry), honouring answer TTLs.

    A TTL below `min_ttl` is raised to it: flows are looked up when an interval ends,
    often after a short TTL ran out, and a connection opened in time keeps its peer.
    Safe to feed from one thread while another looks names up.
    """

    def __init__(
        self,
        capacity: int = 20000,
        min_ttl: float = 60.0,
        max_ttl: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[tuple[int, str], tuple[str, float]] = OrderedDict()
        self.capacity, self._min_ttl, self._max_ttl = capacity, min_ttl, max_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self.evictions = 0
        self._version = 0  # see version()
        self._first_expiry = math.inf  # no entry expires before (a lower bound)

    def __len__(self) -> int:
        return len(self._entries)

    def version(self) -> int:
        """A number that changes whenever name_for may answer differently than before: a
        name learned, changed, refreshed after it expired, evicted or expired."""
        now = self._clock()
        with self._lock:
            if now >= self._first_expiry:
                self._version += 1
                self._first_expiry = min((expiry for _, expiry in self._entries.values() if expiry > now),
                                         default=math.inf)
            return self._version

    def learn(self, cgroup_id: int, question: str, answers: Iterable[Answer]) -> None:
        """Record the addresses a workload's question resolved to."""
        now = self._clock()
        with self._lock:
            for address, ttl in resolved_addresses(question, answers):
                expiry = now + min(max(ttl, self._min_ttl), self._max_ttl)
                text = canonical_address(address)
                self._put((cgroup_id, text), (question, expiry), now)
                self._put((HOST_WIDE, text), (question, expiry), now)

    def name_for(self, cgroup_id: int, address: str) -> str | None:
        """The name `cgroup_id` resolved to `address`, else the host-wide one, else None."""
        text, now = canonical_address(address), self._clock()
        with self._lock:
            for key in ((cgroup_id, text), (HOST_WIDE, text)):
                entry = self._entries.get(key)
                if entry is not None and entry[1] > now:
                    return entry[0]
        return None

    def _put(self, key: tuple[int, str], value: tuple[str, float], now: float) -> None:
        last = self._entries.get(key)
        if last is None or last[0] != value[0] or last[1] <= now:
            self._version += 1
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._first_expiry = min(self._first_expiry, value[1])
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1
            self._version += 1


class DnsPeerResolver:
    """PeerResolver: `server.address` of outgoing flows = the name the workload resolved.

    Names are looked up once per (workload, address) and snapshot: thousands of flows
    share a few peers. Answers are shared, one object per name (callers must not modify
    them)."""

    def __init__(self, names: DnsNames) -> None:
        self._names = names
        self._answers: dict[str, dict[str, str]] = {}
        self._looked_up: dict[tuple[int, str], dict[str, str]] = {}
        self._version: int | None = None
        # True after `observe` when no name was learned, changed or expired since the last
        # snapshot: every flow would get the answer object it got then (see Enricher)
        self.unchanged = False

    def observe(self, snapshot) -> None:
        """A new snapshot: names may have been learned or expired since the last one."""
        self._looked_up = {}
        version = self._names.version()
        self.unchanged, self._version = version == self._version, version

    def peer_attributes(self, key: FlowKey) -> dict[str, str]:
        if key.direction is not Direction.OUTGOING:
            return _NO_NAME
        peer = (key.workload.cgroup_id, key.peer_address)
        answer = self._looked_up.get(peer)
        if answer is None:
            answer = self._looked_up[peer] = self._answer(self._names.name_for(*peer))
        return answer

    def _answer(self, name: str | None) -> dict[str, str]:
        if not name:
            return _NO_NAME
        answer = self._answers.get(name)
        if answer is None:
            if len(self._answers) >= self._names.capacity:
                self._answers.clear()
            answer = self._answers[name] = {"server.address": name}
        return answer


_NO_NAME: dict[str, str] = {}  # shared: never modified
