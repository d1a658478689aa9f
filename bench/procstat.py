"""Readers of /proc and of the kernel's BPF statistics for one process.

All readers take the /proc root as a parameter so they can be pointed at captured files.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATS_SYSCTL = "kernel/bpf_stats_enabled"


def cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    text = (proc / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # comm may hold spaces; fields start at 3
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def session_pids(sid: int, proc: Path = PROC) -> list[int]:
    """Processes of one session (a monitor started with start_new_session and its children)."""
    pids = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            text = (proc / entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        if int(text[text.rindex(")") + 2:].split()[3]) == sid:
            pids.append(int(entry))
    return pids


def tree_cpu(pid: int, proc: Path = PROC) -> float:
    """CPU seconds of a process and its direct children (a server's master and workers)."""
    total = 0.0
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            text = (proc / entry / "stat").read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            if int(entry) == pid or ppid == pid:
                total += cpu_seconds(int(entry), proc)
        except (OSError, ValueError):
            continue  # exited meanwhile
    return total


def status_kib(pid: int, field: str, proc: Path = PROC) -> int:
    """One `kB` field of /proc/<pid>/status (VmRSS, VmHWM ...), in KiB; 0 if absent."""
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class BpfRun:
    """Kernel time spent in a set of programs: total ns and number of runs."""

    run_time_ns: int = 0
    run_cnt: int = 0

    def __sub__(self, other: "BpfRun") -> "BpfRun":
        return BpfRun(self.run_time_ns - other.run_time_ns, self.run_cnt - other.run_cnt)


def bpf_run(prog_ids: set[int]) -> BpfRun:
    """Sum of run_time_ns / run_cnt over programs (needs kernel.bpf_stats_enabled=1)."""
    total = BpfRun()
    for run in bpf_runs(prog_ids).values():
        total.run_time_ns += run.run_time_ns
        total.run_cnt += run.run_cnt
    return total


def bpf_runs(prog_ids: set[int]) -> dict[str, BpfRun]:
    """run_time_ns / run_cnt per program, keyed `<type>/<name>#<id>`, from `bpftool prog show`."""
    if not prog_ids:
        return {}
    out = subprocess.run(["bpftool", "--json", "prog", "show"], capture_output=True, text=True)
    return {f"{p.get('type')}/{p.get('name')}#{p['id']}": BpfRun(p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in json.loads(out.stdout or "[]") if p.get("id") in prog_ids}


@contextmanager
def bpf_stats_enabled(proc: Path = PROC):
    """Turn on kernel.bpf_stats_enabled for the block; restore the previous value after."""
    path = proc / "sys" / STATS_SYSCTL
    previous = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(previous)
