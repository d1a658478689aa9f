"""DNS peers for tests: dnsmasq in a namespace host, and a client with ground truth.

`dnsmasq(host, records)` runs Debian's dnsmasq inside a namespace host, authoritative
for `.test` (known names answer, any other `.test` name is NXDOMAIN), and stops it on
exit. The client (`python -m tests.support.dns ...`, run inside a host and a cgroup)
sends queries one at a time and prints, as JSON, what it received: the truth the agent
must reproduce.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import stop

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")


@dataclass
class DnsServer:
    address: str
    port: int
    process: subprocess.Popen


@contextmanager
def dnsmasq(host, records: dict[str, str], port: int = 53, ttl: int = 300,
            address: str | None = None):
    """dnsmasq on `address` (default host.address) answering `records` in `.test`.

    `records` maps a name to an address or a list of addresses.
    """
    address = address or host.address
    argv = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--pid-file=", "--user=root", "--group=root", "--bind-interfaces",
            f"--listen-address={address}", f"--port={port}", "--local=/test/",
            f"--local-ttl={ttl}", "--cache-size=0", "--log-facility=/dev/null"]
    argv += [f"--host-record={name},{address}" for name, addresses in records.items()
             for address in ([addresses] if isinstance(addresses, str) else addresses)]
    process = subprocess.Popen(host.argv(*argv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_answering(host, port, process)
        yield DnsServer(address, port, process)
    finally:
        stop(process, timeout=5)


def _wait_until_answering(host, port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {process.stderr.read().strip()}")
        probe = host.run("ss", "-Huln", f"sport = :{port}", check=False)
        if probe.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("dnsmasq did not start listening within 10 s")


def add_ipv6(hosts, prefix: str) -> tuple[str, str]:
    """Give both hosts of a HostPair an IPv6 address `<prefix>::1` / `<prefix>::2` (no DAD)."""
    addresses = f"{prefix}::1", f"{prefix}::2"
    for host, address in zip((hosts.client, hosts.server), addresses):
        link = host.run("ip", "-o", "link", "show", "type", "veth").stdout.split(":")[1]
        host.run("ip", "-6", "addr", "add", f"{address}/64", "dev", link.strip().split("@")[0],
                 "nodad")
    return addresses


def client_argv(server: str, names: list[str], count: int, *, port: int = 53,
                timeout: float = 2.0, tcp: bool = False, connect_port: int = 0,
                udp_port: int = 0, rdtype: str = "A") -> list[str]:
    """The argv of the query client (to wrap in Host.argv / EmulatedContainer.argv)."""
    argv = [PYTHON, "-m", "tests.support.dns", "--server", server, "--port", str(port),
            "--count", str(count), "--timeout", str(timeout), "--rdtype", rdtype, *names]
    if tcp:
        argv.append("--tcp")
    if connect_port:
        argv += ["--connect-port", str(connect_port)]
    if udp_port:
        argv += ["--udp-port", str(udp_port)]
    return argv


def run_client(argv: list[str], timeout: float = 120) -> dict:
    """Run a client argv (already wrapped) and return its JSON report."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"dns client failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


# --- the client (runs as a separate process inside a namespace host) ---------------------

def _query_once(message, server: str, port: int, timeout: float, tcp: bool):
    import dns.exception
    import dns.query

    try:
        if tcp:
            return dns.query.tcp(message, server, port=port, timeout=timeout)
        return dns.query.udp(message, server, port=port, timeout=timeout)
    except (dns.exception.Timeout, TimeoutError, OSError):
        return None


def _connect(address: str, port: int) -> bool:
    """A TCP connection to a resolved address, 100 bytes sent: the flow to be named."""
    try:
        with socket.create_connection((address, port), timeout=2) as conn:
            conn.sendall(b"x" * 100)
        return True
    except OSError:
        return False


def _comm() -> str:
    with open("/proc/self/comm") as handle:
        return handle.read().strip()


def _send_datagram(address: str, port: int) -> bool:
    """One 100-byte datagram to a resolved address: the UDP flow to be named."""
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"u" * 100, (address, port))
        return True
    except OSError:
        return False


def client_main(argv: list[str]) -> int:
    import dns.message
    import dns.rcode

    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--tcp", action="store_true")
    parser.add_argument("--connect-port", type=int, default=0)
    parser.add_argument("--udp-port", type=int, default=0)
    parser.add_argument("--rdtype", default="A")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    answered, timeouts, connected, sent = Counter(), Counter(), Counter(), Counter()
    for _ in range(args.count):
        for name in args.names:
            reply = _query_once(dns.message.make_query(name, args.rdtype), args.server, args.port,
                                args.timeout, args.tcp)
            if reply is None:
                timeouts[name] += 1
                continue
            answered[f"{name} {dns.rcode.to_text(reply.rcode()).lower()}"] += 1
            addresses = [r.address for rrset in reply.answer for r in rrset
                         if rrset.rdtype in (1, 28)]  # A, AAAA
            if args.connect_port and addresses and _connect(addresses[0], args.connect_port):
                connected[f"{name} {addresses[0]}"] += 1
            if args.udp_port and addresses and _send_datagram(addresses[0], args.udp_port):
                sent[f"{name} {addresses[0]}"] += 1
    json.dump({"answered": answered, "timeouts": timeouts, "connected": connected,
               "datagrams": sent, "pid": os.getpid(), "comm": _comm()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
