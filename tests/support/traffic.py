"""Traffic generators that report their own ground truth as JSON.

Run as subprocesses, usually inside a namespace host or an emulated container:

    python -m tests.support.traffic <mode> [options]

Every mode prints one JSON object on stdout when it is done (servers first print
`{"ready": true, "port": P}` on its own line once they listen). The numbers come from
the generator itself (bytes it wrote and read, errno of failed connects, TCP_INFO), never
from the agent. All loops are bounded in count and time.

Modes: rr-server, rr-client (request/response with known sizes), fail (connects that
fail, by errno), sink + bulk (bulk transfer; bulk reports tcpi_total_retrans), abort
(SO_LINGER 0 close: a reset), hold (a connection driven by lines on stdin), churn
(many short loopback connections, client and server in one process).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

TCPI_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h)
DEADLINE_S = 120          # no generator runs longer than this


def identity() -> dict:
    """Who this process is, as the kernel would see it."""
    with open("/proc/self/comm") as handle:
        comm = handle.read().strip()
    return {"pid": os.getpid(), "comm": comm}


def emit(result: dict) -> None:
    print(json.dumps({**identity(), **result}), flush=True)


def total_retrans(sock: socket.socket) -> int:
    """The kernel's tcpi_total_retrans for this socket."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0]


