"""The real agent as a subprocess (`.venv/bin/otel-netreceiver run`), for end-to-end tests.

`agent_process(config_text, env)` starts it with a written config and only the
environment given (plus PATH), waits until its probes are attached (its "running" log
line), and always stops it: SIGTERM, then SIGKILL if it does not exit.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / ".venv" / "bin" / "otel-netreceiver"

# An agent that exports every second from the start and never asks a cloud metadata
# address (exporters come from the test's OTEL_* environment).
EVERY_SECOND = """
collection_interval: 1s
initial_delay: 0s
enrich:
  cloud:
    detectors: []
"""


class AgentProcess:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.stderr_lines: list[str] = []

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Read stderr until the agent says it runs; fail with its output if it exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if ready:
                line = self.proc.stderr.readline()
                if not line and self.proc.poll() is not None:
                    break
                self.stderr_lines.append(line)
                if " running; exporters: " in line:
                    return
        self.stop()
        raise AssertionError(f"agent did not start: {''.join(self.stderr_lines)[-3000:]}")

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took). Kills it if it overruns (code -9)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            code = self.proc.returncode
        return code, time.monotonic() - started

    def output(self) -> str:
        """Everything left on stderr after exit."""
        rest = self.proc.stderr.read() if self.proc.poll() is not None else ""
        return "".join(self.stderr_lines) + rest

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@contextmanager
def agent_process(tmp_path: Path, config_text: str, env: dict[str, str] | None = None):
    config = tmp_path / "agent.yaml"
    config.write_text(config_text)
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    proc = subprocess.Popen([str(AGENT), "run", "--config", str(config)], cwd=REPO, env=environ,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    agent = AgentProcess(proc)
    try:
        agent.wait_ready()
        yield agent
    finally:
        if proc.poll() is None:
            agent.terminate(10)
        agent.stop()
