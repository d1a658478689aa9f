"""Profile the running agent under one load with py-spy: where its user-space CPU goes.

`python -m bench profile --load dns|churn [--py-spy PATH]` starts the agent (as in the
agent case), runs the load for 16 s while `py-spy record --threads` samples the agent for
15 s, then prints the functions with the most samples (self and inclusive). py-spy is a
profiling tool, not a dependency: install it anywhere (`pip install --target DIR py-spy`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

from bench import monitors, servers, sink, workloads


def run(args) -> int:
    with tempfile.TemporaryDirectory(prefix="nre-profile-") as tmp, sink.running(), \
            servers.hosts() as pair:
        out = Path(tmp) / "stacks.txt"
        server = servers.dnsmasq(pair.server) if args.load == "dns" else servers.nginx(pair.server)
        with server as served:
            target = served if args.load == "dns" else served.url
            agent = monitors.agent(args.agent_cmd, args.log_dir / "agent.log")
            agent.start()
            try:
                spy = _spy(args.py_spy, agent.pid, out)
                print(_load(args.load, pair, target, Path(tmp)))
                spy.wait(timeout=60)
            finally:
                agent.stop()
        print(summary(out.read_text()))
    return 0


def _spy(py_spy: str, pid: int, out: Path) -> subprocess.Popen:
    argv = [py_spy, "record", "--pid", str(pid), "-d", "15", "-r", "200", "--threads",
            "-f", "raw", "-o", str(out), "--nonblocking"]
    env = {**os.environ, "PYTHONPATH": str(Path(py_spy).resolve().parent.parent)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _load(load: str, pair, target: str, tmp: Path) -> dict:
    if load == "dns":
        queries = tmp / "queries"
        queries.write_text("bench.test A\n")
        return workloads.dnsperf(pair.client, target, str(queries), 16)
    return workloads.ab(pair.client, target, 32, 16)


def summary(collapsed: str, top: int = 20) -> str:
    """Self and inclusive sample shares from py-spy's raw (collapsed stacks) output."""
    own, inclusive, total = Counter(), Counter(), 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, samples = stack.split(";"), int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples", "self:"]
    lines += [f"  {n / total:6.1%} {frame}" for frame, n in own.most_common(top)]
    lines += ["inclusive:"] + [f"  {n / total:6.1%} {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)
