"""Nothing stays attached: the DNS and UDP programs go away with the process, even on SIGKILL."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel


def programs_of(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds, through its program and link descriptors."""
    ids = set()
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = fdinfo.read_text()
        except OSError:
            continue  # closed meanwhile
        ids.update(int(line.split()[1]) for line in text.splitlines()
                   if line.startswith("prog_id:"))
    return ids


def all_program_ids() -> set[int]:
    listing = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                        text=True, check=True).stdout)
    return {prog["id"] for prog in listing}


@pytest.mark.parametrize("module, count", [("dns", 2), ("udp", 4)])
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_programs_are_gone_after_the_process(module, count, how):
    process = subprocess.Popen([sys.executable, "-m", f"otel_netreceiver.probes.{module}",
                                "--seconds", "60"], stdout=subprocess.DEVNULL)
    try:
        deadline, ids = time.monotonic() + 20, set()
        while time.monotonic() < deadline and len(ids) < count:
            time.sleep(0.2)
            ids = programs_of(process.pid)
        assert len(ids) == count  # egress, ingress (+ post_bind4/6 for UDP)
    finally:
        process.send_signal(how)
        process.wait(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ids & all_program_ids():
        time.sleep(0.2)  # programs are freed after an RCU grace period
    assert not ids & all_program_ids()
