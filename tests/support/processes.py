"""Stopping the real peers tests and benchmarks start (dnsmasq, nginx, Prometheus ...)."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL: the process is gone on return."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
