"""DNS lookups: duration per (workload, question name, server, rcode) and timeouts.

`DnsCollector` runs the DNS part of bpf/skb.bpf.c (cgroup_skb programs on the cgroup v2
root, shared with the UDP collector through an `SkbProbe`), which copies client-side
DNS packets (UDP or TCP, configurable ports) into a ring buffer. A background thread
reads it every `poll_ms` (the kernel wakes it early only when the ring fills up, not
per packet): the ring buffer callback only keeps each record's bytes, and after each
poll the whole batch goes, under one lock, to the `DnsTracker` (parse, match response to
query, histogram, timeouts, name guard) and, through it, answers to the IP -> name
cache (`DnsNames`) that names the peers of TCP and UDP flows. `collect` copies the
cumulative series into the snapshot once per interval.

Attribution: a query carries the cgroup, tgid and comm of the task that sent it (the
egress program runs in its context); responses are matched on the socket's cgroup.

Debug entry: `python -m otel_netreceiver.probes.dns --seconds N` prints the lookups.
"""

from __future__ import annotations

import argparse
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from ..enrich.dns_names import DnsNames
from ..flows.dns_parser import Message, tcp_messages
from ..flows.dns_tracker import DEFAULT_BOUNDS, DnsTracker, Endpoint
from ..flows.model import Snapshot, Workload
from . import abi, libbpf
from .cgroup_skb import LOSS_RINGBUF_FULL, PAYLOAD_OFFSET, SkbProbe, SkbSettings, read_losses

log = logging.getLogger(__name__)

LOSS_NAMES = {LOSS_RINGBUF_FULL: "dns.ring_buffer_full"}
# counted by the reader in user space (the tracker counts its own: dns_tracker.LOSS_REASONS)
READER_LOSSES = ("dns.tcp_message_cut", "dns.bad_record")
# struct nr_dns_event up to its payload; checked against the ctypes mirror at import
EVENT = struct.Struct("<QQI16sI16s16sHHHHBBB5x")
assert EVENT.size == PAYLOAD_OFFSET
IPPROTO_TCP = 6
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
CACHE_MAX = 4096  # decoded workloads / socket endpoints kept (cleared when full)


@dataclass(frozen=True)
class DnsSettings:
    skb: SkbSettings = field(default_factory=SkbSettings)
    timeout: float = 5.0           # seconds without an answer -> dns.lookup.timeout.count
    max_names: int = 100           # distinct question names per workload per interval
    bounds: tuple[float, ...] = DEFAULT_BOUNDS
    max_pending: int = 65536       # queries awaiting an answer
    ring_buffer_bytes: int = 8 << 20  # power of two, at least a page
    poll_ms: int = 100
    object_path: str | None = None


@lru_cache(maxsize=4096)  # few distinct sockets and servers: skip re-formatting them
def _address(raw: bytes, family: int) -> str:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


@lru_cache(maxsize=4096)
def _workload(cgroup_id: int, tgid: int, comm: bytes) -> Workload:
    return Workload(cgroup_id, tgid, comm.split(b"\0", 1)[0].decode(errors="replace"))


# Pieces of a record the hot path reads, at their offsets in struct nr_dns_event
TIMESTAMP = struct.Struct("<Q")
IDENTITY = struct.Struct("<QI16s")  # cgroup_id, tgid, comm
IDENTITY_AT, IDENTITY_END = abi.DnsEvent.id.offset, abi.DnsEvent.local.offset
ENDS = struct.Struct("<16s16sHH")  # local, remote, local_port, remote_port
ENDS_AT, ENDS_END = abi.DnsEvent.local.offset, abi.DnsEvent.payload_len.offset
TAIL = struct.Struct("<HBB")  # captured, sent, transport
TAIL_AT, FAMILY_AT = abi.DnsEvent.captured.offset, abi.DnsEvent.family.offset
assert ENDS_AT + ENDS.size == ENDS_END and TAIL_AT + TAIL.size == FAMILY_AT


def _ends(record: bytes) -> tuple[Endpoint, Endpoint]:
    """((local address, port), (remote address, port)) of a record."""
    local, remote, local_port, remote_port = ENDS.unpack_from(record, ENDS_AT)
    family = record[FAMILY_AT]
    return (_address(local, family), local_port), (_address(remote, family), remote_port)




