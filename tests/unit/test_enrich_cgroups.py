"""Cgroup paths of every runtime and driver, v1 and v2, to container identity."""

from pathlib import Path

import pytest
import yaml

from otel_netreceiver.enrich.cgroups import (
    CgroupPaths,
    ContainerInfo,
    cgroup2_mount,
    parse_cgroup_path,
    parse_proc_cgroup,
    walk_cgroup2,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroup"
CONTAINER_ID = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
POD_UID = "8a6e1c2d-4b3f-4e5a-9c7d-1f2e3d4c5b6a"
SAMPLES = yaml.safe_load((FIXTURES / "paths.yaml").read_text())


def _expand(path: str) -> str:
    return path.format(C=CONTAINER_ID, U=POD_UID, US=POD_UID.replace("-", "_"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["name"] for s in SAMPLES])
def test_parse_cgroup_path(sample):
    info = parse_cgroup_path(_expand(sample["path"]))
    if "runtime" not in sample:
        assert info is None
        return
    assert info == ContainerInfo(CONTAINER_ID, sample["runtime"], POD_UID if sample.get("pod") else "")


def test_samples_cover_every_runtime_driver_and_version():
    covered = {(s["name"].split("-")[0], s["version"]) for s in SAMPLES if "runtime" in s}
    for runtime in ("docker", "containerd", "crio", "podman"):
        assert {(runtime, 1), (runtime, 2)} <= covered, runtime
    names = " ".join(s["name"] for s in SAMPLES)
    for part in ("systemd", "cgroupfs", "besteffort", "burstable", "guaranteed"):
        assert part in names


@pytest.mark.parametrize("qos", ["besteffort", "burstable", "guaranteed"])
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_every_kubernetes_qos_class_and_driver_is_sampled(qos, driver):
    assert any(qos in s["name"] and driver in s["name"] and s.get("pod") for s in SAMPLES)


def test_attributes_follow_semantic_conventions():
    info = ContainerInfo(CONTAINER_ID, "containerd", POD_UID)
    assert info.attributes() == {
        "container.id": CONTAINER_ID, "container.runtime": "containerd", "k8s.pod.uid": POD_UID,
    }
    assert ContainerInfo(CONTAINER_ID).attributes() == {"container.id": CONTAINER_ID}


@pytest.mark.parametrize("fixture, expected", [
    ("proc_v1_docker_cgroupfs.txt", ContainerInfo(CONTAINER_ID, "docker")),
    ("proc_v1_k8s_cgroupfs.txt", ContainerInfo(CONTAINER_ID, "", POD_UID)),
    ("proc_v2_crio_systemd.txt", ContainerInfo(CONTAINER_ID, "cri-o", POD_UID)),
    ("proc_hybrid_host.txt", None),
])
def test_parse_proc_cgroup(fixture, expected):
    path = parse_proc_cgroup((FIXTURES / fixture).read_text())
    assert parse_cgroup_path(path) == expected


def test_proc_cgroup_of_host_process_is_its_v2_path():
    assert parse_proc_cgroup((FIXTURES / "proc_hybrid_host.txt").read_text()) == \
        "/user.slice/user-0.slice/session-1.scope"


@pytest.mark.parametrize("mounts, expected", [
    ("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n", Path("/sys/fs/cgroup")),
    ("tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
     Path("/sys/fs/cgroup/unified")),
    ("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n", None),
])
def test_cgroup2_mount(mounts, expected):
    assert cgroup2_mount(mounts) == expected


class FakeTree:
    """A cgroup tree whose content the test changes; counts walks."""

    def __init__(self, entries):
        self.entries = dict(entries)

    def __call__(self):
        return list(self.entries.items())


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_cgroup_paths_rewalks_on_miss_and_forgets_vanished_cgroups():
    tree, clock = FakeTree({1: "/", 7: "/system.slice/a.scope"}), Clock()
    paths = CgroupPaths(tree, min_rewalk_s=1.0, clock=clock)
    assert paths.path(7) == "/system.slice/a.scope"
    tree.entries = {1: "/", 9: "/system.slice/b.scope"}  # a.scope removed, b.scope created
    assert paths.path(9) is None  # within the rate limit: no new walk yet
    clock.now += 1.0
    assert paths.path(9) == "/system.slice/b.scope"
    assert paths.path(7) is None
    assert paths.walks == 2


def test_cgroup_paths_rate_limits_walks_for_unknown_ids():
    clock = Clock()
    paths = CgroupPaths(FakeTree({1: "/"}), min_rewalk_s=5.0, clock=clock)
    for cgroup_id in range(100, 200):
        assert paths.path(cgroup_id) is None
    assert paths.walks == 1


def test_cgroup_paths_survives_walk_errors():
    def broken():
        raise PermissionError("denied")

    assert CgroupPaths(broken).path(1) is None


def test_walk_cgroup2_yields_inodes_and_relative_paths(tmp_path):
    (tmp_path / "system.slice" / "docker-x.scope").mkdir(parents=True)
    (tmp_path / "system.slice" / "cgroup.procs").write_text("")  # files are not cgroups
    walked = dict(walk_cgroup2(tmp_path))
    assert sorted(walked.values()) == ["/", "/system.slice", "/system.slice/docker-x.scope"]
    assert walked[(tmp_path / "system.slice").stat().st_ino] == "/system.slice"
