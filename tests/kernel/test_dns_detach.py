"""Nothing stays attached: the DNS and UDP programs go away with the process, even on SIGKILL."""

import signal
import subprocess
import sys
import time
import pytest

from tests.support import bpf_programs

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("module, count", [("dns", 2), ("udp", 4)])
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_programs_are_gone_after_the_process(module, count, how):
    process = subprocess.Popen([sys.executable, "-m", f"otel_netreceiver.probes.{module}",
                                "--seconds", "60"], stdout=subprocess.DEVNULL)
    try:
        deadline, ids = time.monotonic() + 20, set()
        while time.monotonic() < deadline and len(ids) < count:
            time.sleep(0.2)
            ids = bpf_programs.held_by(process.pid)
        assert len(ids) == count  # egress, ingress (+ post_bind4/6 for UDP)
    finally:
        process.send_signal(how)
        process.wait(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ids & bpf_programs.loaded():
        time.sleep(0.2)  # programs are freed after an RCU grace period
    assert not ids & bpf_programs.loaded()
