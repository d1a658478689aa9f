"""Traffic generators from Debian (ab, wrk, iperf3, dnsperf), bounded in time and count.

Each function runs one generator inside the client host and returns its own totals,
primary metric first; these totals are the ground truth the cases are compared on.
"""

from __future__ import annotations

import json
import re
import subprocess

from tests.support.hosts import Host


def _run(argv: list[str], timeout: float) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[3] if argv[0] == 'ip' else argv[0]} failed "
                           f"({result.returncode}): {(result.stderr or result.stdout).strip()[-300:]}")
    return result.stdout


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if not match:
        raise RuntimeError(f"no '{pattern}' in generator output: {text.strip()[-300:]}")
    return float(match.group(1))


def ab(client: Host, url: str, concurrency: int, seconds: float, limit: int = 2_000_000) -> dict:
    """ApacheBench without keep-alive: one TCP connection per request."""
    argv = client.argv("ab", "-q", "-r", "-t", f"{seconds:g}", "-n", str(limit),
                       "-c", str(concurrency), url)
    out = _run(argv, timeout=seconds + 30)
    complete = _number(r"Complete requests:\s+(\d+)", out)
    return {"req/s": _number(r"Requests per second:\s+([\d.]+)", out),
            "connections": complete,
            "failed": _number(r"Failed requests:\s+(\d+)", out)}


def wrk(client: Host, url: str, connections: int, seconds: float, threads: int = 2) -> dict:
    """wrk with keep-alive: many requests per connection."""
    argv = client.argv("wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", url)
    out = _run(argv, timeout=seconds + 30)
    return {"req/s": _number(r"Requests/sec:\s+([\d.]+)", out)}


def iperf3(client: Host, server: str, seconds: float, port: int = 5201) -> dict:
    """One iperf3 TCP stream; throughput as the receiver counted it."""
    argv = client.argv("iperf3", "-c", server, "-p", str(port), "-t", f"{seconds:g}", "-J")
    report = json.loads(_run(argv, timeout=seconds + 30))
    return {"Gbit/s": report["end"]["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": report["end"]["sum_sent"].get("retransmits", 0)}


def dnsperf(client: Host, server: str, query_file: str, seconds: float, clients: int = 4) -> dict:
    """dnsperf at its maximum rate; queries/s and the queries it lost."""
    argv = client.argv("dnsperf", "-s", server, "-d", query_file, "-l", f"{seconds:g}",
                       "-c", str(clients), "-T", "1", "-t", "2")
    out = _run(argv, timeout=seconds + 30)
    return {"queries/s": _number(r"Queries per second:\s+([\d.]+)", out),
            "lost": _number(r"Queries lost:\s+(\d+)", out)}


def paced_ab(client: Host, url: str, rate: int, seconds: float, concurrency: int = 8) -> dict:
    """About `rate` connections/s: each second one `ab -n rate` burst, then idle to the tick."""
    import time

    made, start = 0, time.monotonic()
    for tick in range(int(seconds)):
        made += int(ab_count(client, url, rate, concurrency))
        idle = start + tick + 1 - time.monotonic()
        if idle > 0:
            time.sleep(idle)
    wall = time.monotonic() - start
    return {"conn/s": made / wall, "connections": made}


def ab_count(client: Host, url: str, count: int, concurrency: int) -> float:
    """Exactly `count` connections (one request each); returns the completed count."""
    argv = client.argv("ab", "-q", "-r", "-n", str(count), "-c", str(concurrency), url)
    out = _run(argv, timeout=count / 100 + 60)
    return _number(r"Complete requests:\s+(\d+)", out)
