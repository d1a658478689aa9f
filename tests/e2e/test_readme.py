"""The README's quick start, run as written: `make run` shows exports; CI runs `make test`.

`make test` itself is what CI (.ci/run) runs on a fresh machine, so this test checks that
the README names it and that .ci/run runs it, and runs `make run` for real: it must
install what is missing, start the agent with the debug exporter, print an export, and
stop cleanly on Ctrl-C (SIGINT to the process group, as a terminal sends it).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_quick_start_is_two_make_commands_and_ci_runs_the_test_one():
    assert quick_start_commands() == ["make run", "make test"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci]


def test_make_run_prints_an_export_and_stops_on_ctrl_c():
    proc = subprocess.Popen(["make", "run"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600  # a first run installs packages and the venv
        while time.monotonic() < deadline and not any(l.startswith("export: ") for l in lines):
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
        assert any(l.startswith("export: ") for l in lines), "".join(lines)[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines) + rest
    assert "running; exporters: debug" in output
    assert "stopped after a final export" in output
    assert "Traceback" not in output
