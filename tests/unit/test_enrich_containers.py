"""ContainerResolver: cgroup ids and /proc fallbacks to resources; process attributes."""

from pathlib import Path

import pytest

from otel_netreceiver.enrich.cgroups import CgroupPaths, ContainerInfo
from otel_netreceiver.enrich.containers import ContainerResolver
from otel_netreceiver.flows.model import Workload

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroup"
CID = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
UID = "8a6e1c2d-4b3f-4e5a-9c7d-1f2e3d4c5b6a"
TREE = {
    1: "/",
    10: f"/system.slice/docker-{CID}.scope",
    11: f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
        f"/cri-containerd-{CID}.scope",
    12: "/system.slice/sshd.service",
}


class FakeProc:
    """/proc/<pid>/<name> from fixtures; counts reads."""

    def __init__(self, files):
        self.files, self.reads = files, 0

    def __call__(self, pid, name):
        self.reads += 1
        return self.files.get((pid, name), "")


class FakePods:
    def pod_attributes(self, info):
        return {"k8s.pod.name": "api-0"} if info.pod_uid == UID else {}


def _resolver(proc=None, **kwargs):
    tree = dict(TREE)
    return ContainerResolver(CgroupPaths(lambda: tree.items()), proc or FakeProc({}), **kwargs)


@pytest.mark.parametrize("cgroup_id, expected", [
    (10, {"container.id": CID, "container.runtime": "docker"}),
    (11, {"container.id": CID, "container.runtime": "containerd", "k8s.pod.uid": UID}),
    (12, {}),
    (1, {}),
])
def test_resource_from_cgroup_id(cgroup_id, expected):
    assert _resolver().resource(Workload(cgroup_id, 42, "nginx")) == expected


def test_pod_metadata_joins_the_container_resource():
    resolver = _resolver(pods=FakePods())
    assert resolver.resource(Workload(11, 42, "java"))["k8s.pod.name"] == "api-0"
    assert "k8s.pod.name" not in resolver.resource(Workload(10, 42, "java"))


def test_cgroup_v1_host_falls_back_to_the_pid_cgroup_file():
    proc = FakeProc({(77, "cgroup"): (FIXTURES / "proc_v1_docker_cgroupfs.txt").read_text()})
    resolver = ContainerResolver(None, proc)
    assert resolver.container(Workload(0, 77, "redis")) == ContainerInfo(CID, "docker")
    resolver.container(Workload(0, 77, "redis"))
    assert proc.reads == 1  # cached


def test_unknown_cgroup_id_is_not_cached_as_host():
    tree = {1: "/"}
    resolver = ContainerResolver(CgroupPaths(lambda: tree.items(), min_rewalk_s=0), FakeProc({}))
    assert resolver.resource(Workload(99, 5, "curl")) == {}
    tree[99] = f"/system.slice/docker-{CID}.scope"  # the cgroup appeared after the last walk
    assert resolver.resource(Workload(99, 5, "curl"))["container.id"] == CID


@pytest.mark.parametrize("options, expected", [
    ({}, {"process.executable.name": "curl"}),
    ({"process_pid": True}, {"process.executable.name": "curl", "process.pid": 42}),
    ({"process_command": True}, {"process.executable.name": "curl", "process.command": "/usr/bin/curl"}),
])
def test_point_attributes(options, expected):
    proc = FakeProc({(42, "cmdline"): "/usr/bin/curl\0-s\0http://x\0"})
    assert _resolver(proc, **options).point_attributes(Workload(12, 42, "curl")) == expected


def test_point_attributes_without_a_process_name():
    assert _resolver(process_pid=True).point_attributes(Workload(12, 0, "")) == {}
