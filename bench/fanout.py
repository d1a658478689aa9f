"""Connections to many (address, port) pairs, so the kernel sees many distinct flow keys.

`python -m bench.fanout serve PORT COUNT` listens on 0.0.0.0 ports PORT..PORT+COUNT-1,
accepts, and reads (and drops) whatever arrives until the peer closes or it is killed.
`python -m bench.fanout connect FIRST_ADDR ADDRS PORT COUNT` connects to every pair,
prints {"connections": n} as JSON and keeps them open; then each line `poke K` on stdin
sends one byte on every K-th connection (K=0: none) and answers `ok`; EOF closes them all.
"""

from __future__ import annotations

import ipaddress
import json
import resource
import selectors
import socket
import sys


def _more_files(wanted: int = 200_000) -> None:
    """Allow `wanted` descriptors (root may raise the hard limit): up to 50k connections
    stay open at each end."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, wanted), max(hard, wanted)))
    except (ValueError, OSError):  # not root: as many as the hard limit allows
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(port: int, count: int) -> None:
    _more_files()
    selector = selectors.DefaultSelector()
    listeners = set()
    for offset in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port + offset))
        sock.listen(1024)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        listeners.add(sock)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            try:
                if sock in listeners:
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ)
                elif not sock.recv(4096):
                    selector.unregister(sock)
                    sock.close()
            except (BlockingIOError, ConnectionError):
                pass


def connect(first: str, addresses: int, port: int, count: int) -> list[socket.socket]:
    _more_files()
    start, held = ipaddress.IPv4Address(first), []
    for a in range(addresses):
        for offset in range(count):
            held.append(socket.create_connection((str(start + a), port + offset), timeout=5))
    return held


def poke(held: list[socket.socket], every: int) -> None:
    for sock in held[::every] if every > 0 else []:
        sock.sendall(b"x")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        connections = connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        print(json.dumps({"connections": len(connections)}), flush=True)
        for line in sys.stdin:
            poke(connections, int(line.split()[1]))
            print("ok", flush=True)
        for sock in connections:
            sock.close()
