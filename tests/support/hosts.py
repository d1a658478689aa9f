"""Test hosts on one machine: network namespaces joined by veth, and emulated containers.

A `HostPair` is two namespaces ("client" and "server") on one /30-ish link from the
benchmarking range 198.18.0.0/15. An `EmulatedContainer` is a cgroup v2 directory named
as a container runtime names it; processes are placed in it before they enter a
namespace (`ip netns exec` remounts /sys, so the cgroup must be joined first).
Everything made here is removed on exit, even when the test fails.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, capturing output; raise with its stderr when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def cgroup2_root() -> Path:
    """The cgroup v2 mount: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise RuntimeError("no cgroup v2 mount")


@dataclass
class Host:
    """One namespace host: its name and address on the link."""

    netns: str
    address: str

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.netns, *argv, check=check)

    def argv(self, *argv: str) -> list[str]:
        """The argv that runs a command inside this host (for Popen)."""
        return ["ip", "netns", "exec", self.netns, *argv]


@dataclass
class HostPair:
    client: Host
    server: Host


@contextmanager
def host_pair(prefix: str, subnet: str = "198.18.0"):
    """Two namespace hosts, `<subnet>.1` (client) and `<subnet>.2` (server), joined by veth.

    `prefix` keeps parallel test runs apart (namespace and link names start with it);
    `subnet` is the first three octets of a /24 inside 198.18.0.0/15.
    """
    tag = f"{prefix}{secrets.token_hex(2)}"
    client, server = Host(f"{tag}c", f"{subnet}.1"), Host(f"{tag}s", f"{subnet}.2")
    try:
        for host in (client, server):
            sh("ip", "netns", "add", host.netns)
            host.run("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", f"{tag}a", "netns", client.netns, "type", "veth",
           "peer", "name", f"{tag}b", "netns", server.netns)
        for host, link in ((client, f"{tag}a"), (server, f"{tag}b")):
            host.run("ip", "addr", "add", f"{host.address}/24", "dev", link)
            host.run("ip", "link", "set", link, "up")
        yield HostPair(client, server)
    finally:
        for host in (client, server):
            sh("ip", "netns", "del", host.netns, check=False)


RUNTIME_PATHS = {
    # runtime -> cgroup path template below the cgroup v2 root; {id} is 64 hex digits
    "docker": "system.slice/docker-{id}.scope",
    "containerd": "kubepods.slice/kubepods-besteffort.slice/"
                  "kubepods-besteffort-pod{pod_}.slice/cri-containerd-{id}.scope",
    "crio": "kubepods.slice/kubepods-burstable.slice/"
            "kubepods-burstable-pod{pod_}.slice/crio-{id}.scope",
    "podman": "machine.slice/libpod-{id}.scope",
}


@dataclass
class EmulatedContainer:
    runtime: str
    container_id: str
    pod_uid: str
    path: Path  # absolute cgroup directory

    @property
    def cgroup_id(self) -> int:
        """The cgroup v2 id the kernel reports: the directory's inode number."""
        return os.stat(self.path).st_ino

    def argv(self, *argv: str) -> list[str]:
        """An argv that joins this cgroup, then execs `argv` (e.g. a Host.argv(...))."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *argv]


@contextmanager
def emulated_container(runtime: str = "docker"):
    """A cgroup v2 directory named as `runtime` names its containers; removed on exit."""
    container_id = secrets.token_hex(32)
    pod_uid = "-".join(secrets.token_hex(n) for n in (4, 2, 2, 2, 6))
    relative = RUNTIME_PATHS[runtime].format(id=container_id, pod_=pod_uid.replace("-", "_"))
    path = cgroup2_root() / relative
    created = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield EmulatedContainer(runtime, container_id, pod_uid, path)
    finally:
        for directory in created:  # deepest first
            _remove_cgroup(directory)


def _remove_cgroup(directory: Path) -> None:
    """Move leftover processes to the root, then remove the (empty) cgroup directory."""
    if not directory.exists():
        return
    root = cgroup2_root()
    for pid in (directory / "cgroup.procs").read_text().split():
        try:
            (root / "cgroup.procs").write_text(pid)
        except OSError:
            pass  # already exited
    try:
        directory.rmdir()
    except OSError:
        # Still holds another test's cgroup (parallel runs share system.slice ...): leave
        # it. rmtree here would remove that test's still-empty container directory.
        pass
