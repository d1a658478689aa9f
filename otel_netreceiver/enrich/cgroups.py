"""Cgroup paths to container identity, and cgroup ids to cgroup paths.

Container runtimes name cgroups in a few known ways (docker, containerd, CRI-O, podman;
systemd or cgroupfs driver; cgroup v1 or v2). `parse_cgroup_path` reads a path from the
deepest component upwards and returns what the path shows: container id, runtime and,
for Kubernetes pods, the pod uid. `CgroupPaths` maps the kernel's cgroup v2 id (the
inode of the cgroup directory) to its path by walking the cgroup2 tree; the walk is
injected so unit tests need no cgroupfs.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEX64 = r"([0-9a-f]{64})"
# component regex -> runtime; the conmon helpers (crio-conmon-, libpod-conmon-) never match
_SCOPES = [
    (re.compile(rf"^docker-{_HEX64}\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-{_HEX64}\.scope$"), "containerd"),
    (re.compile(rf"^crio-{_HEX64}(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"^libpod-{_HEX64}(?:\.scope)?$"), "podman"),
    (re.compile(rf"^nerdctl-{_HEX64}\.scope$"), "containerd"),
]
_BARE = re.compile(rf"^{_HEX64}$")
# kubepods-burstable-pod<uid with _>.slice (systemd) or pod<uid with -> (cgroupfs)
_POD_SYSTEMD = re.compile(r"^(?:kubelet-)?kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$")
_POD_CGROUPFS = re.compile(r"^pod([0-9a-f-]{36})$")
# parents whose bare 64-hex children are containers of a known runtime
_BARE_PARENTS = {"docker": "docker", "libpod_parent": "podman"}


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What a cgroup path shows: container id, runtime ("" if unknown), pod uid ("" if none)."""

    container_id: str
    runtime: str = ""
    pod_uid: str = ""

    def attributes(self) -> dict[str, str]:
        """Resource attributes in OpenTelemetry semantic conventions."""
        attributes = {"container.id": self.container_id}
        if self.runtime:
            attributes["container.runtime"] = self.runtime
        if self.pod_uid:
            attributes["k8s.pod.uid"] = self.pod_uid
        return attributes


def parse_cgroup_path(path: str) -> ContainerInfo | None:
    """The container a cgroup path belongs to, or None for host cgroups."""
    parts = [p for p in path.strip().split("/") if p]
    pod_uid = _pod_uid(parts)
    for index in range(len(parts) - 1, -1, -1):
        found = _container_at(parts, index, bool(pod_uid))
        if found:
            container_id, runtime = found
            return ContainerInfo(container_id, runtime, pod_uid)
    return None


def _container_at(parts: list[str], index: int, in_pod: bool) -> tuple[str, str] | None:
    name = parts[index]
    for pattern, runtime in _SCOPES:
        match = pattern.match(name)
        if match:
            return match.group(1), runtime
    match = _BARE.match(name)
    if match and index > 0:
        parent = parts[index - 1]
        if parent in _BARE_PARENTS:
            return match.group(1), _BARE_PARENTS[parent]
        if in_pod and (_POD_CGROUPFS.match(parent) or _POD_SYSTEMD.match(parent)):
            return match.group(1), ""  # cgroupfs driver: the path does not name the runtime
    return None


def _pod_uid(parts: list[str]) -> str:
    for name in parts:
        match = _POD_SYSTEMD.match(name)
        if match:
            return match.group(1).replace("_", "-")
        match = _POD_CGROUPFS.match(name)
        if match:
            return match.group(1)
    return ""


def parse_proc_cgroup(text: str) -> str:
    """The most telling path in a /proc/<pid>/cgroup file (v2 line, else a v1 controller).

    On hybrid and v1 hosts the v2 line may be "/" while v1 controllers show the container,
    so the first path that names a container wins, then the v2 path.
    """
    v2_path, paths = "/", []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        if fields[0] == "0" and fields[1] == "":
            v2_path = fields[2]
        paths.append(fields[2])
    for path in [v2_path, *paths]:
        if parse_cgroup_path(path):
            return path
    return v2_path


def cgroup2_mount(mounts_text: str) -> Path | None:
    """The cgroup v2 mount point from /proc/self/mounts text, or None on v1-only hosts."""
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def walk_cgroup2(root: Path) -> Iterable[tuple[int, str]]:
    """(inode, path relative to the root as "/a/b") for every cgroup directory below root."""
    yield os.stat(root).st_ino, "/"
    for directory, subdirs, _ in os.walk(root):
        for name in subdirs:
            full = os.path.join(directory, name)
            try:
                inode = os.stat(full).st_ino
            except OSError:
                continue  # removed while walking
            yield inode, "/" + os.path.relpath(full, root)


class CgroupPaths:
    """cgroup v2 id -> path, from a cached walk of the tree, re-walked on a miss.

    Re-walks are rate-limited (`min_rewalk_s`) so a flood of unknown ids (processes in
    cgroups that vanished) costs at most one walk per period. Each walk replaces the
    cache, so ids of removed cgroups are forgotten.
    """

    def __init__(
        self,
        walk: Callable[[], Iterable[tuple[int, str]]],
        min_rewalk_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._walk = walk
        self._min_rewalk_s = min_rewalk_s
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._last_walk: float | None = None
        self.walks = 0

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup's path relative to the cgroup2 root, or None if unknown."""
        found = self._paths.get(cgroup_id)
        if found is None and self._may_rewalk():
            self._rewalk()
            found = self._paths.get(cgroup_id)
        return found

    def __contains__(self, cgroup_id: int) -> bool:
        """Whether the last walk saw this id (no new walk)."""
        return cgroup_id in self._paths

    def _may_rewalk(self) -> bool:
        now = self._clock()
        return self._last_walk is None or now - self._last_walk >= self._min_rewalk_s

    def _rewalk(self) -> None:
        self._last_walk = self._clock()
        self.walks += 1
        try:
            self._paths = dict(self._walk())
        except OSError as err:
            log.warning("cannot walk the cgroup2 tree: %s", err)
