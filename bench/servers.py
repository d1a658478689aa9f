"""Servers the workloads talk to, each inside a namespace host, with its own temp files.

Nothing here touches the system's nginx or dnsmasq configuration or services: each
server gets a private prefix directory and is stopped (and its files removed) on exit.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.hosts import Host, host_pair
from tests.support.processes import stop

PREFIX, SUBNET = "nre", "198.18.50"

NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {address}:{port} backlog=4096 reuseport;
        location / {{ return 200 "ok\\n"; }}
        location = /nre-status {{ stub_status; }}
    }}
}}
"""

CLIENT_SYSCTLS = {"net.ipv4.ip_local_port_range": "1024 65000", "net.ipv4.tcp_tw_reuse": "1"}
SERVER_SYSCTLS = {"net.core.somaxconn": "4096", "net.ipv4.tcp_max_syn_backlog": "8192"}


@contextmanager
def hosts():
    """The client and server namespace hosts, tuned for connection churn."""
    with host_pair(PREFIX, SUBNET) as pair:
        for host, sysctls in ((pair.client, CLIENT_SYSCTLS), (pair.server, SERVER_SYSCTLS)):
            for key, value in sysctls.items():
                host.run("sysctl", "-q", "-w", f"{key}={value}")
        yield pair


@contextmanager
def process(argv: list[str], address: str, port: int, proto: str = "tcp", log: Path | None = None):
    """A server process, ready once `address:port` accepts (or is bound, for udp)."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(proc, argv, address, port, proto)
        yield proc
    finally:
        stop(proc, timeout=10)


def _wait_listening(proc, argv, address: str, port: int, proto: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    flag = "-t" if proto == "tcp" else "-u"
    netns = argv[3] if argv[:3] == ["ip", "netns", "exec"] else None
    ss = (["ip", "netns", "exec", netns] if netns else []) + ["ss", "-Hln", flag]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[3 if netns else 0]} exited at start with {proc.returncode}")
        if f"{address}:{port}" in subprocess.run(ss, capture_output=True, text=True).stdout:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {address}:{port} after {timeout:.0f} s")


@dataclass
class Served:
    """A running server: where to reach it and its (master) process id."""

    url: str
    pid: int


@contextmanager
def nginx(host: Host, port: int = 80, workers: int = 1):
    """nginx serving a 3-byte body on host.address:port from a private temp prefix."""
    with tempfile.TemporaryDirectory(prefix="nre-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, dir=tmp, address=host.address, port=port))
        argv = host.argv("nginx", "-p", tmp, "-c", str(conf), "-e", f"{tmp}/error.log")
        with process(argv, host.address, port, log=Path(tmp) / "stdout.log") as proc:
            yield Served(f"http://{host.address}:{port}/", proc.pid)


@contextmanager
def iperf3(host: Host, port: int = 5201):
    """An iperf3 server on host.address:port."""
    argv = host.argv("iperf3", "-s", "-B", host.address, "-p", str(port))
    with process(argv, host.address, port):
        yield host.address


@contextmanager
def dnsmasq(host: Host, name: str = "bench.test", answer: str = "198.18.50.99"):
    """dnsmasq answering `name` with `answer` on host.address:53 (no upstream, no cache misses)."""
    argv = host.argv("dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
                     f"--listen-address={host.address}", "--port=53", "--cache-size=0",
                     f"--address=/{name}/{answer}", "--dns-forward-max=10000", "--user=root")
    with process(argv, host.address, 53, proto="udp"):
        yield host.address


def nginx_accepts(client: Host, url: str) -> int:
    """nginx's count of accepted connections (stub_status), read from the client host.

    The reading itself is one more accepted connection, counted in the value returned.
    """
    out = client.run("curl", "-sf", url.rstrip("/") + "/nre-status").stdout
    return int(out.splitlines()[2].split()[0])  # "accepts handled requests" numbers line


def free_port() -> int:
    """A free TCP port on loopback (for the agent's local export sink)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
