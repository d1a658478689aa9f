"""Tests of the benchmark harness itself (no root, no traffic): `pytest bench/tests`.

They are outside `tests/` on purpose: benchmarks are never part of the project's pass/fail.
"""

from __future__ import annotations

import os
import time

import pytest

from bench import completeness, flows, procstat, report, runner, series
from bench.monitors import Usage
from otel_netreceiver.flows.model import (
    Direction, Family, FlowKey, Series, Snapshot, TcpStats, Transport, Workload,
)

STAT = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 10 0 0 0 {u} {s} 0 0 20 0 1 0 1 1 1"


@pytest.fixture
def proc(tmp_path):
    """A captured /proc with two processes of session 4241: a master and a worker."""
    for pid, ppid, utime, stime in ((4241, 1, 100, 50), (4242, 4241, 300, 200)):
        directory = tmp_path / str(pid)
        directory.mkdir()
        text = STAT.format(u=utime, s=stime).replace("4242 (", f"{pid} (", 1)
        text = text.replace(" S 4241 ", f" S {ppid} ", 1)
        (directory / "stat").write_text(text)
        (directory / "status").write_text("Name:\tnginx\nVmRSS:\t  2048 kB\nVmHWM:\t  4096 kB\n")
    return tmp_path


def test_cpu_seconds_reads_utime_and_stime_after_a_comm_with_parentheses(proc):
    assert procstat.cpu_seconds(4242, proc) == pytest.approx(500 / os.sysconf("SC_CLK_TCK"))


def test_session_and_tree_cover_master_and_worker(proc):
    assert sorted(procstat.session_pids(4241, proc)) == [4241, 4242]
    assert procstat.tree_cpu(4241, proc) == pytest.approx(650 / os.sysconf("SC_CLK_TCK"))


@pytest.mark.parametrize("field, kib", [("VmRSS", 2048), ("VmHWM", 4096), ("VmSwap", 0)])
def test_status_kib(proc, field, kib):
    assert procstat.status_kib(4241, field, proc) == kib


def test_cost_per_connection_and_share_of_a_core():
    values = runner.cost(Usage(cpu_s=0.5, bpf_ns=2_000_000_000, rss_kib=2048), wall=10.0,
                         connections=50_000)
    assert values == {"mon_cpu_%": 5.0, "bpf_%": 20.0, "cpu_s/100k": 1.0, "bpf_s/100k": 4.0,
                      "rss_MiB": 2.0}


def test_render_shows_median_spread_and_ratio_to_off():
    table = runner.Table("t")
    for off, agent in ((100, 90), (110, 99), (90, 95)):
        table.add("off", {"req/s": off, "bpf_%": 0})
        table.add("agent", {"req/s": agent, "bpf_%": 0})
    text = runner.render(table)
    assert "| off | 100.0 [90.0–110.0] | 1.000 |" in text
    assert "| agent | 95.0 [90.0–99.0] | 0.950 |" in text
    assert "bpf_%" not in text  # no BPF time measured: column left out


def test_report_replaces_only_the_marked_block():
    text = f"head\n{report.START}\nold\n{report.END}\n## DNS\nkept\n"
    assert report.replace_block(text, "new\n") == f"head\n{report.START}\nnew\n{report.END}\n## DNS\nkept\n"


def test_flow_keys_are_distinct():
    assert len(set(series.flow_keys(5_000))) == 5_000
    assert not set(series.flow_keys(100)) & set(series.flow_keys(100, first=100))


def test_keys_that_stay_keep_their_series_and_new_ones_get_one():
    keys = series.flow_keys(20)
    bounds = {"duration": (1.0,), "rtt": (1.0,), "dns": (1.0,)}
    first = series.snapshot(keys, 1, bounds)
    moved = keys[2:] + series.flow_keys(2, first=20)
    second = series.snapshot(moved, 2, bounds, first, every=10)
    assert list(second.tcp) == moved
    kept = [key for key in moved[:-2] if second.tcp[key] is first.tcp[key]]
    assert len(kept) == 18 - 2  # one in ten changed: those at positions 2 and 12
    assert len(second.dns) == len(series.DNS_ERRORS) * len({key.workload for key in moved})


def test_opened_counts_only_the_server_per_direction():
    workload = Workload(1, 2, "ab")
    def key(direction, peer, port, local=""):
        return FlowKey(workload, Transport.TCP, Family.IPV4, direction, peer, port, local)
    snap = Snapshot(0, tcp={
        key(Direction.OUTGOING, "198.18.50.2", 80): Series(0, TcpStats(opened=7)),
        key(Direction.OUTGOING, "198.18.50.3", 80): Series(0, TcpStats(opened=100)),
        key(Direction.INCOMING, "198.18.50.1", 80, "198.18.50.2"): Series(0, TcpStats(opened=7)),
        key(Direction.INCOMING, "198.18.50.1", 81, "198.18.50.2"): Series(0, TcpStats(opened=100)),
    })
    assert completeness.opened(snap, "198.18.50.2", 80) == {"outgoing": 7, "incoming": 7}


def test_stage_clock_splits_an_interval_by_stage():
    class Stage:
        def __init__(self, spin_s):
            self.spin_s, self.calls = spin_s, 0

        def run(self, *args):
            self.calls += 1
            end = time.thread_time() + self.spin_s
            while time.thread_time() < end:
                pass
            return args

    class Pipeline:
        def __init__(self):
            self.builder = type("B", (), {"build": Stage(0.02).run})()
            self.exporters = [type("E", (), {"export": Stage(0.0).run})()]

    class Agent:
        _collectors = [type("C", (), {"collect": Stage(0.0).run})()]
        _enricher = type("N", (), {"enrich": Stage(0.0).run})()
        _pipelines = [Pipeline()]

    agent = Agent()
    clock = flows.StageClock(agent)
    assert agent._pipelines[0].builder.build(1, 2) == (1, 2)
    taken = clock.take()
    assert taken["build"] >= 20 and taken["collect"] < 5 and clock.take()["build"] == 0
    assert flows._split([taken, taken]).split(" / ")[2] == f"{taken['build']:.0f}"
