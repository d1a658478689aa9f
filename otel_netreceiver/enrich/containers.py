"""Workloads to container / pod resources, and processes to point attributes.

`ContainerResolver` is the `WorkloadResolver` for hosts that run containers: a workload
whose cgroup names a container reports under a Resource with `container.id` (plus
`container.runtime`, `k8s.pod.uid` and, with Kubernetes metadata on, the pod's names);
anything else stays under the host resource. Every flow carries the process name as the
point attribute `process.executable.name` (and, opted in, `process.pid` and
`process.command`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from otel_netreceiver.enrich.base import Attributes
from otel_netreceiver.enrich.cgroups import (
    CgroupPaths,
    ContainerInfo,
    parse_cgroup_path,
    parse_proc_cgroup,
)
from otel_netreceiver.flows.model import Workload

log = logging.getLogger(__name__)

_CACHE_LIMIT = 8192  # entries; cleared wholesale when full (workloads are few, churn is rare)


class PodMetadata(Protocol):
    """Kubernetes names for a container found in a cgroup (see enrich/kubernetes.py)."""

    def pod_attributes(self, info: ContainerInfo) -> Attributes: ...


def read_proc_file(pid: int, name: str) -> str:
    """The text of /proc/<pid>/<name>; "" when the process is gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
    except OSError:
        return ""


class ContainerResolver:
    """Cgroup id (or, on cgroup v1 hosts, the pid's /proc cgroup file) -> container resource."""

    def __init__(
        self,
        cgroup_paths: CgroupPaths | None,
        read_proc: Callable[[int, str], str] = read_proc_file,
        pods: PodMetadata | None = None,
        process_pid: bool = False,
        process_command: bool = False,
    ) -> None:
        self._paths = cgroup_paths
        self._read_proc = read_proc
        self._pods = pods
        self._process_pid = process_pid
        self._process_command = process_command
        self._containers: dict[tuple[int, int], ContainerInfo | None] = {}
        self._commands: dict[int, str] = {}

    def container(self, workload: Workload) -> ContainerInfo | None:
        """The container a workload runs in, or None for host processes."""
        key = (workload.cgroup_id, workload.pid)
        if key in self._containers:
            return self._containers[key]
        info, settled = self._lookup(workload)
        if settled:  # an unknown cgroup id may just be too new for the last walk: ask again
            if len(self._containers) >= _CACHE_LIMIT:
                self._containers.clear()
            self._containers[key] = info
        return info

    def _lookup(self, workload: Workload) -> tuple[ContainerInfo | None, bool]:
        path = self._paths.path(workload.cgroup_id) if self._paths and workload.cgroup_id else None
        info = parse_cgroup_path(path) if path else None
        if info is None and workload.pid > 0:
            # v1 hosts (or a cgroup gone from the v2 tree): the process's own view
            info = parse_cgroup_path(parse_proc_cgroup(self._read_proc(workload.pid, "cgroup")))
        return info, info is not None or path is not None or self._paths is None

    def resource(self, workload: Workload) -> Attributes:
        info = self.container(workload)
        if info is None:
            return {}
        attributes: Attributes = dict(info.attributes())
        if self._pods is not None:
            attributes.update(self._pods.pod_attributes(info))
        return attributes

    def point_attributes(self, workload: Workload) -> Attributes:
        attributes: Attributes = {}
        if workload.comm:
            attributes["process.executable.name"] = workload.comm
        if self._process_pid and workload.pid:
            attributes["process.pid"] = workload.pid
        if self._process_command and workload.pid:
            command = self._command(workload.pid)
            if command:
                attributes["process.command"] = command
        return attributes

    def _command(self, pid: int) -> str:
        if pid not in self._commands:
            if len(self._commands) >= _CACHE_LIMIT:
                self._commands.clear()
            self._commands[pid] = self._read_proc(pid, "cmdline").split("\0", 1)[0]
        return self._commands[pid]
