"""Matches DNS responses to queries and keeps cumulative per-name lookup statistics.

The kernel hands over client-side DNS packets (queries a local socket sent, responses
it received) with kernel timestamps. A query waits in `pending` under (cgroup, local
address and port, server address and port, message id); the response with the same
key and the same question ends it: duration = response time - query time. A query not
answered within `timeout_ns` is a timeout (a later answer is then ignored, so the
outcome never depends on when the agent looked). Retransmissions of a pending query
keep the first send time: the duration is what the workload waited.

Cardinality guard: per workload and interval at most `max_names` distinct question
names get their own series; the others are recorded under `_OTHER`. A series unchanged for
`idle_intervals` collections is dropped after it was last reported, so memory follows
the names in use.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from otel_netreceiver.flows.dns_parser import MalformedPacket, Message, parse, read_answers
from otel_netreceiver.flows.model import DnsKey, DnsStats, Histogram, Series, Snapshot, Workload

OTHER_NAME = "_OTHER"
DEFAULT_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Endpoint = tuple[str, int]  # (address text, port)
LOSS_REASONS = ("dns.malformed_packet", "dns.unmatched_response", "dns.pending_full",
                "dns.query_without_question", "dns.timeout_uncertain")
MAX_LOSSY_WINDOWS = 16


@dataclass(slots=True)  # not frozen: built per packet, and frozen init costs ~2 µs
class DnsPacket:
    """One DNS message seen on a local socket, as the collector decoded it."""

    timestamp_ns: int  # CLOCK_MONOTONIC (bpf_ktime_get_ns)
    workload: Workload
    sent: bool  # True: the local socket sent it (egress); False: it received it
    local: Endpoint
    remote: Endpoint
    payload: bytes


@dataclass(slots=True)
class _Pending:
    timestamp_ns: int
    workload: Workload
    question: tuple[str, int]  # (name, qtype)
    server: str


class NameGuard:
    """At most `limit` distinct names per workload per interval; the rest are `_OTHER`.

    A workload here is a cgroup and a process name, not a pid: a container (or a host
    program) that runs many short processes still gets one budget, so the series it
    exports stay bounded.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: dict[tuple[int, str], set[str]] = {}

    def admit(self, workload: Workload, name: str) -> str:
        names = self._seen.setdefault((workload.cgroup_id, workload.comm), set())
        if name in names or len(names) < self._limit:
            names.add(name)
            return name
        return OTHER_NAME

    def next_interval(self) -> None:
        self._seen.clear()


