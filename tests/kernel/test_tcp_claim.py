"""Owner of accepted connections: the first process that reads or writes, else the listener's.

A pre-fork server: the parent listens, a forked worker with its own comm accepts. The
worker's pid and comm come from the server script itself; loopback, own port, filtered.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from otel_netreceiver.probes.tcp import TcpCollector, TcpSettings
from tests.support import traffic

pytestmark = pytest.mark.kernel

KEEP_ALL = TcpSettings(idle_intervals=1_000_000)
COUNT = 20
SIZE = 100
WORKER_COMM = "nrk-worker"

SERVER = r"""
import json, os, socket, sys
count, talk = int(sys.argv[1]), sys.argv[2] == "talk"
listener = socket.create_server(("127.0.0.1", 0))
listener.settimeout(60)
pid = os.fork()
if pid == 0:
    with open("/proc/self/comm", "w") as handle:
        handle.write(sys.argv[3])
    for _ in range(count):
        conn, _ = listener.accept()
        if talk:
            conn.recv(int(sys.argv[4]))
            conn.sendall(b"y" * int(sys.argv[4]))
        conn.close()
    os._exit(0)
print(json.dumps({"port": listener.getsockname()[1], "listener_pid": os.getpid(),
                  "worker_pid": pid}), flush=True)
os.waitpid(pid, 0)
"""


def connect_all(port: int, talk: bool) -> int:
    """COUNT connections; with `talk`, SIZE bytes each way. Returns bytes received."""
    got = 0
    for _ in range(COUNT):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            if talk:
                conn.sendall(b"x" * SIZE)
            while chunk := conn.recv(4096):
                got += len(chunk)
    return got


@pytest.mark.parametrize("talk", [True, False], ids=["worker-talks", "nobody-talks"])
def test_accepted_connection_owner(talk):
    with TcpCollector(KEEP_ALL) as collector:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(COUNT), "talk" if talk else "silent",
             WORKER_COMM, str(SIZE)], stdout=subprocess.PIPE, text=True)
        try:
            info = json.loads(server.stdout.readline())
            received = connect_all(info["port"], talk)
            assert server.wait(timeout=60) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        fields = dict(direction="incoming", peer_address="127.0.0.1", server_port=info["port"])
        snap = traffic.collect_until(collector, lambda s: sum(
            st.closed for _, st in traffic.matching(s, **fields)) >= COUNT)
    [(key, stats)] = traffic.matching(snap, **fields)
    if talk:
        assert (key.workload.pid, key.workload.comm) == (info["worker_pid"], WORKER_COMM)
        assert (stats.bytes_received, stats.bytes_sent) == (COUNT * SIZE, received)
    else:
        assert key.workload.pid == info["listener_pid"] != info["worker_pid"]
        assert key.workload.comm != WORKER_COMM
    assert (stats.opened, stats.closed, stats.active) == (COUNT, COUNT, 0)
