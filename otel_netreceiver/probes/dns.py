"""DNS lookups: duration per (workload, question name, server, rcode) and timeouts.

`DnsCollector` loads bpf/dns.bpf.c (cgroup_skb programs on the cgroup v2 root), which
copies client-side DNS packets (UDP or TCP, configurable ports) into a ring buffer. A
background thread polls it and feeds each packet to the `DnsTracker` (parse, match
response to query, histogram, timeouts, name guard) and, through it, answers to the
IP -> name cache (`DnsNames`) that names the peers of TCP and UDP flows. `collect`
copies the cumulative series into the snapshot once per interval.

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
from ..flows.dns_tracker import DEFAULT_BOUNDS, DnsPacket, DnsTracker
from ..flows.model import Snapshot, Workload
from . import libbpf
from .cgroup_skb import (LOSS_RINGBUF_FULL, PAYLOAD_OFFSET, SkbSettings, attached,
                         read_losses, set_settings)

log = logging.getLogger(__name__)

LOSS_NAMES = {LOSS_RINGBUF_FULL: "dns.ring_buffer_full"}
# struct nr_dns_event up to its payload; checked against the ctypes mirror at import
EVENT = struct.Struct("<QQI16sI16s16sHHHHBBB5x")
assert EVENT.size == PAYLOAD_OFFSET
IPPROTO_TCP = 6
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


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


def decode(record: bytes) -> tuple[list[DnsPacket], bool]:
    """Turn one ring buffer record into packets; False when a TCP message was cut."""
    (ts, cgroup_id, tgid, comm, _, local, remote, local_port, remote_port, payload_len,
     captured, sent, transport, family) = EVENT.unpack_from(record)
    payload = record[PAYLOAD_OFFSET:PAYLOAD_OFFSET + captured]
    workload = _workload(cgroup_id, tgid, comm)
    ends = (_address(local, family), local_port), (_address(remote, family), remote_port)
    if transport == IPPROTO_TCP:
        messages, whole = tcp_messages(payload)
    else:
        messages, whole = [payload], True
    return [DnsPacket(ts, workload, bool(sent), *ends, m) for m in messages], whole


class DnsCollector:
    """Collector of DNS lookups (see the module docstring)."""

    def __init__(self, settings: DnsSettings | None = None, names: DnsNames | None = None,
                 clock=time.monotonic_ns) -> None:
        self.settings = settings or DnsSettings()
        self.names = names
        self._clock = clock
        self.tracker = DnsTracker(self.settings.bounds, int(self.settings.timeout * 1e9),
                                  self.settings.max_names, self.settings.max_pending,
                                  on_answer=self._learn if names is not None else None)
        self.tracker.losses.update({"dns.tcp_message_cut": 0, "dns.bad_record": 0})
        self._lock = threading.Lock()
        self._cycles = threading.Condition()  # notified after every poll of the ring
        self._cycle = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stack = self._loaded = self._ring = None
        self.records = 0
        self._warned = -60.0

    def __enter__(self) -> "DnsCollector":
        self._stop.clear()
        stack = attached("dns", self._configure, self.settings.object_path)
        self._loaded = stack.__enter__()
        self._stack = stack
        try:
            self._ring = libbpf.RingBuffer(self._loaded.map("dns_events").fd, self._on_record)
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
        if self._stack is not None:
            self._stack.__exit__(None, None, None)
            self._stack = self._loaded = None

    def _configure(self, obj: libbpf.BpfObject) -> None:
        set_settings(obj, self.settings.skb)
        obj.map("dns_events").set_max_entries(self.settings.ring_buffer_bytes)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self._ring.poll(self.settings.poll_ms)
            except OSError as err:  # never kill the agent over one bad poll
                log.warning("DNS ring buffer poll failed: %s", err)
                time.sleep(self.settings.poll_ms / 1000)
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

    def _on_record(self, record: bytes) -> None:
        """Called by libbpf for each record; nothing may escape into the C callback."""
        try:
            packets, whole = decode(record)
            with self._lock:
                self.records += 1
                if not whole:
                    self.tracker.losses["dns.tcp_message_cut"] += 1
                for packet in packets:
                    self.tracker.observe(packet)
        except Exception as err:  # noqa: BLE001 - a bad record must not stop the reader
            with self._lock:
                self.tracker.losses["dns.bad_record"] += 1
            self._warn(err)

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