class DnsTracker:
    """Turns DNS packets into cumulative `DnsStats` per (workload, name, server, outcome)."""

    def __init__(
        self,
        bounds: tuple[float, ...] = DEFAULT_BOUNDS,
        timeout_ns: int = 5_000_000_000,
        max_names: int = 100,
        max_pending: int = 65536,
        on_answer: Callable[[Workload, Message], None] | None = None,
        idle_intervals: int = 10,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._bounds, self._timeout_ns = tuple(bounds), timeout_ns
        self._guard = NameGuard(max_names)
        self._max_pending = max_pending
        self._on_answer = on_answer
        self._wall_clock = wall_clock
        self._pending: OrderedDict[tuple, _Pending] = OrderedDict()
        self._series: dict[DnsKey, Series] = {}
        self._idle: dict[DnsKey, int] = {}  # collections since the key last changed
        self.idle_intervals = idle_intervals
        self._lossy: list[tuple[int, int]] = []
        self.losses: Counter[str] = Counter({reason: 0 for reason in LOSS_REASONS})

    @property
    def pending(self) -> int:
        return len(self._pending)

    def observe(self, packet: DnsPacket) -> None:
        """Parse one packet and account for it; malformed packets are counted, never raised."""
        self.observe_fields(packet.timestamp_ns, packet.workload, packet.sent, packet.local,
                            packet.remote, packet.payload)

    def observe_fields(self, timestamp_ns: int, workload: Workload, sent: bool,
                       local: Endpoint, remote: Endpoint, payload: bytes) -> None:
        """`observe` without building a DnsPacket (the collector's per-packet path).

        Only header and question are parsed; the answers only for a matched NOERROR
        response when someone listens for them (`on_answer`).
        """
        try:
            message = parse(payload, answers=False)
        except MalformedPacket:
            self.losses["dns.malformed_packet"] += 1
            return
        if sent and not message.is_response:
            self._query(timestamp_ns, workload, local, remote, message)
        elif not sent and message.is_response:
            self._response(timestamp_ns, workload, local, remote, message, payload)

    def expire(self, now_ns: int) -> None:
        """Count queries older than the timeout (at `now_ns`, monotonic) as timeouts."""
        while self._pending:
            key = next(iter(self._pending))
            entry = self._pending[key]
            if entry.timestamp_ns + self._timeout_ns > now_ns:
                break
            del self._pending[key]
            if self._uncertain(entry.timestamp_ns):
                self.losses["dns.timeout_uncertain"] += 1
                continue
            self._stats(entry.workload, entry.question[0], entry.server, "").timeouts += 1

    def packets_lost(self, start_ns: int, end_ns: int) -> None:
        """Packets were dropped before reaching us between these (monotonic) times.

        A query whose answer was due then may have been answered: it is counted in
        `dns.timeout_uncertain`, not as a timeout.
        """
        self._lossy = [*self._lossy[-(MAX_LOSSY_WINDOWS - 1):], (start_ns, end_ns)]

    def _uncertain(self, sent_ns: int) -> bool:
        due_ns = sent_ns + self._timeout_ns
        return any(start <= due_ns and sent_ns <= end for start, end in self._lossy)

    def collect(self, snapshot: Snapshot, now_ns: int) -> None:
        """Expire, then copy every series into `snapshot.dns`; a new interval begins."""
        self.expire(now_ns)
        for key, series in self._series.items():
            snapshot.dns[key] = Series(series.start_ns, _copy(series.stats))
        self._guard.next_interval()
        self._age()

    def _age(self) -> None:
        """Forget series unchanged for `idle_intervals` collections (after reporting them)."""
        for key in list(self._idle):
            self._idle[key] += 1
            if self._idle[key] >= self.idle_intervals:
                del self._idle[key], self._series[key]

    def _query(self, timestamp_ns: int, workload: Workload, local: Endpoint, remote: Endpoint,
               message: Message) -> None:
        if message.question is None:
            self.losses["dns.query_without_question"] += 1
            return
        key = (workload.cgroup_id, local, remote, message.id)
        if key in self._pending:
            return  # a retransmission: the lookup started with the first send
        if len(self._pending) >= self._max_pending:
            self.losses["dns.pending_full"] += 1
            return
        question = (message.question.name, message.question.qtype)
        self._pending[key] = _Pending(timestamp_ns, workload, question, remote[0])

    def _response(self, timestamp_ns: int, workload: Workload, local: Endpoint,
                  remote: Endpoint, message: Message, payload: bytes) -> None:
        key = (workload.cgroup_id, local, remote, message.id)
        entry = self._pending.get(key)
        if entry is None or not _same_question(entry, message):
            self.losses["dns.unmatched_response"] += 1
            return
        del self._pending[key]
        elapsed = timestamp_ns - entry.timestamp_ns
        if elapsed > self._timeout_ns:
            self._stats(entry.workload, entry.question[0], entry.server, "").timeouts += 1
            return
        stats = self._stats(entry.workload, entry.question[0], entry.server, message.error_type)
        _observe(stats.duration, max(elapsed, 0) / 1e9)
        if self._on_answer is not None and message.rcode == 0 and message.answer_count:
            read_answers(payload, message)
            if message.answers:
                self._on_answer(entry.workload, message)

    def _stats(self, workload: Workload, name: str, server: str, error: str) -> DnsStats:
        key = DnsKey(workload, self._guard.admit(workload, name), server, error)
        series = self._series.get(key)
        if series is None:
            stats = DnsStats(duration=Histogram.empty(self._bounds))
            series = self._series[key] = Series(self._wall_clock(), stats)
        self._idle[key] = -1
        return series.stats


def _same_question(entry: _Pending, message: Message) -> bool:
    """A response without a question (e.g. FORMERR) matches on the key alone."""
    question = message.question
    return question is None or (question.name, question.qtype) == entry.question


def _observe(histogram: Histogram, seconds: float) -> None:
    histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
    histogram.sum += seconds
    histogram.count += 1


def _copy(stats: DnsStats) -> DnsStats:
    duration = stats.duration
    if duration is not None:
        duration = Histogram(duration.bounds, list(duration.counts), duration.sum, duration.count)
    return DnsStats(duration=duration, timeouts=stats.timeouts)
