"""TCP flows from the kernel: loads bpf/tcp.bpf.c and turns its maps into flow series.

Once per interval `collect()`:
  1. flushes live connections' counters with one pass over the kernel's `sockets` entries
     (every network namespace at once), and runs the `iter/tcp` pass once in each network
     namespace seen for the first time (adopts connections that existed before we
     started, remembers listeners),
  2. swaps the aggregate map the programs write (double buffering; the map-in-map update
     returns only after an RCU grace period, so no program still writes the old map),
  3. drains the old map with batch reads and adds the deltas to the FlowTable.

Run `python -m otel_netreceiver.probes.tcp --seconds N` to print what it sees.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import operator
import struct
import time
from dataclasses import dataclass

from ..flows.model import (Direction, FailureReason, Family, FlowKey, Histogram, Snapshot,
                           TcpStats, Transport, Workload)
from ..flows.table import FlowTable, add_failed
from . import abi, libbpf, netns
from .loader import Loader, ProbeError, object_path

log = logging.getLogger(__name__)

DEFAULT_DURATION_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
                           120.0, 300.0)
DEFAULT_RTT_BOUNDS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                      1.0)
_FAILURES = {abi.Failure.REFUSED: FailureReason.REFUSED, abi.Failure.TIMEOUT: FailureReason.TIMEOUT,
             abi.Failure.RESET: FailureReason.RESET,
             abi.Failure.UNREACHABLE: FailureReason.UNREACHABLE,
             abi.Failure.OTHER: FailureReason.OTHER}


@dataclass
class TcpSettings:
    """Map sizes (entries), histogram bounds (seconds) and where the object is."""

    sockets_max: int = 65536       # live connections tracked at once
    flows_max: int = 16384         # distinct flow keys per interval (each of two maps)
    listeners_max: int = 4096
    duration_bounds: tuple[float, ...] = DEFAULT_DURATION_BOUNDS
    rtt_bounds: tuple[float, ...] = DEFAULT_RTT_BOUNDS
    idle_intervals: int = 10       # forget a key after this many idle intervals
    object_path: str | None = None

    def __post_init__(self):
        self.duration_bounds = tuple(float(b) for b in self.duration_bounds)
        self.rtt_bounds = tuple(float(b) for b in self.rtt_bounds)


# struct nr_flow_key: identity (cgroup id, tgid, comm), peer, local, server port,
# direction, transport, family; tests/unit/test_abi.py checks it against the mirror.
FLOW_KEY = struct.Struct(f"<QI{abi.COMM_LEN}s4x{abi.ADDR_LEN}s{abi.ADDR_LEN}sHBBB3x")
_IDENTITY_SIZE = ctypes.sizeof(abi.Identity)


def decode_key(raw: abi.FlowKey | bytes, workloads: dict[bytes, Workload] | None = None) -> FlowKey:
    """The kernel's struct nr_flow_key (the mirror or its bytes) as a model FlowKey.

    With `workloads` (identity bytes -> Workload), keys of one workload share one
    Workload object, so lookups by workload downstream stop at the identity test.
    """
    data = bytes(raw)
    cgroup_id, tgid, comm, peer, local, port, direction, transport, family = FLOW_KEY.unpack(data)
    identity = data[:_IDENTITY_SIZE]
    workload = workloads.get(identity) if workloads is not None else None
    if workload is None:
        workload = Workload(cgroup_id, tgid, abi.comm_text(comm))
        if workloads is not None:
            workloads[identity] = workload
    incoming = direction == abi.Direction.INCOMING
    return FlowKey(
        workload=workload,
        transport=Transport.TCP if transport == abi.Transport.TCP else Transport.UDP,
        family=Family.IPV4 if family == abi.Family.IPV4 else Family.IPV6,
        direction=Direction.INCOMING if incoming else Direction.OUTGOING,
        peer_address=abi.address_text(peer, family),
        server_port=port,
        local_address=abi.address_text(local, family) if incoming else "",
    )


# struct nr_flow_stats in one unpack (reading ctypes fields one by one costs ~20 µs a
# key): every field is 8 bytes; tests/unit/test_abi.py checks the size against the mirror.
_HIST_WORDS = abi.HIST_BUCKETS + 2
FLOW_STATS = struct.Struct(f"<QQq{abi.FAIL_MAX}Q5q2Q{_HIST_WORDS}Q{_HIST_WORDS}Q")
_REASONS = [_FAILURES[abi.Failure(i)] for i in range(abi.FAIL_MAX)]
_FAIL_END = 3 + abi.FAIL_MAX
_DURATION = _FAIL_END + 7          # first word of the duration histogram
_RTT = _DURATION + _HIST_WORDS     # first word of the rtt histogram
_NO_FAILURES_WORDS = (0,) * abi.FAIL_MAX
# the `failed` of every decoded delta without failures: shared, so never to be changed
# (add_tcp and add_words copy it before adding; stats are never changed once made)
_NO_FAILURES = dict.fromkeys(_REASONS, 0)


def decode_stats(raw: abi.FlowStats, settings: TcpSettings) -> TcpStats:
    """The kernel's struct nr_flow_stats (one interval's deltas) as TcpStats; a histogram
    without samples in the interval is None."""
    return stats_from_words(FLOW_STATS.unpack(bytes(raw)), settings.duration_bounds,
                            settings.rtt_bounds)


def stats_from_words(v: tuple[int, ...], duration_bounds: tuple[float, ...],
                     rtt_bounds: tuple[float, ...]) -> TcpStats:
    """decode_stats from the FLOW_STATS words of one entry."""
    failed = v[3:_FAIL_END]
    return TcpStats(
        v[0], v[1], v[2],
        _NO_FAILURES if failed == _NO_FAILURES_WORDS else dict(zip(_REASONS, failed)),
        v[_FAIL_END], v[_FAIL_END + 1], v[_FAIL_END + 2], v[_FAIL_END + 3], v[_FAIL_END + 4],
        v[_FAIL_END + 5], v[_FAIL_END + 6],
        _histogram(v, _DURATION, duration_bounds) if v[_RTT - 1] else None,
        _histogram(v, _RTT, rtt_bounds) if v[_RTT + _HIST_WORDS - 1] else None)


def _histogram(v: tuple[int, ...], first: int, bounds: tuple[float, ...]) -> Histogram:
    """The kernel histogram (ns) whose words start at v[first], in seconds; buckets past
    len(bounds) fold into the overflow bucket."""
    edge, end = first + len(bounds), first + abi.HIST_BUCKETS
    counts = list(v[first:edge])
    counts.append(sum(v[edge:end]))
    return Histogram(bounds, counts, v[end] / 1e9, v[end + 1])


def add_words(bounds: tuple[tuple[float, ...], tuple[float, ...]], total: TcpStats,
              v: tuple[int, ...]) -> TcpStats:
    """`total` plus one entry's FLOW_STATS words, given (duration, rtt) bounds: equal to
    add_tcp(total, stats_from_words(v, *bounds)) without making the delta's TcpStats.

    Like add_tcp it changes nothing and shares what the words leave as it was.
    """
    failed, f = v[3:_FAIL_END], _FAIL_END
    return TcpStats(
        total.opened + v[0], total.closed + v[1], total.active + v[2],
        total.failed if failed == _NO_FAILURES_WORDS else add_failed(total.failed, zip(_REASONS, failed)),
        total.bytes_sent + v[f], total.bytes_received + v[f + 1], total.packets_sent + v[f + 2],
        total.packets_received + v[f + 3], total.retransmits + v[f + 4],
        total.resets_sent + v[f + 5], total.resets_received + v[f + 6],
        _add_histogram(total.duration, v, _DURATION, bounds[0]) if v[_RTT - 1]
        else total.duration,
        _add_histogram(total.rtt, v, _RTT, bounds[1]) if v[_RTT + _HIST_WORDS - 1]
        else total.rtt)


def _add_histogram(total: Histogram | None, v: tuple[int, ...], first: int,
                   bounds: tuple[float, ...]) -> Histogram:
    """`total` plus the kernel histogram whose words start at v[first] (see _histogram)."""
    if total is None:
        return _histogram(v, first, bounds)
    if total.bounds is not bounds and total.bounds != bounds:
        raise ValueError("cannot add histograms with different bounds")
    edge, end = first + len(bounds), first + abi.HIST_BUCKETS
    counts = list(map(operator.add, total.counts, v[first:edge]))
    counts.append(total.counts[-1] + sum(v[edge:end]))
    return Histogram(total.bounds, counts, total.sum + v[end] / 1e9, total.count + v[end + 1])


class TcpCollector:
    """The TCP collector (implements probes.Collector)."""

    def __init__(self, settings: TcpSettings | None = None, list_netns=netns.list_netns,
                 clock=time.time_ns):
        self.settings = settings or TcpSettings()
        self.list_netns = list_netns
        self.clock = clock
        self.table = FlowTable(self.settings.idle_intervals)
        self._keys: dict[bytes, FlowKey] = {}  # kernel key bytes -> decoded key
        self._workloads: dict[bytes, Workload] = {}  # kernel identity bytes -> Workload
        self._loader: Loader | None = None
        self._seen_netns: set[tuple[int, int]] = set()  # (st_dev, st_ino) adopted from
        self._inner: list[libbpf.BpfMap] = []
        self._slot = 0
        self.drained_last = 0
        self._ncpus = libbpf.possible_cpus()
        self._add_words = functools.partial(add_words, (self.settings.duration_bounds,
                                                        self.settings.rtt_bounds))

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> "TcpCollector":
        path = object_path("tcp", self.settings.object_path)
        self._loader = Loader(path, self._configure)
        loaded = self._loader.__enter__()
        try:
            self._inner = [loaded.map("flows_a"), loaded.map("flows_b")]
            self._outer_fd = loaded.map("flows").fd
            self._flush_link = loaded.links["sockets_flush"]
            self._pass_fd = loaded.map(".data.pass").fd
            self._adopt_link = loaded.links["tcp_adopt"]
            self._hook_fds = [prog.fd for prog in loaded.obj.programs()
                              if prog.section.startswith("tp_btf/")]
            self._set_slot(0)
            self.flush_live()  # adopt connections that exist already
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._loader is not None:
            self._loader.__exit__(*exc)
            self._loader = None

    def _configure(self, obj: libbpf.BpfObject) -> None:
        s = self.settings
        settings = abi.make_settings(s.duration_bounds, s.rtt_bounds)
        obj.set_global("settings", bytes(settings))
        for name, size in (("sockets", s.sockets_max), ("listeners", s.listeners_max),
                           ("flows_a", s.flows_max), ("flows_b", s.flows_max)):
            obj.map(name).set_max_entries(size)

    # --- per interval -----------------------------------------------------------------

    def collect(self, snapshot: Snapshot) -> None:
        """Flush live connections, swap and drain the aggregates, fill the snapshot."""
        self.flush_live()
        deltas = self.drain()
        self.table.apply(deltas, self.clock(), self._add_words)
        self.table.fill(snapshot)
        snapshot.losses.update(self.losses())
        snapshot.gauges.update(self.gauges())

    def flush_live(self) -> None:
        """Flush every tracked connection, then adopt in namespaces seen for the first time.

        The flush is one pass over the `sockets` entries, whatever the number of network
        namespaces. `iter/tcp` walks the whole established hash (shared by all namespaces
        unless net.ipv4.tcp_child_ehash_entries gives them their own), ~5-10 ms with
        262,144 buckets, so it runs once per namespace: a namespace made after we started
        has no connection its tracepoints did not see. Flush first: an adopted connection
        gets a whole interval before its first pass (its grace to be claimed).
        """
        self._pass_running(True)
        try:
            libbpf.run_iterator(self._flush_link)
        finally:
            self._pass_running(False)
        self._adopt_new_namespaces()

    def _pass_running(self, running: bool) -> None:
        """Tell the programs a pass runs (bpf/tcp.bpf.c `pass_running`): while it does,
        close and destroy take the entry locks the pass takes. Before the pass starts,
        an RCU grace period (the map-in-map update does one) lets every program that may
        not have seen the flag finish."""
        libbpf.update(self._pass_fd, ctypes.c_uint32(0), ctypes.c_uint32(int(running)))
        if running:
            self._set_slot(self._slot)  # same map: only for the grace period

    def _adopt_new_namespaces(self) -> None:
        """Run the `iter/tcp` pass in each namespace not seen before (ours included).

        Namespaces are known by (st_dev, st_ino); one that is gone is forgotten, so the
        set stays as large as the live namespaces. An inode number reused by a later
        namespace is harmless: that namespace was made after us.
        """
        own, current = netns.current_netns(), dict(self.list_netns())
        current.setdefault(own, None)
        failed = {key for key, path in current.items()
                  if key not in self._seen_netns and not self._adopt_in(path, key == own)}
        self._seen_netns = set(current) - failed

    def _adopt_in(self, path: str | None, own: bool) -> bool:
        """Adopt in one namespace; False when the iterator failed there (tried again at
        the next interval: a namespace is walked only once, so a failure is not "gone")."""
        if own:
            libbpf.run_iterator(self._adopt_link)
            return True
        try:
            with netns.inside(path):
                if netns.tcp_sockets_in_use():
                    return self._adopt_here(path)
        except OSError as err:  # namespace gone meanwhile: nothing left to adopt
            log.debug("skipping network namespace %s: %s", path, err)
        return True

    def _adopt_here(self, path: str) -> bool:
        try:
            libbpf.run_iterator(self._adopt_link)
        except OSError as err:
            log.warning("adopting connections in network namespace %s failed, will retry: %s",
                        path, err)
            return False
        return True

    def drain(self) -> dict[FlowKey, tuple[int, ...]]:
        """Swap the aggregate map the programs write, then read and empty the old one.

        The deltas stay the kernel's FLOW_STATS words (stats_from_words decodes them,
        add_words adds them to a total): no TcpStats is made for a delta.
        """
        old = self._inner[self._slot]
        self._set_slot(1 - self._slot)
        size = FLOW_KEY.size
        keys, values = libbpf.read_batch_bytes(old.fd, size, FLOW_STATS.size, old.max_entries,
                                               delete=True)
        self.drained_last = len(keys) // size
        decode, deltas = self._decode_key, {}
        for start, words in zip(range(0, len(keys), size), FLOW_STATS.iter_unpack(values)):
            key = decode(keys[start:start + size])
            known = deltas.setdefault(key, words)
            if known is not words:  # distinct kernel keys can decode alike (e.g. comm bytes)
                deltas[key] = tuple(map(operator.add, known, words))
        return deltas

    def _decode_key(self, data: bytes) -> FlowKey:
        """decode_key of a struct nr_flow_key's bytes, remembered by them: active keys
        come back every interval."""
        key = self._keys.get(data)
        if key is None:
            if len(self._keys) >= 2 * self.settings.flows_max:
                self._keys.clear()
                self._workloads.clear()
            key = self._keys[data] = decode_key(data, self._workloads)
        return key

    def _set_slot(self, slot: int) -> None:
        # update of a map-in-map waits for an RCU grace period before returning
        libbpf.update(self._outer_fd, ctypes.c_uint32(0), ctypes.c_uint32(self._inner[slot].fd))
        self._slot = slot

    def losses(self) -> dict[str, int]:
        """Cumulative losses by reason (`tcp.sockets_full`, `tcp.flows_full` ...), and
        `tcp.events_missed`: tracepoint hits the kernel did not run our program for (it
        was running on that CPU already), on any socket of the host. Each costs one
        connection at most: a skipped connect is adopted (not opened; its cgroup alone as
        workload), a skipped accepted child is neither opened nor closed, a skipped
        SYN_SENT -> ESTABLISHED counts it failed; a skipped CLOSE or destroy costs
        nothing, the other one counts the end (bpf/tcp.bpf.c destroy_skipped())."""
        values = self._percpu_sums("losses", ctypes.c_uint64, abi.LOSS_MAX)
        losses = {f"tcp.{loss.name.lower()}": values[loss] for loss in abi.Loss
                  if loss != abi.Loss.RINGBUF_FULL}
        losses["tcp.events_missed"] = sum(map(libbpf.recursion_misses, self._hook_fds))
        return losses

    def gauges(self) -> dict[str, float]:
        values = self._percpu_sums("gauges", ctypes.c_int64, abi.GAUGE_MAX)
        return {
            "tcp.sockets.tracked": float(values[abi.Gauge.SOCKETS]),
            "tcp.sockets.replaced": float(values[abi.Gauge.SOCKETS_REPLACED]),
            "tcp.sockets.capacity": float(self.settings.sockets_max),
            "tcp.flows.drained": float(self.drained_last),
            "tcp.flows.capacity": float(self.settings.flows_max),
            "tcp.flows.tracked": float(len(self.table)),
        }

    def _percpu_sums(self, name: str, ctype, count: int) -> list[int]:
        fd = self._loader.loaded.map(name).fd
        rows = libbpf.read_array(fd, ctype * self._ncpus, count)
        return [sum(row) for row in rows]


def main(argv: list[str] | None = None) -> int:
    """Debug entry point: load, wait, print the snapshot."""
    import argparse
    import pprint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--object", help="path of tcp.bpf.o (default: the package's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        with TcpCollector(TcpSettings(object_path=args.object)) as collector:
            time.sleep(args.seconds)
            snapshot = Snapshot(time_ns=time.time_ns())
            collector.collect(snapshot)
    except (ProbeError, OSError) as err:
        print(f"error: {err}")
        return 1
    pprint.pprint(snapshot, width=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
