"""Completeness under load: connections the TCP collector reports vs connections made.

ab makes exactly N one-request connections at full speed (concurrency 32) from the client
host to nginx on the server host while the agent's TcpCollector runs in this process.
Ground truth is ab's own count; the collector must report N opened on the client side
(outgoing) and N on the server side (incoming), and no loss.
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


def run(args) -> int:
    from otel_netreceiver.probes.tcp import TcpCollector

    count = 20_000 if args.quick else args.connections
    with servers.hosts() as pair, servers.nginx(pair.server) as url, TcpCollector() as collector:
        collector.collect(Snapshot(time.time_ns()))
        start = time.monotonic()
        made = int(workloads.ab_count(pair.client, url, count, 32))
        wall = time.monotonic() - start
        snap = Snapshot(time.time_ns())
        cpu = time.process_time()
        collector.collect(snap)
        collect_ms = 1000 * (time.process_time() - cpu)
    seen = opened(snap, pair.server.address, 80)
    print(render(made, wall, seen, snap, collect_ms))
    return 0 if seen["outgoing"] == seen["incoming"] == made else 1


def render(made: int, wall: float, seen: dict[str, int], snap: Snapshot, collect_ms: float) -> str:
    losses = {k: v for k, v in snap.losses.items() if v} or "none"
    return "\n".join([
        f"### completeness at {made / wall:,.0f} connections/s (ab -c 32, {made:,} connections)", "",
        "| made (ab) | reported outgoing (client) | reported incoming (server) | losses | "
        "collect() CPU ms |",
        "|---|---|---|---|---|",
        f"| {made:,} | {seen['outgoing']:,} | {seen['incoming']:,} | {losses} | {collect_ms:.1f} |",
        "", f"gauges: {snap.gauges}"])
