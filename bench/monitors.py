"""The cases a benchmark compares: nothing watching (off), the agent, and a peer tool.

A monitor is started before a case's workload and stopped after it. While it runs,
`usage()` reads the CPU seconds of its process and the kernel time of its BPF programs,
so a case can report what the watcher itself cost during the measured window.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat
from tests.support import bpf_programs

REPO = Path(__file__).resolve().parent.parent
AGENT_BIN = REPO / ".venv" / "bin" / "otel-netreceiver"
AGENT_CONFIG = Path(__file__).resolve().parent / "agent.yaml"
AGENT_TCP_CONFIG = Path(__file__).resolve().parent / "agent-tcp.yaml"  # TCP collector only
# tcplife (libbpf-tools) finds tracepoint ids under tracefs; when tracefs is not mounted
# it is mounted in a private mount namespace of tcplife's own, leaving the host untouched.
TCPLIFE = ["unshare", "-m", "--propagation", "private", "sh", "-c",
           "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing;"
           " exec /usr/sbin/tcplife"]


class MonitorError(RuntimeError):
    """A monitor could not start; str() is one line saying why."""


@dataclass
class Usage:
    """What a monitor consumed so far: process CPU, kernel BPF time, memory."""

    cpu_s: float = 0.0
    bpf_ns: int = 0
    bpf_runs: int = 0
    rss_kib: int = 0

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(self.cpu_s - other.cpu_s, self.bpf_ns - other.bpf_ns,
                     self.bpf_runs - other.bpf_runs, self.rss_kib)


class Off:
    """No monitor: the baseline."""

    name = "off"

    def start(self) -> None:
        pass

    def usage(self) -> Usage:
        return Usage()

    def stop(self) -> None:
        pass


@dataclass
class Command:
    """A monitor that is one process: started by argv, ready once its BPF programs are attached."""

    name: str
    argv: list[str]
    stop_signal: int = signal.SIGTERM
    ready_timeout: float = 30.0
    settle: float = 1.0  # after programs appear, let start-up work (first pass, threads) finish
    log: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _progs: set[int] = field(default_factory=set, repr=False)
    programs: dict = field(default_factory=dict)  # per program, since load, read at stop

    @property
    def pid(self) -> int:
        return self._proc.pid

    def start(self) -> None:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self._proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self._progs = self._wait_ready()
        time.sleep(self.settle)
        self._progs = self._prog_ids() or self._progs

    def _prog_ids(self) -> set[int]:
        pids = procstat.session_pids(self._proc.pid)
        return set().union(*(bpf_programs.held_by(pid) for pid in pids))

    def _wait_ready(self) -> set[int]:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MonitorError(f"{self.name} exited with {self._proc.returncode} at start "
                                   f"({shlex.join(self.argv)}){self._log_tail()}")
            progs = self._prog_ids()
            if progs:
                return progs
            time.sleep(0.1)
        self.stop()
        raise MonitorError(f"{self.name} attached no BPF program within {self.ready_timeout:.0f} s")

    def _log_tail(self) -> str:
        if not self.log or not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""

    def usage(self) -> Usage:
        """CPU and RSS summed over the monitor's session; kernel time of its programs."""
        pids = procstat.session_pids(self._proc.pid)
        run = procstat.bpf_run(self._progs)
        return Usage(sum(_safe(procstat.cpu_seconds, pid) for pid in pids),
                     run.run_time_ns, run.run_cnt,
                     sum(_safe(procstat.status_kib, pid, "VmRSS") for pid in pids))

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self.programs = procstat.bpf_runs(self._progs)
        os.killpg(self._proc.pid, self.stop_signal)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


def agent(command: str | None, log: Path | None = None, config: Path = AGENT_CONFIG,
          name: str = "agent") -> Command:
    """The agent as users run it; `command` overrides the default bench config."""
    argv = shlex.split(command) if command else [str(AGENT_BIN), "run", "--config", str(config)]
    return Command(name, argv, signal.SIGTERM, log=log)


def tcplife(log: Path | None = None) -> Command:
    """The peer: libbpf-tools tcplife (one event per closed connection, printed)."""
    return Command("tcplife", TCPLIFE, signal.SIGINT, log=log)


def agent_runnable(command: str | None = None) -> str | None:
    """None when the agent can be started, else a one-line reason."""
    if command:
        program = shlex.split(command)[0]
        return None if shutil.which(program) else f"{program} not found"
    if not AGENT_BIN.exists():
        return f"{AGENT_BIN} not found (make venv)"
    probe = subprocess.run([str(AGENT_BIN), "--version"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{AGENT_BIN} --version failed: {(probe.stderr or probe.stdout).strip()[-200:]}"
    return None


def _safe(reader, *args):
    """A /proc reading, or 0 when the process exited meanwhile."""
    try:
        return reader(*args)
    except (OSError, ValueError):
        return 0
