"""The shared runner: interleave cases round by round, then print median, spread and ratio.

A workload is a callable returning named numbers, primary metric first, e.g.
`{"req/s": 12000.0, "connections": 60000}`. Each round runs every case once, in order,
so slow drift of the machine (other load, thermal) spreads over all cases alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from bench.monitors import Usage

Workload = Callable[[], dict[str, float]]


@dataclass
class Table:
    """Results of one workload: per case, one dict of numbers per round."""

    title: str
    cases: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def add(self, case: str, values: dict[str, float]) -> None:
        self.cases.setdefault(case, []).append(values)


def run_case(monitor, workload: Workload) -> dict[str, float]:
    """Start the monitor, measure the workload and what the monitor used meanwhile."""
    monitor.start()
    try:
        before, start = monitor.usage(), time.monotonic()
        values = workload()
        used, wall = monitor.usage() - before, time.monotonic() - start
    finally:
        monitor.stop()
    return {**values, **cost(used, wall, values.get("connections"))}


def cost(used: Usage, wall: float, connections: float | None) -> dict[str, float]:
    """The monitor's own cost: % of one core in user space and in BPF programs."""
    values = {"mon_cpu_%": 100 * used.cpu_s / wall, "bpf_%": 100 * used.bpf_ns / 1e9 / wall}
    if connections:
        values["cpu_s/100k"] = used.cpu_s / connections * 1e5
        values["bpf_s/100k"] = used.bpf_ns / 1e9 / connections * 1e5
    if used.rss_kib:
        values["rss_MiB"] = used.rss_kib / 1024
    return values


def interleave(title: str, monitors: list, workload: Workload, rounds: int) -> Table:
    """Run off, agent, peer, off, agent, peer ... for `rounds` rounds."""
    table = Table(title)
    for round_no in range(1, rounds + 1):
        for monitor in monitors:
            try:
                values = run_case(monitor, workload)
            except (RuntimeError, subprocess.TimeoutExpired) as err:  # MonitorError included
                print(f"  [{title}] round {round_no}/{rounds} {monitor.name}: FAILED: {err}",
                      file=sys.stderr)
                continue  # one failed case costs one sample, not the whole run
            table.add(monitor.name, values)
            print(f"  [{title}] round {round_no}/{rounds} {monitor.name:8s} "
                  + " ".join(f"{k}={_fmt(v)}" for k, v in values.items()), file=sys.stderr)
    return table


def render(table: Table) -> str:
    """A Markdown table: median [min-max] per metric, and the primary metric's ratio to off."""
    metrics = _metric_names(table)
    primary = metrics[0]
    base = _median(table.cases.get("off", []), primary)
    lines = [f"### {table.title}", "",
             "| case | " + " | ".join(metrics) + f" | {primary} vs off |",
             "|---" * (len(metrics) + 2) + "|"]
    for case, rounds in table.cases.items():
        cells = [_cell([r.get(m) for r in rounds]) for m in metrics]
        ratio = _median(rounds, primary) / base if base else float("nan")
        lines.append(f"| {case} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    return "\n".join(lines)


def render_programs(monitors: list, connections: float | None = None) -> str:
    """Kernel time per BPF program of each monitor's last case (since its programs loaded)."""
    lines = ["| case | program | runs | avg ns/run | total ms |" + (" runs/connection |" if connections else ""),
             "|---|---|---|---|---|" + ("---|" if connections else "")]
    for monitor in monitors:
        for name, run in sorted(getattr(monitor, "programs", {}).items()):
            avg = run.run_time_ns / run.run_cnt if run.run_cnt else 0
            extra = f" {run.run_cnt / connections:.2f} |" if connections else ""
            lines.append(f"| {monitor.name} | {name} | {run.run_cnt:,} | {avg:,.0f} | "
                         f"{run.run_time_ns / 1e6:,.1f} |" + extra)
    return "\n".join(lines)


def _metric_names(table: Table) -> list[str]:
    """Metrics in first-seen order; BPF columns are left out when no BPF time was measured."""
    names: list[str] = []
    for rounds in table.cases.values():
        for values in rounds:
            names += [k for k in values if k not in names]
    return [n for n in names if not n.startswith("bpf") or _any_nonzero(table, n)]


def _any_nonzero(table: Table, metric: str) -> bool:
    return any(values.get(metric) for rounds in table.cases.values() for values in rounds)


def _median(rounds: list[dict[str, float]], metric: str) -> float:
    values = [r[metric] for r in rounds if r.get(metric) is not None]
    return statistics.median(values) if values else 0.0


def _cell(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    return f"{_fmt(statistics.median(present))} [{_fmt(min(present))}–{_fmt(max(present))}]"


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def to_json(tables: list[Table]) -> str:
    return json.dumps([{"title": t.title, "cases": t.cases} for t in tables], indent=1)


def each_in_own_process(name: str, values: list, extra: list[str], timeout: float) -> list[dict]:
    """`python -m bench.<name> <value> <extra...>` for each value, one process each (so
    each measures its own RSS): the JSON each prints, in order."""
    rows = []
    for value in values:
        out = subprocess.run([sys.executable, "-m", f"bench.{name}", str(value), *extra],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{name} N={value} failed: {out.stderr.strip()[-400:]}")
        rows.append(json.loads(out.stdout))
        print(f"  {name} N={value}: {rows[-1]}", file=sys.stderr)
    return rows

