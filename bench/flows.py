"""The real kernel path with N distinct flow keys: collect, then enrich + build + export.

The client host connects once to each of A server addresses x K ports; both ends are on
this machine, so each connection is two flow keys (outgoing on the client, incoming on
the server): N keys need N/2 connections. Each N runs in a fresh process with the
TcpCollector's flow map sized to hold N, and reports CPU and wall time of one
`collect()`, of one enrich + build + OTLP export, and RSS.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

from bench import procstat, series, servers, sink

FIRST_EXTRA = 10   # server addresses <subnet>.10, .11, ...
PORT = 20000
EXPORT_TIMEOUT_S = series.EXPORT_TIMEOUT_S


def shape(n: int) -> tuple[int, int]:
    """Addresses and ports giving about n/2 connections (at most 200 addresses)."""
    addresses = min(200, max(1, int(math.sqrt(n / 2))))
    return addresses, max(1, round(n / 2 / addresses))


def measure(n: int, endpoint: str) -> dict[str, float]:
    from otel_netreceiver.flows.model import Snapshot
    from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings

    addresses, ports = shape(n)
    with servers.hosts() as pair, TcpCollector(TcpSettings(flows_max=max(16384, 2 * n))) as collector:
        for i in range(addresses):
            pair.server.run("ip", "addr", "add", f"{servers.SUBNET}.{FIRST_EXTRA + i}/24",
                            "dev", _link(pair.server))
        with servers.process(pair.server.argv(sys.executable, "-m", "bench.fanout", "serve",
                                              str(PORT), str(ports)), "0.0.0.0", PORT):
            out = pair.client.run(sys.executable, "-m", "bench.fanout", "connect",
                                  f"{servers.SUBNET}.{FIRST_EXTRA}", str(addresses), str(PORT), str(ports))
        made = json.loads(out.stdout)["connections"]
        first = _timed(lambda: _collect(collector))
        second = _timed(lambda: _collect(collector))
    snap = second["value"]
    exported = _export(snap, endpoint)
    return {"keys": len(snap.tcp), "connections": made,
            "collect_cpu_ms": first["cpu_ms"], "collect_wall_ms": first["wall_ms"],
            "steady_collect_cpu_ms": second["cpu_ms"],
            "export_cpu_ms": exported["cpu_ms"], "export_wall_ms": exported["wall_ms"],
            "rss_MiB": procstat.status_kib(_pid(), "VmRSS") / 1024,
            "peak_rss_MiB": procstat.status_kib(_pid(), "VmHWM") / 1024,
            "losses": sum(snap.losses.values())}


def _collect(collector):
    from otel_netreceiver.flows.model import Snapshot
    snap = Snapshot(time.time_ns())
    collector.collect(snap)
    return snap


def _export(snap, endpoint: str) -> dict:
    from otel_netreceiver.config import ExporterConfig
    from otel_netreceiver.enrich.base import Enricher
    from otel_netreceiver.export.otlp import OtlpExporter
    from otel_netreceiver.metrics import catalog as catalog_module
    from otel_netreceiver.metrics.builder import AgentTelemetry, BuildSettings, MetricsBuilder

    catalog = catalog_module.load()
    enabled = frozenset(name for name, m in catalog.metrics.items() if m.enabled)
    builder = MetricsBuilder(catalog, BuildSettings(enabled), {"service.name": "bench"}, 1)
    enricher = Enricher({"host.name": "bench", "os.type": "linux"})
    exporter = OtlpExporter(ExporterConfig("otlphttp", "otlphttp", f"{endpoint}/v1/metrics",
                                           timeout_s=EXPORT_TIMEOUT_S))
    return _timed(lambda: exporter.export(builder.build(enricher.enrich(snap), AgentTelemetry())))


def _timed(work) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    value = work()
    return {"value": value, "cpu_ms": 1000 * (time.process_time() - cpu),
            "wall_ms": 1000 * (time.perf_counter() - wall)}


def _link(host) -> str:
    out = host.run("ip", "-o", "link", "show", "type", "veth").stdout
    return out.split(":")[1].strip().split("@")[0]


def _pid() -> int:
    import os
    return os.getpid()


def run(args) -> int:
    rows = []
    with sink.running(servers.free_port()) as endpoint:
        for n in args.sizes:
            out = subprocess.run([sys.executable, "-m", "bench.flows", str(n), endpoint],
                                 capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                raise RuntimeError(f"flows N={n} failed: {out.stderr.strip()[-400:]}")
            rows.append(json.loads(out.stdout))
            print(f"  flows N={n}: {rows[-1]}", file=sys.stderr)
    print(render(rows))
    return 0


def render(rows: list[dict]) -> str:
    lines = ["### real kernel path: N flow keys from many peers (one interval)", "",
             "| flow keys | connections | collect() CPU ms (wall) | next collect() CPU ms "
             "| enrich+build+export CPU ms (wall) | RSS MiB | peak RSS MiB | losses |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['keys']:,} | {r['connections']:,} | {r['collect_cpu_ms']:.1f} "
                     f"({r['collect_wall_ms']:.1f}) | {r['steady_collect_cpu_ms']:.1f} | "
                     f"{r['export_cpu_ms']:.0f} ({r['export_wall_ms']:.0f}) | {r['rss_MiB']:.1f} | "
                     f"{r['peak_rss_MiB']:.1f} | {r['losses']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), sys.argv[2])))
