"""Throughput benchmarks between namespace hosts: churn (ab), keep-alive (wrk), bulk (iperf3), DNS (dnsperf)."""

from __future__ import annotations

import functools
import resource
import tempfile
from pathlib import Path

from bench import procstat, servers, workloads
from bench.runner import Table, interleave


def churn(args, monitors) -> list[Table]:
    """nginx + ab without keep-alive at each concurrency: requests/s, app CPU, monitor cost."""
    with servers.hosts() as pair, servers.nginx(pair.server) as web:
        return [interleave(f"churn ab -c {c} ({args.seconds:g} s)", monitors,
                           app_cpu(functools.partial(workloads.ab, pair.client, web.url, c,
                                                     args.seconds), web.pid),
                           args.rounds)
                for c in args.concurrency]


def app_cpu(work, server_pid: int):
    """Add the CPU that ab and nginx spent per connection (µs), kernel work included.

    CPU time per connection moves much less than requests/s when other load shares the
    machine, so it shows the watcher's overhead more steadily: BPF programs run in the
    context of the process that hit the tracepoint, so their time lands here.
    """
    def measured() -> dict[str, float]:
        children, server = resource.getrusage(resource.RUSAGE_CHILDREN), procstat.tree_cpu(server_pid)
        values = work()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
                 + procstat.tree_cpu(server_pid) - server)
        return {**values, "app_µs/conn": 1e6 * spent / max(values["connections"], 1)}
    return measured


def keepalive(args, monitors) -> list[Table]:
    """nginx + wrk, 32 keep-alive connections."""
    with servers.hosts() as pair, servers.nginx(pair.server) as web:
        work = functools.partial(workloads.wrk, pair.client, web.url, 32, args.seconds)
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
