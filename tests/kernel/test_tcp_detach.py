"""After the agent stops, normally or killed, none of its BPF programs stays loaded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.traffic import REPO

pytestmark = pytest.mark.kernel

PROGRAMS = 7  # in bpf/tcp.bpf.c


def programs_of(pid: int) -> set[int]:
    """Ids of BPF programs a process holds (prog and link fds name them in fdinfo).

    bpftool's own `pids` column needs a bpftool built with BPF skeletons; this one is not.
    """
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").glob("*"):
        try:
            text = info.read_text()
        except OSError:
            continue  # fd closed meanwhile
        ids |= {int(line.split()[1]) for line in text.splitlines()
                if line.startswith("prog_id:")}
    return ids


def loaded_ids() -> set[int]:
    listing = subprocess.run(["bpftool", "-j", "prog", "list"], check=True,
                             capture_output=True, text=True).stdout
    return {prog["id"] for prog in json.loads(listing)}


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
        ours = wait_for(lambda: len(programs_of(agent.pid)) >= PROGRAMS and programs_of(agent.pid))
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
    assert wait_for(lambda: not (ours & loaded_ids())), f"still loaded: {ours & loaded_ids()}"
