"""After the agent stops, normally or killed, none of its BPF programs stays loaded."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.support import bpf_programs
from tests.support.traffic import REPO

pytestmark = pytest.mark.kernel

PROGRAMS = 7  # in bpf/tcp.bpf.c


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


@pytest.mark.parametrize("stop", ["normal", "sigkill"])
def test_no_program_left_after_stop(stop):
    seconds = 2 if stop == "normal" else 60
    agent = subprocess.Popen([sys.executable, "-m", "otel_netreceiver.probes.tcp",
                              "--seconds", str(seconds)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        ours = wait_for(lambda: len(bpf_programs.held_by(agent.pid)) >= PROGRAMS and bpf_programs.held_by(agent.pid))
        assert ours, "the agent did not load its programs"
        if stop == "sigkill":
            agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert stop == "sigkill" or agent.returncode == 0
    # programs are freed once the last fd goes (after an RCU grace period)
    assert wait_for(lambda: not (ours & bpf_programs.loaded())), f"still loaded: {ours & bpf_programs.loaded()}"
