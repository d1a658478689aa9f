"""Throughput benchmarks between namespace hosts: churn (ab), keep-alive (wrk), bulk (iperf3), DNS (dnsperf)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from bench import servers, workloads
from bench.runner import Table, interleave


def churn(args, monitors) -> list[Table]:
    """nginx + ab without keep-alive at each concurrency: requests/s and monitor cost."""
    with servers.hosts() as pair, servers.nginx(pair.server) as url:
        return [interleave(f"churn ab -c {c} ({args.seconds:g} s)", monitors,
                           functools.partial(workloads.ab, pair.client, url, c, args.seconds),
                           args.rounds)
                for c in args.concurrency]


def keepalive(args, monitors) -> list[Table]:
    """nginx + wrk, 32 keep-alive connections."""
    with servers.hosts() as pair, servers.nginx(pair.server) as url:
        work = functools.partial(workloads.wrk, pair.client, url, 32, args.seconds)
        return [interleave(f"keep-alive wrk -c 32 ({args.seconds:g} s)", monitors, work, args.rounds)]


def bulk(args, monitors) -> list[Table]:
    """iperf3, one TCP stream between the namespace hosts."""
    with servers.hosts() as pair, servers.iperf3(pair.server) as address:
        work = functools.partial(workloads.iperf3, pair.client, address, args.seconds)
        return [interleave(f"bulk iperf3 ({args.seconds:g} s)", monitors, work, args.rounds)]


def dns(args, monitors) -> list[Table]:
    """dnsperf at full rate against dnsmasq answering one local name."""
    with tempfile.TemporaryDirectory(prefix="nre-dns-") as tmp, servers.hosts() as pair, \
            servers.dnsmasq(pair.server) as address:
        queries = Path(tmp) / "queries"
        queries.write_text("bench.test A\n")
        work = functools.partial(workloads.dnsperf, pair.client, address, str(queries), args.seconds)
        return [interleave(f"dns dnsperf ({args.seconds:g} s)", monitors, work, args.rounds)]
