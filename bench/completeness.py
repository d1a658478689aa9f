"""Completeness under load: connections the TCP collector reports vs connections made.

ab makes N one-request connections at full speed (concurrency 32) from the client host
to nginx on the server host while the agent's TcpCollector runs in this process. Ground
truth is nginx's own count of accepted connections (stub_status; ab opens a few more
connections than it sends requests). The collector must report exactly that many opened
on the client side (outgoing) and on the server side (incoming), with no loss.
"""

from __future__ import annotations

import time

from bench import servers, workloads
from otel_netreceiver.flows.model import Direction, Snapshot


def opened(snapshot: Snapshot, address: str, port: int) -> dict[str, int]:
    """Connections opened towards address:port, per direction, from a cumulative Snapshot."""
    out = {"outgoing": 0, "incoming": 0}
    for key, series in snapshot.tcp.items():
        if key.server_port != port:
            continue
        if key.direction is Direction.OUTGOING and key.peer_address == address:
            out["outgoing"] += series.stats.opened
        elif key.direction is Direction.INCOMING and key.local_address == address:
            out["incoming"] += series.stats.opened
    return out


def collect(collector) -> tuple[Snapshot, float]:
    """One collection, and the CPU ms it took in this process."""
    snap, cpu = Snapshot(time.time_ns()), time.process_time()
    collector.collect(snap)
    return snap, 1000 * (time.process_time() - cpu)


def run(args) -> int:
    from otel_netreceiver.probes.tcp import TcpCollector

    count = 20_000 if args.quick else args.connections
    with servers.hosts() as pair, servers.nginx(pair.server) as web, \
            TcpCollector() as collector:
        url = web.url
        accepts_before = servers.nginx_accepts(pair.client, url)
        before, _ = collect(collector)
        start = time.monotonic()
        requests = int(workloads.ab_count(pair.client, url, count, 32))
        wall = time.monotonic() - start
        made = servers.nginx_accepts(pair.client, url) - accepts_before
        after, collect_ms = collect(collector)
    first, last = opened(before, pair.server.address, 80), opened(after, pair.server.address, 80)
    seen = {k: last[k] - first[k] for k in last}
    print(render(requests, made, wall, seen, after, collect_ms))
    return 0 if seen["outgoing"] == seen["incoming"] == made else 1


def render(requests: int, made: int, wall: float, seen: dict[str, int], snap: Snapshot,
           collect_ms: float) -> str:
    losses = ", ".join(f"{k}={v}" for k, v in snap.losses.items() if v) or "none"
    return "\n".join([
        f"### completeness at {made / wall:,.0f} connections/s "
        f"(ab -c 32 -n {requests:,}, {wall:.1f} s)", "",
        "| made (nginx accepts) | reported outgoing (client) | reported incoming (server) "
        "| losses | collect() CPU ms |",
        "|---|---|---|---|---|",
        f"| {made:,} | {seen['outgoing']:,} | {seen['incoming']:,} | {losses} | {collect_ms:.1f} |",
        "", "gauges: " + ", ".join(f"{k}={v:g}" for k, v in snap.gauges.items())])
