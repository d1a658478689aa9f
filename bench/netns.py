"""The TCP collector's per-interval cost with N network namespaces holding connections.

For each N a fresh process makes N namespaces (`ip netns add`, loopback up) and, inside
each, a listener and K connections over loopback, held open by that process (sockets
keep the namespace they were made in). A `TcpCollector` with default settings then runs
a few intervals: before each, every connection sends one byte (and the peer reads it),
so every interval has live deltas to flush; the collect thread's CPU time of
`collect()`, and of its `flush_live()` part, is taken per interval. The median over the
intervals after the first is printed per N, with how it grows with N.

    python -m bench netns --namespaces 1,10,50 --per-namespace 4 --intervals 6
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import statistics
import subprocess
import sys
import time

from bench import runner

NAMESPACES = (1, 10, 50)
PREFIX = "nrwb"          # namespace names (this benchmark's own prefix)
MAX_NAMESPACES = 200     # bounded: each one is a netns with sockets


def _sh(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


@contextlib.contextmanager
def namespaces(count: int):
    """`count` named network namespaces with loopback up; deleted on exit."""
    if not 0 < count <= MAX_NAMESPACES:
        raise ValueError(f"namespaces: 1..{MAX_NAMESPACES}, got {count}")
    tag, names = f"{PREFIX}{secrets.token_hex(2)}", []
    try:
        for i in range(count):
            names.append(f"{tag}-{i}")
            _sh("ip", "netns", "add", names[-1])
            _sh("ip", "-n", names[-1], "link", "set", "lo", "up")
        yield [f"/run/netns/{name}" for name in names]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def connect_inside(path: str, count: int) -> list[tuple[socket.socket, socket.socket]]:
    """`count` loopback connections (client, accepted) made inside the namespace at `path`."""
    from otel_netreceiver.probes import netns

    with netns.inside(path):
        listener = socket.create_server(("127.0.0.1", 0))
        pairs = []
        with listener:
            for _ in range(count):
                client = socket.create_connection(listener.getsockname(), timeout=10)
                server, _ = listener.accept()
                pairs.append((client, server))
    return pairs


def poke(pairs) -> None:
    """One byte each way on every connection, read by the peer: every socket has moved."""
    for client, server in pairs:
        client.sendall(b"x")
        server.sendall(b"y")
    for client, server in pairs:
        server.recv(1)
        client.recv(1)


def measure(count: int, per_namespace: int, intervals: int) -> dict:
    """Thread CPU ms of collect() and of its flush_live() per interval, with `count`
    namespaces of `per_namespace` connections each."""
    from otel_netreceiver.flows.model import Snapshot
    from otel_netreceiver.probes.tcp import TcpCollector

    with namespaces(count) as paths, contextlib.ExitStack() as held:
        pairs = [pair for path in paths for pair in connect_inside(path, per_namespace)]
        for pair in pairs:
            for sock in pair:
                held.callback(sock.close)
        with TcpCollector() as collector:
            flush_ms, inner = [], collector.flush_live

            def timed_flush():
                started = time.thread_time()
                inner()
                flush_ms.append(1000 * (time.thread_time() - started))

            collector.flush_live = timed_flush
            collect_ms = []
            for _ in range(intervals):
                poke(pairs)
                started = time.thread_time()
                collector.collect(Snapshot(time_ns=time.time_ns()))
                collect_ms.append(1000 * (time.thread_time() - started))
            losses = sum(collector.losses().values())
    return {"namespaces": count, "connections": len(pairs), "collect_ms": collect_ms[1:],
            "flush_ms": flush_ms[1:], "losses": losses}


def run(args) -> int:
    """Each N in its own process; one table."""
    rows = runner.each_in_own_process("netns", args.namespaces,
                                      [str(args.per_namespace), str(args.intervals)], timeout=600)
    print(render(rows))
    return 0


def render(rows: list[dict]) -> str:
    lines = ["### TCP collector: thread CPU per interval with N network namespaces "
             "(median [min–max] of the intervals after the first)", "",
             "| namespaces | connections | collect() ms | of which flush_live() ms | "
             "flush ms per namespace | growth vs previous N | losses |",
             "|---|---|---|---|---|---|---|"]
    previous = None
    for row in rows:
        collect, flush = statistics.median(row["collect_ms"]), statistics.median(row["flush_ms"])
        growth = (f"×{collect / previous[0]:.1f} for ×{row['namespaces'] / previous[1]:.0f} N"
                  if previous else "-")
        lines.append(f"| {row['namespaces']} | {row['connections']} | {collect:.1f} "
                     f"[{min(row['collect_ms']):.1f}–{max(row['collect_ms']):.1f}] | {flush:.1f} | "
                     f"{flush / row['namespaces']:.2f} | {growth} | {row['losses']} |")
        previous = collect, row["namespaces"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
