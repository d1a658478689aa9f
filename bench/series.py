"""Agent cost per interval with N flow series: enrichment + metrics build + OTLP export.

Synthetic Snapshots with N distinct FlowKeys (many peers, a few workloads) go through the
agent's own stages: `Enricher.enrich` (built as the agent builds it by default: containers,
local peers, DNS names), `MetricsBuilder.build`, and the OTLP/HTTP exporter sending to the
null sink. Three cases per N: every series changes every interval (`all`);
only every tenth series changes (`10%`: the others are the same Series objects, as
FlowTable hands out unchanged keys); and the same with 1% of the keys replaced by new ones
each interval (the oldest leave), as on a node where peers come and go. Each workload also
has two DNS series (a name it resolves, once answered and once failing) that grow every
interval. Each N and case
runs in a fresh process, so its RSS is its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from bench import procstat, servers, sink
from otel_netreceiver.flows.model import (
    Direction, DnsKey, DnsStats, Family, FlowKey, Histogram, Series, Snapshot, TcpStats, Transport,
    Workload,
)

SIZES = (1_000, 10_000, 100_000)
# case -> (one series in how many changes per interval, one key in how many is replaced by a
# new one each interval (0: none); real nodes see keys come and go: new peers, idle ones)
CASES = {"all": (1, 0), "10%": (10, 0), "10%, 1% keys new": (10, 100)}
DNS_ERRORS = ("", "nxdomain")  # per workload, a DNS series that succeeds and one that fails
WORKLOADS = 20
# A long exporter timeout, so that a slow request at 100k series cannot cut the
# measurement short; the cost measured is CPU, not the timeout.
EXPORT_TIMEOUT_S = 900.0


def flow_keys(n: int, first: int = 0) -> list[FlowKey]:
    """N distinct keys (the first-th on): peers 10.x.y.z on a handful of server ports, 20
    local workloads."""
    # pids above the kernel's largest pid_max: no process of this host is looked up
    workloads = [Workload(0, (1 << 22) + 1 + w, f"svc{w}") for w in range(WORKLOADS)]
    return [FlowKey(workloads[i % WORKLOADS], Transport.TCP, Family.IPV4,
                    Direction.OUTGOING if i % 3 else Direction.INCOMING,
                    f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", (80, 443, 5432, 6379)[i % 4],
                    "" if i % 3 else "192.0.2.10")
            for i in range(first, first + n)]


def snapshot(keys: list[FlowKey], step: int, bounds: dict[str, tuple[float, ...]],
             previous: Snapshot | None = None, every: int = 1) -> Snapshot:
    """Cumulative stats that grow with `step`, as successive intervals would show them.

    With `previous`, only one key in `every` gets a new Series; the others keep the very
    Series object of `previous` (unchanged, as FlowTable.fill hands them out).
    """
    snap = Snapshot(time_ns=time.time_ns())
    for i, key in enumerate(keys):
        if previous is not None and i % every != step % every and key in previous.tcp:
            snap.tcp[key] = previous.tcp[key]
        else:
            snap.tcp[key] = Series(start_ns=1, stats=_stats(step, bounds))
    # each workload also resolves names, as nearly every workload that connects does: two
    # DNS series, one of them failing, that grow every interval
    for workload in {key.workload: None for key in keys}:
        for error in DNS_ERRORS:
            snap.dns[DnsKey(workload, "db.bench.test", "192.0.2.53", error)] = Series(
                start_ns=1, stats=DnsStats(_histogram(bounds["dns"], step), step // 10))
    return snap


def _stats(step: int, bounds: dict[str, tuple[float, ...]]) -> TcpStats:
    return TcpStats(opened=step, closed=step, active=1, bytes_sent=1000 * step,
                    bytes_received=5000 * step, packets_sent=10 * step,
                    packets_received=12 * step, retransmits=step // 5,
                    duration=_histogram(bounds["duration"], step), rtt=_histogram(bounds["rtt"], step))


def _histogram(bounds: tuple[float, ...], step: int) -> Histogram:
    hist = Histogram.empty(bounds)
    hist.counts[len(bounds) // 2] = step
    hist.count, hist.sum = step, step * bounds[len(bounds) // 2]
    return hist


def measure(n: int, intervals: int, endpoint: str, case: str = "all") -> dict[str, float]:
    """CPU and wall ms of each interval's enrich + build + export; RSS after."""
    from otel_netreceiver import agent
    from otel_netreceiver.enrich import EnrichConfig, build_enricher
    from otel_netreceiver.enrich.dns_names import DnsNames, DnsPeerResolver
    from otel_netreceiver.config import ExporterConfig
    from otel_netreceiver.export.otlp import OtlpExporter
    from otel_netreceiver.metrics import catalog as catalog_module
    from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder

    catalog = catalog_module.load()
    bounds = {"duration": catalog.metrics["tcp.connection.duration"].bounds,
              "rtt": catalog.metrics["tcp.rtt"].bounds, "dns": catalog.metrics["dns.lookup.duration"].bounds}
    enabled = frozenset(name for name, m in catalog.metrics.items() if m.enabled)
    builder = MetricsBuilder(catalog, BuildSettings(enabled), {"service.name": "bench"}, 1)
    # as the agent builds it by default: containers and local peers, then DNS names
    enricher = build_enricher(EnrichConfig(), {"host.name": "bench", "os.type": "linux"},
                              peers=[DnsPeerResolver(DnsNames())])
    exporter = OtlpExporter(ExporterConfig("otlphttp", "otlphttp", f"{endpoint}/v1/metrics",
                                           timeout_s=EXPORT_TIMEOUT_S))
    keys, (every, replaced) = flow_keys(n), CASES[case]
    cpu, wall, failures = [], [], []
    warnings = _capture_warnings()
    agent.settle_memory()  # as `run` does once its probes are attached
    snap = None
    for step in range(1, intervals + 1):
        if replaced and snap is not None:  # the oldest keys leave, as many new ones come
            gone = max(1, n // replaced)
            keys = keys[gone:] + flow_keys(gone, n + (step - 2) * gone)
        snap = snapshot(keys, step, bounds, snap, every)
        c0, w0 = time.process_time(), time.perf_counter()
        ok = exporter.export(builder.build(enricher.enrich(snap), AgentTelemetry()))
        agent._GARBAGE.after_interval(not ok)  # what Agent.tick does after each interval
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        if not ok:
            failures.append(warnings[-1] if warnings else "export failed")
    return {"series": n, "case": case, "cpu_ms": 1000 * statistics.median(cpu[1:] or cpu),
            "wall_ms": 1000 * statistics.median(wall[1:] or wall),
            "rss_MiB": procstat.status_kib(_self(), "VmRSS") / 1024,
            "peak_rss_MiB": procstat.status_kib(_self(), "VmHWM") / 1024,
            "export_failures": failures}


def _capture_warnings() -> list[str]:
    """Warnings the SDK logs (e.g. a request dropped for size), kept for the report."""
    import logging

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("opentelemetry").addHandler(Keep(logging.WARNING))
    return messages


def _self() -> int:
    import os
    return os.getpid()


def run(args) -> int:
    """Each N in its own process; a table of per-interval cost and how it grows with N."""
    rows = []
    with sink.running(servers.free_port()) as endpoint:
        for case in CASES:
            for n in args.sizes:
                out = subprocess.run([sys.executable, "-m", "bench.series", str(n), str(args.intervals),
                                      endpoint, case], capture_output=True, text=True, timeout=1800)
                if out.returncode != 0:
                    raise RuntimeError(f"series N={n} {case} failed: {out.stderr.strip()[-300:]}")
                rows.append(json.loads(out.stdout))
                print(f"  series N={n} {case}: {rows[-1]}", file=sys.stderr)
    print(render(rows, args.intervals))
    return 0


def render(rows: list[dict], intervals: int) -> str:
    lines = [f"### cost per interval with N flow series (median of {intervals - 1} intervals after the first)", "",
             "| N series | changed per interval | CPU ms | wall ms | CPU µs/series | RSS MiB | peak RSS MiB "
             "| CPU growth vs previous N | exports failed |",
             "|---|---|---|---|---|---|---|---|---|"]
    previous = None
    for row in rows:
        growth = f"×{row['cpu_ms'] / previous['cpu_ms']:.1f} for ×{row['series'] / previous['series']:.0f} N" \
            if previous and previous.get("case") == row.get("case") else "-"
        lines.append(f"| {row['series']:,} | {row.get('case', 'all')} | {row['cpu_ms']:.1f} | {row['wall_ms']:.1f} | "
                     f"{1000 * row['cpu_ms'] / row['series']:.1f} | {row['rss_MiB']:.1f} | "
                     f"{row['peak_rss_MiB']:.1f} | {growth} | "
                     f"{len(row['export_failures'])}/{intervals} {'; '.join(set(row['export_failures']))} |")
        previous = row
    return "\n".join(lines)


if __name__ == "__main__":
    size, count, sink_url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    print(json.dumps(measure(size, count, sink_url, *sys.argv[4:5])))
