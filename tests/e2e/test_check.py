"""`otel-netreceiver check` on this machine, as a real process: every check passes here
(the development and CI machines can run the agent), one PASS line each, exit 0."""

import subprocess

import pytest

from otel_netreceiver import preflight
from tests.support.agent_process import AGENT, REPO

pytestmark = pytest.mark.e2e


def test_check_passes_on_this_machine():
    result = subprocess.run([str(AGENT), "check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout
    checks = len(preflight.run_checks())
    assert [line.split()[0] for line in lines[:-1]] == ["PASS"] * checks
    assert lines[-1] == f"{checks} passed, 0 failed"
