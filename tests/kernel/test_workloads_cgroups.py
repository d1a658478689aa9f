"""Cgroup resolution against the real cgroupfs: ids follow cgroups as they come and go,
and on cgroup v1 hierarchies the pid's /proc cgroup file names the container.

Emulated containers only (directories named as runtimes name them); every directory made
here is removed, with its processes moved out first, even when a test fails.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import pytest

from otel_netreceiver.enrich.cgroups import CgroupPaths, ContainerInfo, walk_cgroup2
from otel_netreceiver.enrich.containers import ContainerResolver
from otel_netreceiver.flows.model import Workload
from tests.support.hosts import cgroup2_root, emulated_container

pytestmark = pytest.mark.kernel


def test_cgroup_ids_follow_cgroups_as_they_come_and_go():
    root = cgroup2_root()
    paths = CgroupPaths(lambda: walk_cgroup2(root), min_rewalk_s=0)
    resolver = ContainerResolver(paths)
    with emulated_container("crio") as first:
        first_id = first.cgroup_id
        info = resolver.container(Workload(first_id, 0, ""))
        assert info == ContainerInfo(first.container_id, "cri-o", first.pod_uid)
    with emulated_container("podman") as second:  # created after the last walk
        walks = paths.walks
        assert resolver.resource(Workload(second.cgroup_id, 0, "")) == {
            "container.id": second.container_id, "container.runtime": "podman"}
        assert paths.walks == walks + 1  # the miss caused one new walk ...
        assert first_id not in paths  # ... which forgot the removed cgroup


def _v1_memory_root() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup" and "memory" in fields[3].split(","):
            return Path(fields[1])
    return None


@pytest.mark.skipif(_v1_memory_root() is None, reason="no cgroup v1 memory hierarchy on this host")
def test_cgroup_v1_container_found_through_proc():
    """A docker (cgroupfs driver) container on a v1 hierarchy: /proc/<pid>/cgroup tells."""
    container_id = secrets.token_hex(32)
    directory = _v1_memory_root() / "docker" / container_id
    made = [d for d in (directory.parent, directory) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["sh", "-c", f"echo $$ > {directory}/cgroup.procs && exec sleep 30"])
    try:
        _wait_until_member(directory, process.pid)
        resolver = ContainerResolver(None)  # no v2 tree: a v1 host
        workload = Workload(0, process.pid, "sleep")
        assert resolver.resource(workload) == {"container.id": container_id,
                                               "container.runtime": "docker"}
    finally:
        process.kill()
        process.wait()
        for made_dir in reversed(made):
            made_dir.rmdir()


def _wait_until_member(directory: Path, pid: int) -> None:
    for _ in range(200):
        if str(pid) in (directory / "cgroup.procs").read_text().split():
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never joined {directory}")