class DnsCollector:
    """Collector of DNS lookups (see the module docstring)."""

    def __init__(self, settings: DnsSettings | None = None, names: DnsNames | None = None,
                 clock=time.monotonic_ns, probe: SkbProbe | None = None) -> None:
        self.settings = settings or DnsSettings()
        self.probe = probe or SkbProbe(self.settings.skb, self.settings.object_path)
        self.probe.use("dns", self._configure)
        self.names = names
        self._clock = clock
        self.tracker = DnsTracker(self.settings.bounds, int(self.settings.timeout * 1e9),
                                  self.settings.max_names, self.settings.max_pending,
                                  on_answer=self._learn if names is not None else None)
        self.tracker.losses.update(dict.fromkeys(READER_LOSSES, 0))
        self._lock = threading.Lock()
        self._cycles = threading.Condition()  # notified after every poll of the ring
        self._cycle = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded = self._ring = None
        self._batch: list[bytes] = []  # records of the current poll, filled by the callback
        self._workloads: dict[bytes, Workload] = {}  # raw identity -> Workload
        self._endpoints: dict[tuple, tuple] = {}  # raw addresses, ports, family -> ends
        self.records = 0
        self._warned = -60.0

    def __enter__(self) -> "DnsCollector":
        self._stop.clear()
        self._loaded = self.probe.__enter__()
        try:
            self._ring = libbpf.RingBuffer(self._loaded.map("dns_events").fd,
                                           self._batch.append)
        except OSError:
            self.__exit__(None, None, None)
            raise
        self._ring_drops, self._collected_ns = 0, self._clock()
        self._thread = threading.Thread(target=self._poll, name="dns-ring-buffer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._ring is not None:
            self._ring.free()
            self._ring = None
        if self._loaded is not None:
            self._loaded = None
            self.probe.__exit__(None, None, None)

    def _configure(self, obj: libbpf.BpfObject) -> None:
        obj.map("dns_events").set_max_entries(self.settings.ring_buffer_bytes)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                # the kernel wakes this poll only when the ring fills up (skb.bpf.c
                # wakeup_flag): it usually sleeps poll_ms, then everything is read
                self._ring.poll(self.settings.poll_ms)
                self._ring.consume()
            except OSError as err:  # never kill the agent over one bad poll
                log.warning("DNS ring buffer poll failed: %s", err)
                time.sleep(self.settings.poll_ms / 1000)
            if self._batch:
                batch = self._batch.copy()
                self._batch.clear()
                self._on_records(batch)
            with self._cycles:
                self._cycle += 1
                self._cycles.notify_all()

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait until every record written before the call has been read (at most `timeout`).

        A poll that starts after the call reads all the ring held then; the second
        cycle from now is such a poll. False if the reader did not get there in time.
        """
        if self._thread is None:
            return False
        with self._cycles:
            target = self._cycle + 2
            return self._cycles.wait_for(lambda: self._cycle >= target, timeout)

    def _on_records(self, records: list[bytes]) -> None:
        """Account for one poll's records; nothing may escape (it would stop the reader)."""
        with self._lock:
            self.records += len(records)
            for record in records:
                try:
                    self._on_record(record)
                except Exception as err:  # noqa: BLE001 - a bad record must not stop the reader
                    self.tracker.losses["dns.bad_record"] += 1
                    self._warn(err)

    def _on_record(self, record: bytes) -> None:
        """One record into the tracker (the hot path: caches instead of decoding)."""
        who = record[IDENTITY_AT:IDENTITY_END]
        workload = self._workloads.get(who)
        if workload is None:
            workload = self._remember(self._workloads, who, _workload(
                *IDENTITY.unpack_from(record, IDENTITY_AT)))
        where = (record[ENDS_AT:ENDS_END], record[FAMILY_AT])
        ends = self._endpoints.get(where)
        if ends is None:
            ends = self._remember(self._endpoints, where, _ends(record))
        captured, sent, transport = TAIL.unpack_from(record, TAIL_AT)
        payload = record[PAYLOAD_OFFSET:PAYLOAD_OFFSET + captured]
        if transport == IPPROTO_TCP:
            messages, whole = tcp_messages(payload)
            if not whole:
                self.tracker.losses["dns.tcp_message_cut"] += 1
        else:
            messages = (payload,)
        timestamp_ns = TIMESTAMP.unpack_from(record)[0]
        for message in messages:
            self.tracker.observe_fields(timestamp_ns, workload, bool(sent), ends[0], ends[1],
                                        message)

    @staticmethod
    def _remember(cache: dict, key: bytes, value):
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[key] = value
        return value

    def _warn(self, err: Exception) -> None:
        now = time.monotonic()
        if now - self._warned >= 60:  # at most once a minute: this is a hot path
            self._warned = now
            log.warning("DNS record skipped (%s: %s); counted in dns.bad_record",
                        type(err).__name__, err)

    def _learn(self, workload: Workload, message: Message) -> None:
        self.names.learn(workload.cgroup_id, message.question.name, message.answers)

    def collect(self, snapshot: Snapshot) -> None:
        """Count overdue queries as timeouts and add every cumulative series."""
        # grace: a response already in the ring buffer but not yet read is not a timeout
        grace = 2 * self.settings.poll_ms * 1_000_000 + 500_000_000
        self.flush()  # what happened before now is read, so not mistaken for a timeout
        kernel_losses, now = read_losses(self._loaded, LOSS_NAMES), self._clock()
        with self._lock:
            if kernel_losses["dns.ring_buffer_full"] > self._ring_drops:
                self.tracker.packets_lost(self._collected_ns, now)
            self.tracker.collect(snapshot, now - grace)
            snapshot.losses.update(self.tracker.losses)
            snapshot.gauges["dns.pending_queries"] = self.tracker.pending
        self._ring_drops, self._collected_ns = kernel_losses["dns.ring_buffer_full"], now
        snapshot.losses.update(kernel_losses)
        if self.names is not None:
            snapshot.gauges["dns.names_cached"] = len(self.names)


def main(argv: list[str] | None = None) -> None:
    """Print the DNS lookups seen during --seconds (a debugging aid)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    with DnsCollector(names=DnsNames()) as collector:
        time.sleep(args.seconds)
        snapshot = Snapshot(time.time_ns())
        collector.collect(snapshot)
    for key, series in snapshot.dns.items():
        print(key, series.stats.duration.count, series.stats.timeouts)
    print("losses", snapshot.losses, "gauges", snapshot.gauges)


if __name__ == "__main__":
    main()
