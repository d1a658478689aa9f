"""Network namespaces: listing them and running code inside one.

`iter/tcp` visits only the sockets of the network namespace of the process that creates
the iterator, so the TCP collector runs it once inside each namespace when it first sees
it (to adopt connections older than the agent and find listeners); the per-interval
flush is one pass over the tracked sockets of every namespace (probes/tcp.py).
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def list_netns(proc: Path = Path("/proc"),
               named: Path = Path("/run/netns")) -> dict[tuple[int, int], str]:
    """One path per distinct network namespace, by its (st_dev, st_ino): processes'
    ns/net and `ip netns` names, the first path found for each.

    Runs every interval: plain os.listdir and os.stat, no pathlib glob (~6x the CPU).
    """
    result: dict[tuple[int, int], str] = {}
    candidates = [f"{proc}/{name}/ns/net" for name in os.listdir(proc) if name.isdigit()]
    if named.is_dir():
        candidates.extend(f"{named}/{name}" for name in os.listdir(named))
    for path in candidates:
        try:
            info = os.stat(path)
        except OSError:
            continue  # process exited, or not ours to see
        result.setdefault((info.st_dev, info.st_ino), path)
    return result


def tcp_sockets_in_use(proc_net: Path = Path("/proc/thread-self/net")) -> int:
    """Hashed TCP sockets (IPv4 + IPv6: listening, connecting, connected) of this thread's
    network namespace, from sockstat's `inuse` (TIME_WAIT is not in it)."""
    total = 0
    for name, label in (("sockstat", "TCP:"), ("sockstat6", "TCP6:")):
        try:
            lines = (proc_net / name).read_text().splitlines()
        except OSError:
            continue  # no IPv6
        for fields in (line.split() for line in lines if line.startswith(f"{label} ")):
            total += int(fields[fields.index("inuse") + 1])
    return total


def current_netns() -> tuple[int, int]:
    info = os.stat("/proc/thread-self/ns/net")
    return info.st_dev, info.st_ino


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {what}: {os.strerror(err)}")


@contextmanager
def inside(path: str):
    """Run the block with this thread in the network namespace at `path`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target, path)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own, "back to our own namespace")
    finally:
        os.close(own)
