"""The real kernel path with N distinct flow keys: the agent's whole interval, measured.

The client host opens one connection to each of A server addresses x K ports and keeps
them open; both ends are on this machine, so each connection is two flow keys (outgoing
on the client, incoming on the server): N keys need N/2 connections. Each N runs in a
fresh process: the agent as `otel-netreceiver run` builds it (default enrichment with
containers and peers, default catalog, OTLP/HTTP to the null sink), with its TCP
collector's socket and flow maps sized for N. Before each interval a fraction of the connections
send one byte, so that interval has all, a tenth or none of the series changed; the CPU
and wall time of `Agent.tick()` (collect + enrich + build + export) are measured per
interval, with the thread CPU of each of those stages (the export runs in a thread of
its own), and the process's RSS after the run and at its peak.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import procstat, runner, series, servers, sink

FIRST_EXTRA = 10   # server addresses <subnet>.10, .11, ...
PORT = 20000
PER_PROCESS = 15_000  # held connections per fanout process
EXPORT_TIMEOUT_S = series.EXPORT_TIMEOUT_S
# (what changes, poke every K-th connection, intervals)
PHASES = (("first interval (all keys new)", 1, 1), ("all series changed", 1, 3),
          ("10% of series changed", 10, 3), ("no series changed", 0, 3))
AGENT_CONFIG = """\
exporters:
  otlphttp:
    endpoint: {endpoint}
    timeout: {timeout}s
"""


def shape(n: int) -> tuple[int, int]:
    """Addresses and ports giving about n/2 connections (at most 200 addresses)."""
    addresses = min(200, max(1, int(math.sqrt(n / 2))))
    return addresses, max(1, round(n / 2 / addresses))


def port_groups(addresses: int, ports: int) -> list[tuple[int, int]]:
    """(first port, count) per server/client process pair: each holds at most
    PER_PROCESS connections (a process may not raise its descriptor limit here)."""
    per_group = max(1, PER_PROCESS // addresses)
    return [(PORT + first, min(per_group, ports - first)) for first in range(0, ports, per_group)]


def measure(n: int, endpoint: str) -> dict:
    from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings

    addresses, ports = shape(n)
    collector = TcpCollector(TcpSettings(flows_max=max(16384, 2 * n), sockets_max=max(65536, 2 * n)))
    with servers.hosts() as pair, collector, contextlib.ExitStack() as running:
        for i in range(addresses):
            pair.server.run("ip", "addr", "add", f"{servers.SUBNET}.{FIRST_EXTRA + i}/24",
                            "dev", _link(pair.server))
        clients = []
        for first, count in port_groups(addresses, ports):
            running.enter_context(servers.process(
                pair.server.argv(sys.executable, "-m", "bench.fanout", "serve", str(first), str(count)),
                "0.0.0.0", first + count - 1))
            clients.append(running.enter_context(_client(
                pair.client.argv(sys.executable, "-m", "bench.fanout", "connect",
                                 f"{servers.SUBNET}.{FIRST_EXTRA}", str(addresses), str(first), str(count)))))
        made = sum(json.loads(client.stdout.readline())["connections"] for client in clients)
        phases = _intervals(_agent(endpoint, collector), clients)
        keys, losses = len(collector.table), sum(collector.losses().values())
    return {"keys": keys, "connections": made, "phases": phases,
            "rss_MiB": procstat.status_kib(_pid(), "VmRSS") / 1024,
            "peak_rss_MiB": procstat.status_kib(_pid(), "VmHWM") / 1024,
            "losses": losses}


@contextlib.contextmanager
def _client(argv: list[str]):
    """A fanout client holding its connections until its stdin closes."""
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield client
    finally:
        client.stdin.close()
        client.wait(timeout=60)


def _agent(endpoint: str, collector):
    """The agent `run` would build from a config exporting to `endpoint`, with `collector`."""
    from otel_netreceiver import agent, config
    from otel_netreceiver.flows.model import RecordKind

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "agent.yaml")
        path.write_text(AGENT_CONFIG.format(endpoint=endpoint, timeout=int(EXPORT_TIMEOUT_S)))
        built = agent.build(config.load(path, environ={}), loaders={RecordKind.TCP: lambda: collector})
    agent.settle_memory()  # as `run` does once its probes are attached
    return built


def _intervals(the_agent, clients) -> list[dict]:
    rows, stages = [], StageClock(the_agent)
    for phase, every, count in PHASES:
        cpu, wall, split = [], [], []
        for _ in range(count):
            for client in clients:
                client.stdin.write(f"poke {every}\n")
                client.stdin.flush()
            for client in clients:
                client.stdout.readline()
            timed = _timed(the_agent.tick)
            cpu.append(timed["cpu_ms"])
            wall.append(timed["wall_ms"])
            split.append(stages.take())
        rows.append({"phase": phase, "intervals": count, "cpu_ms": cpu, "wall_ms": wall, "stages": split})
    return rows


class StageClock:
    """Thread CPU ms spent in each stage of the agent's intervals.

    Wraps the stage methods of the agent's own collectors, enricher, builders and
    exporters (instance attributes shadow the methods; the benchmark reads the agent's
    private parts, nothing else does).
    """

    STAGES = ("collect", "enrich", "build", "export")

    def __init__(self, the_agent) -> None:
        self._ms = dict.fromkeys(self.STAGES, 0.0)
        for collector in the_agent._collectors:
            self._wrap(collector, "collect", "collect")
        self._wrap(the_agent._enricher, "enrich", "enrich")
        for pipeline in the_agent._pipelines:
            self._wrap(pipeline.builder, "build", "build")
            for exporter in pipeline.exporters:
                self._wrap(exporter, "export", "export")

    def _wrap(self, owner, method: str, stage: str) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self._ms[stage] += 1000 * (time.thread_time() - started)

        setattr(owner, method, timed)

    def take(self) -> dict[str, float]:
        """The stages' ms since the last take."""
        out, self._ms = self._ms, dict.fromkeys(self.STAGES, 0.0)
        return out


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
    with sink.running(servers.free_port()) as endpoint:
        rows = runner.each_in_own_process("flows", args.sizes, [endpoint], timeout=1800)
    print(render(rows))
    return 0


def render(rows: list[dict]) -> str:
    lines = ["### real kernel path: one agent interval (collect + enrich + build + export) "
             "with N flow keys", "",
             "| flow keys | connections | interval | CPU ms (median [min–max]) | collect / enrich / "
             "build / export ms | wall ms | CPU µs per key | RSS MiB after | peak RSS MiB | losses |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for p in r["phases"]:
            cpu = statistics.median(p["cpu_ms"])
            spread = f" [{min(p['cpu_ms']):.0f}–{max(p['cpu_ms']):.0f}]" if len(p["cpu_ms"]) > 1 else ""
            lines.append(f"| {r['keys']:,} | {r['connections']:,} | {p['phase']} | {cpu:.0f}{spread} | "
                         f"{_split(p.get('stages', []))} | {statistics.median(p['wall_ms']):.0f} | "
                         f"{1000 * cpu / max(1, r['keys']):.1f} | "
                         f"{r['rss_MiB']:.1f} | {r['peak_rss_MiB']:.1f} | {r['losses']} |")
    return "\n".join(lines)


def _split(stages: list[dict[str, float]]) -> str:
    """Median thread CPU ms of each stage over a phase's intervals."""
    if not stages:
        return "-"
    return " / ".join(f"{statistics.median(s[name] for s in stages):.0f}" for name in StageClock.STAGES)


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), sys.argv[2])))
