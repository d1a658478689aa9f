"""UDP flows: payload bytes and datagrams per workload, peer, server port and direction.

`UdpCollector` runs the UDP part of bpf/skb.bpf.c (cgroup_skb programs on the cgroup v2
root, shared with the DNS collector through an `SkbProbe`). The kernel adds into one of two inner hashes; each interval `collect` swaps the slot to the
other (the map-in-map update waits for an RCU grace period, so no program still writes
the old one when it returns), drains the old with a batch lookup-and-delete, and adds
the deltas into cumulative series.

Debug entry: `python -m otel_netreceiver.probes.udp --seconds N` prints the flows.
"""

from __future__ import annotations

import argparse
import logging
import time
from ctypes import c_uint32
from dataclasses import dataclass, field

from ..flows.model import Direction, FlowKey, Series, Snapshot, Transport, UdpStats
from . import abi, libbpf
from .cgroup_skb import (LOSS_FLOWS_FULL, LOSS_OWNERS_FULL, FAMILIES, SkbProbe, SkbSettings,
                         address_text, read_losses, workload)

log = logging.getLogger(__name__)

LOSS_NAMES = {LOSS_FLOWS_FULL: "udp.flows_full", LOSS_OWNERS_FULL: "udp.owners_full"}
INNER_MAPS = ("udp_flows_a", "udp_flows_b")


@dataclass(frozen=True)
class UdpSettings:
    max_flows: int = 16384  # entries of each inner hash (distinct aggregates per interval)
    idle_intervals: int = 10  # drop a series after this many intervals without traffic
    skb: SkbSettings = field(default_factory=SkbSettings)
    object_path: str | None = None


def flow_key(raw: abi.FlowKey) -> FlowKey:
    """The model's key for a kernel key; the local address only for incoming flows."""
    family = FAMILIES[raw.family]
    incoming = raw.direction == 1
    return FlowKey(
        workload=workload(raw.id),
        transport=Transport.UDP,
        family=family,
        direction=Direction.INCOMING if incoming else Direction.OUTGOING,
        peer_address=address_text(raw.peer, raw.family),
        server_port=raw.server_port,
        local_address=address_text(raw.local, raw.family) if incoming else "",
    )


def add(stats: UdpStats, delta: abi.UdpStats) -> None:
    stats.bytes_sent += delta.bytes_tx
    stats.bytes_received += delta.bytes_rx
    stats.packets_sent += delta.packets_tx
    stats.packets_received += delta.packets_rx


class UdpCollector:
    """Collector of UDP flows (see the module docstring)."""

    def __init__(self, settings: UdpSettings | None = None, wall_clock=time.time_ns,
                 probe: SkbProbe | None = None) -> None:
        self.settings = settings or UdpSettings()
        self.probe = probe or SkbProbe(self.settings.skb, self.settings.object_path)
        self.probe.use("udp", self._configure)
        self._wall_clock = wall_clock
        self._series: dict[FlowKey, Series] = {}
        self._idle: dict[FlowKey, int] = {}  # intervals since the key last changed
        self._loaded = None
        self._active = 0  # index into INNER_MAPS of the map the kernel writes

    def __enter__(self) -> "UdpCollector":
        self._loaded = self.probe.__enter__()
        self._active = 0
        return self

    def __exit__(self, *exc) -> None:
        if self._loaded is not None:
            self._loaded = None
            self.probe.__exit__(None, None, None)

    def _configure(self, obj: libbpf.BpfObject) -> None:
        for name in INNER_MAPS:
            obj.map(name).set_max_entries(self.settings.max_flows)

    def collect(self, snapshot: Snapshot) -> None:
        """Swap, drain the old inner map, and add every cumulative series to the snapshot.

        A series unchanged for `idle_intervals` is dropped after this report (a new one
        starts, with a new start time, if the flow comes back): memory follows live flows.
        """
        for raw_key, delta in self._drain(self._swap()):
            key = flow_key(raw_key)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = Series(self._wall_clock(), UdpStats())
            add(series.stats, delta)
            self._idle[key] = -1
        self._fill(snapshot)
        self._age()
        snapshot.losses.update(read_losses(self._loaded, LOSS_NAMES))
        snapshot.gauges["udp.flows"] = len(self._series)

    def _fill(self, snapshot: Snapshot) -> None:
        for key, series in self._series.items():
            stats = series.stats
            snapshot.udp[key] = Series(series.start_ns, UdpStats(
                stats.bytes_sent, stats.bytes_received, stats.packets_sent,
                stats.packets_received))

    def _age(self) -> None:
        """One more quiet interval for every key; forget keys quiet for idle_intervals."""
        for key in list(self._idle):
            self._idle[key] += 1
            if self._idle[key] >= self.settings.idle_intervals:
                del self._idle[key], self._series[key]

    def _swap(self) -> str:
        """Point the kernel at the other inner map; return the name of the old one."""
        old, new = INNER_MAPS[self._active], INNER_MAPS[1 - self._active]
        libbpf.update(self._loaded.map("udp_flows").fd, c_uint32(0),
                      c_uint32(self._loaded.map(new).fd))
        self._active = 1 - self._active
        return old

    def _drain(self, name: str):
        return libbpf.read_batch(self._loaded.map(name).fd, abi.FlowKey, abi.UdpStats,
                                 self.settings.max_flows, delete=True)


def main(argv: list[str] | None = None) -> None:
    """Print the UDP flows seen during --seconds (a debugging aid)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    with UdpCollector() as collector:
        time.sleep(args.seconds)
        snapshot = Snapshot(time.time_ns())
        collector.collect(snapshot)
    for key, series in sorted(snapshot.udp.items(), key=lambda item: str(item[0])):
        print(key, series.stats)
    print("losses", snapshot.losses)


if __name__ == "__main__":
    main()
