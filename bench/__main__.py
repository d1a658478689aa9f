"""Command line: `python -m bench <name> [--rounds 5] [--quick] [--cases off,agent,peer]`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from bench import completeness, cost, flows, monitors, netns, network, profile, runner, series, sink
from bench.procstat import bpf_stats_enabled

BENCHMARKS = {
    "churn": network.churn,
    "keepalive": network.keepalive,
    "bulk": network.bulk,
    "dns": network.dns,
    "cost": cost.cost,
}
SUITES = {"network": ["churn", "bulk", "keepalive", "dns"]}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, *SUITES, *EXTRA])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measurement")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")],
                        default=[8, 32], help="ab concurrencies for churn (default 8,32)")
    parser.add_argument("--cases", default="off,agent,peer",
                        help="which cases, in round order (off, agent, agent-tcp, peer)")
    parser.add_argument("--agent-cmd", help="command that runs the agent (default: "
                        ".venv/bin/otel-netreceiver run --config bench/agent.yaml)")
    parser.add_argument("--rate", type=int, default=5000, help="cost: connections/s (default 5000)")
    parser.add_argument("--connections", type=int, default=100_000,
                        help="completeness: connections to make (default 100000)")
    parser.add_argument("--sizes", type=lambda s: [int(n) for n in s.split(",")],
                        default=list(series.SIZES), help="series: N values (default 1000,10000,100000)")
    parser.add_argument("--intervals", type=int, default=3, help="series: intervals per N (default 3)")
    parser.add_argument("--namespaces", type=lambda s: [int(n) for n in s.split(",")],
                        default=list(netns.NAMESPACES), help="netns: N values (default 1,10,50)")
    parser.add_argument("--per-namespace", type=int, default=4,
                        help="netns: connections held in each namespace (default 4)")
    parser.add_argument("--load", choices=["dns", "churn"], default="dns", help="profile: the load")
    parser.add_argument("--py-spy", default="py-spy", help="profile: the py-spy executable")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s, concurrency 8")
    parser.add_argument("--no-bpf-stats", action="store_true",
                        help="leave kernel.bpf_stats_enabled alone (no BPF time columns)")
    parser.add_argument("--json", type=Path, help="also write raw per-round numbers here")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/nre-bench"),
                        help="agent and tcplife output (default /tmp/nre-bench)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.concurrency = 2, 2.0, [8]
        args.sizes, args.intervals = [n for n in args.sizes if n <= 10_000], 2
    return args


def build_monitors(args) -> list:
    """The cases in round order; the agent is left out, saying why, when it cannot run."""
    args.log_dir.mkdir(parents=True, exist_ok=True)
    for log in args.log_dir.glob("*.log"):
        log.unlink()  # each run's logs are its own
    made = {"off": monitors.Off,
            "agent": lambda: monitors.agent(args.agent_cmd, args.log_dir / "agent.log"),
            "agent-tcp": lambda: monitors.agent(None, args.log_dir / "agent-tcp.log",
                                                monitors.AGENT_TCP_CONFIG, "agent-tcp"),
            "peer": lambda: monitors.tcplife(args.log_dir / "tcplife.log" if args.tcplife_log else None)}
    chosen = []
    for name in args.cases.split(","):
        if name.startswith("agent") and (reason := monitors.agent_runnable(args.agent_cmd)):
            print(f"agent case NOT MEASURED: {reason}", file=sys.stderr)
            continue
        chosen.append(made[name]())
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("benchmarks need root (namespaces, eBPF)", file=sys.stderr)
        return 2
    if args.name in EXTRA:
        return EXTRA[args.name](args)
    args.tcplife_log = False
    cases = build_monitors(args)
    tables = []
    with contextlib.ExitStack() as stack:
        if not args.no_bpf_stats:
            stack.enter_context(bpf_stats_enabled())
        if any(m.name.startswith("agent") for m in cases):
            stack.enter_context(sink.running())
        for name in SUITES.get(args.name, [args.name]):
            for table in BENCHMARKS[name](args, cases):
                print(runner.render(table) + "\n", flush=True)
                tables.append(table)
    if args.json:
        args.json.write_text(runner.to_json(tables))
    return 0


EXTRA: dict = {"series": series.run, "flows": flows.run, "completeness": completeness.run,
               "profile": profile.run, "netns": netns.run}

if __name__ == "__main__":
    try:
        sys.exit(main())
    except (monitors.MonitorError, RuntimeError) as err:
        print(f"bench: {err}", file=sys.stderr)
        sys.exit(1)
