"""A fake Collector: produces Snapshots with known cumulative values, no kernel needed.

It follows the Collector protocol of otel_netreceiver/probes (a `with` block, then
`collect(snapshot)` once per interval); each call advances every counter by one step, so
tests know exactly what the agent should export.
"""

from __future__ import annotations

from otel_netreceiver.flows.model import (
    DnsKey,
    DnsStats,
    Direction,
    FailureReason,
    Family,
    FlowKey,
    Histogram,
    Series,
    Snapshot,
    TcpStats,
    Transport,
    UdpStats,
    Workload,
)

CURL = Workload(cgroup_id=1, pid=100, comm="curl")
NGINX = Workload(cgroup_id=2, pid=200, comm="nginx")
OUT = FlowKey(CURL, Transport.TCP, Family.IPV4, Direction.OUTGOING, "198.18.20.2", 80)
IN = FlowKey(NGINX, Transport.TCP, Family.IPV4, Direction.INCOMING, "198.18.20.1", 80, "198.18.20.2")
UDP = FlowKey(CURL, Transport.UDP, Family.IPV4, Direction.OUTGOING, "198.18.20.2", 53)
DNS = DnsKey(CURL, "example.test", "198.18.20.2", "nxdomain")
START_NS = 1_000_000_000
DURATION_BOUNDS = (0.001, 0.01, 0.1, 1.0)


def tcp_stats(step: int) -> TcpStats:
    """Cumulative TCP stats after `step` collections."""
    duration = Histogram(DURATION_BOUNDS, [step, 0, step, 0, 0], sum=0.0505 * step, count=2 * step)
    return TcpStats(opened=2 * step, closed=2 * step, active=1,
                    failed={FailureReason.REFUSED: step}, bytes_sent=100 * step,
                    bytes_received=1000 * step, packets_sent=3 * step, packets_received=4 * step,
                    retransmits=step, resets_sent=0, resets_received=step, duration=duration)


class FakeCollector:
    """Adds one TCP flow each way, a UDP flow, a DNS series, a loss and a gauge per call."""

    def __init__(self) -> None:
        self.step = 0
        self.entered = self.exited = False

    def __enter__(self):
        self.entered = True
        return self

    def __exit__(self, *exc) -> None:
        self.exited = True

    def collect(self, snapshot: Snapshot) -> None:
        self.step += 1
        step = self.step
        snapshot.tcp[OUT] = Series(START_NS, tcp_stats(step))
        snapshot.tcp[IN] = Series(START_NS, tcp_stats(step))
        snapshot.udp[UDP] = Series(START_NS, UdpStats(10 * step, 20 * step, step, 2 * step))
        dns_hist = Histogram((0.001, 0.01), [step, 0, 0], sum=0.0005 * step, count=step)
        snapshot.dns[DNS] = Series(START_NS, DnsStats(duration=dns_hist, timeouts=step))
        snapshot.losses["ringbuf_full"] = step
        snapshot.gauges["tcp.sockets.tracked"] = 16.0
        snapshot.gauges["tcp.sockets.capacity"] = 64.0