def listen(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(1024)
    server.settimeout(DEADLINE_S)
    emit({"ready": True, "port": server.getsockname()[1]})
    return server


def recv_exact(sock: socket.socket, size: int) -> int:
    """Read `size` bytes (or until EOF); returns how many arrived."""
    got = 0
    while got < size:
        chunk = sock.recv(min(65536, size - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def recv_all(sock: socket.socket) -> int:
    got = 0
    while chunk := sock.recv(65536):
        got += len(chunk)
    return got


# --- request / response ------------------------------------------------------------------

def rr_server(args) -> dict:
    """Accept `count` connections: read the request, write the response, close."""
    server = listen(args.address, args.port)
    received = sent = 0
    for _ in range(args.count):
        conn, _ = server.accept()
        with conn:
            received += recv_exact(conn, args.request)
            conn.sendall(b"r" * args.response)
            sent += args.response
    return {"connections": args.count, "received": received, "sent": sent}


def rr_client(args) -> dict:
    """Open `count` connections: write the request, read the response until EOF."""
    sent = received = 0
    ports = []
    for _ in range(args.count):
        with socket.create_connection((args.address, args.port), timeout=DEADLINE_S) as conn:
            ports.append(conn.getsockname()[1])
            conn.sendall(b"q" * args.request)
            sent += args.request
            received += recv_all(conn)
    return {"connections": args.count, "sent": sent, "received": received,
            "local_ports": ports}


# --- failures ----------------------------------------------------------------------------

def connect_errno(address: str, port: int) -> str:
    """Connect with the kernel's own timeout (no socket timeout); the errno name or 'ok'."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.connect((address, port))
            return "ok"
        except OSError as err:
            return errno.errorcode.get(err.errno, str(err.errno))


def fail(args) -> dict:
    """`count` connects in parallel; counts by errno name (ECONNREFUSED, ETIMEDOUT ...)."""
    with ThreadPoolExecutor(max_workers=min(args.count, 16)) as pool:
        outcomes = list(pool.map(lambda _: connect_errno(args.address, args.port),
                                 range(args.count)))
    return {"attempts": args.count,
            "errors": {name: outcomes.count(name) for name in set(outcomes)}}


# --- bulk --------------------------------------------------------------------------------

def sink(args) -> dict:
    """Accept `count` connections and read each until EOF or reset."""
    server = listen(args.address, args.port)
    received, errors = 0, []
    for _ in range(args.count):
        conn, _ = server.accept()
        with conn:
            try:
                while chunk := conn.recv(65536):
                    received += len(chunk)
            except OSError as err:
                errors.append(errno.errorcode.get(err.errno, str(err.errno)))
    return {"received": received, "errors": errors}


def bulk(args) -> dict:
    """Send `size` bytes, half-close, wait for the peer's close, then read TCP_INFO.

    Waiting for the peer's FIN means all our data and our FIN are acknowledged, so no
    retransmission of ours can follow the TCP_INFO reading.
    """
    block = b"b" * 65536
    with socket.create_connection((args.address, args.port), timeout=DEADLINE_S) as conn:
        left = args.size
        while left > 0:
            left -= conn.send(block[:min(left, len(block))])
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn)
        return {"sent": args.size, "total_retrans": total_retrans(conn)}


def abort(args) -> dict:
    """Connect, write `size` bytes, close with SO_LINGER 0 (the kernel sends a reset)."""
    conn = socket.create_connection((args.address, args.port), timeout=DEADLINE_S)
    conn.sendall(b"a" * args.size)
    time.sleep(0.2)  # let the peer read the data first, so the reset is all that is left
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    return {"sent": args.size, "resets": 1}


# --- a connection driven from stdin (opened before the agent starts) ---------------------

def hold(args) -> dict:
    """Connect and print {"connected"}; for each stdin line `send N` write N bytes;
    on `close` (or EOF) close and print the totals."""
    conn = socket.create_connection((args.address, args.port), timeout=DEADLINE_S)
    emit({"connected": True, "local_port": conn.getsockname()[1]})
    sent = 0
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["send"]:
            conn.sendall(b"h" * int(words[1]))
            sent += int(words[1])
            emit({"sent": sent})
        elif words[:1] == ["close"]:
            break
    conn.close()
    return {"sent": sent}


# --- churn -------------------------------------------------------------------------------

def churn(args) -> dict:
    """`count` short connections to a server in this process; the server closes first, so
    TIME_WAIT stays on its side and client ports are not exhausted."""
    server = socket.create_server((args.address, args.port), backlog=4096)
    server.settimeout(DEADLINE_S)
    accepted = [0]

    def serve():
        for _ in range(args.count):
            conn, _ = server.accept()
            conn.close()
            accepted[0] += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port, deadline, opened = server.getsockname()[1], time.monotonic() + DEADLINE_S, 0
    while opened < args.count and time.monotonic() < deadline:
        with socket.create_connection((args.address, port), timeout=DEADLINE_S) as conn:
            opened += 1
            recv_all(conn)
    thread.join(timeout=DEADLINE_S)
    return {"connections": opened, "accepted": accepted[0], "port": port}


# --- driving generators from tests ------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def argv(mode: str, **options) -> list[str]:
    """The argv of a generator: `argv("rr-client", address=..., count=3)`."""
    flags = [item for name, value in options.items()
             for item in (f"--{name.replace('_', '-')}", str(value))]
    return [sys.executable, "-m", "tests.support.traffic", mode, *flags]


class Generator:
    """A running generator subprocess; read its JSON lines, feed its stdin, reap it."""

    def __init__(self, command: list[str]):
        import subprocess
        self.proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self, timeout: float = 30) -> dict:
        """The next JSON line on stdout (raises with stderr if the process ends first)."""
        import select
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        text = self.proc.stdout.readline() if ready else ""
        if not text:
            self.proc.kill()
            raise RuntimeError(f"generator gave no output: {self.proc.stderr.read()[-2000:]}")
        return json.loads(text)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 60) -> dict:
        """The final JSON line, after the process exits successfully."""
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"generator failed ({self.proc.returncode}): {err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run(command: list[str], timeout: float = 60) -> dict:
    """Run a generator to completion; its final JSON result."""
    gen = Generator(command)
    try:
        return gen.result(timeout)
    finally:
        gen.stop()


# --- reading what a collector saw (kernel tests) -----------------------------------------

def matching(snapshot, **fields) -> list:
    """(key, stats) of snapshot.tcp whose key matches: direction, peer_address,
    server_port, local_address, family (model values or their strings), pid, comm, cgroup_id."""
    result = []
    for key, series in snapshot.tcp.items():
        values = {"direction": key.direction.value, "peer_address": key.peer_address,
                  "server_port": key.server_port, "local_address": key.local_address,
                  "family": key.family.value, "pid": key.workload.pid,
                  "comm": key.workload.comm, "cgroup_id": key.workload.cgroup_id}
        if all(values[name] == getattr(want, "value", want) for name, want in fields.items()):
            result.append((key, series.stats))
    return result


def collect_until(collector, done, timeout: float = 15.0):
    """Collect (fresh snapshot each time) until done(snapshot) or timeout; the last one.

    Sockets finish closing in the kernel after the generator exits (LAST_ACK, FIN_WAIT),
    so a test waits for its connections to be closed, bounded in time.
    """
    from otel_netreceiver.flows.model import Snapshot
    deadline = time.monotonic() + timeout
    while True:
        snapshot = Snapshot(time_ns=time.time_ns())
        collector.collect(snapshot)
        if done(snapshot) or time.monotonic() > deadline:
            return snapshot
        time.sleep(0.05)


MODES = {"rr-server": rr_server, "rr-client": rr_client, "fail": fail, "sink": sink,
         "bulk": bulk, "abort": abort, "hold": hold, "churn": churn}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="traffic with ground truth")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--request", type=int, default=100)
    parser.add_argument("--response", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1 << 20)
    args = parser.parse_args(argv)
    emit(MODES[args.mode](args))


if __name__ == "__main__":
    main()
