"""Connections to many (address, port) pairs, so the kernel sees many distinct flow keys.

`python -m bench.fanout serve PORT COUNT` listens on 0.0.0.0 ports PORT..PORT+COUNT-1 and
accepts and closes until killed; `python -m bench.fanout connect FIRST_ADDR ADDRS PORT
COUNT` connects once to every pair and prints {"connections": n} as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import selectors
import socket
import sys


def serve(port: int, count: int) -> None:
    selector = selectors.DefaultSelector()
    for offset in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port + offset))
        sock.listen(1024)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            try:
                conn, _ = key.fileobj.accept()
                conn.close()
            except BlockingIOError:
                pass


def connect(first: str, addresses: int, port: int, count: int) -> int:
    start, made = ipaddress.IPv4Address(first), 0
    for a in range(addresses):
        for offset in range(count):
            with socket.create_connection((str(start + a), port + offset), timeout=5):
                made += 1
    return made


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        made = connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        print(json.dumps({"connections": made}))
