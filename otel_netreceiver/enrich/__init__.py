"""Enrichment: workloads to container / Kubernetes resources, peers to names, host to cloud.

`build_enricher(EnrichConfig(...), host_resource, peers=[...])` is the one entry point
the agent needs: it detects the cloud (bounded in time), starts the Kubernetes pod watch
when enabled, and returns an `Enricher` whose `shutdown()` stops the watch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from otel_netreceiver.enrich.base import Attributes, Enricher, PeerResolver
from otel_netreceiver.enrich.cgroups import CgroupPaths, cgroup2_mount, walk_cgroup2
from otel_netreceiver.enrich.cloud import detect_cloud
from otel_netreceiver.enrich.containers import ContainerResolver

log = logging.getLogger(__name__)

NODE_NAME_ENV = "K8S_NODE_NAME"


@dataclass(frozen=True)
class KubernetesConfig:
    """Pod metadata from the API server (YAML: `enrich.kubernetes.*`)."""

    enabled: bool = False
    node_name: str = ""  # default: $K8S_NODE_NAME (downward API spec.nodeName)
    kubeconfig: str = ""  # default: the in-cluster service account
    labels: tuple[str, ...] = ()  # pod label keys to copy, "*" for all
    annotations: tuple[str, ...] = ()
    sync_timeout_s: float = 5.0  # how long start-up waits for the first pod list


@dataclass(frozen=True)
class EnrichConfig:
    """What enrichment does (YAML: `enrich.*`; see docs/resources.md)."""

    containers: bool = True
    peers: bool = True
    process_pid: bool = False
    process_command: bool = False
    # Opt-in, as with the Collector's resourcedetection processor: off-cloud hosts never
    # send anything to link-local metadata addresses unless asked to.
    cloud_detectors: tuple[str, ...] = ()
    cloud_timeout_s: float = 2.0
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)


def build_enricher(
    config: EnrichConfig,
    host_resource: Attributes,
    peers: Sequence[PeerResolver] = (),
    *,
    detect: Callable[..., Attributes] = detect_cloud,
    mounts: Callable[[], str] = lambda: Path("/proc/self/mounts").read_text(),
) -> Enricher:
    """The Enricher for `config`; `peers` (e.g. the DNS-name resolver) run after ours.

    Cloud attributes fill what `host_resource` leaves unset: host.name and host.id from
    the system (and anything from OTEL_RESOURCE_ATTRIBUTES) win, as with the Collector's
    resourcedetection order [env, system, <cloud>].
    """
    resource = dict(host_resource)
    if config.cloud_detectors:
        for key, value in detect(config.cloud_detectors, config.cloud_timeout_s).items():
            resource.setdefault(key, value)
    pods, stops = _kubernetes(config.kubernetes, resource)
    workloads = _workloads(config, pods, mounts) if config.containers else None
    resolvers: list[PeerResolver] = []
    if config.peers and workloads is not None:
        from otel_netreceiver.enrich.peers import WorkloadPeers
        resolvers.append(WorkloadPeers(workloads, pods))
    return Enricher(resource, workloads, [*resolvers, *peers], on_shutdown=stops)


def _workloads(config: EnrichConfig, pods, mounts: Callable[[], str]) -> ContainerResolver:
    root = cgroup2_mount(mounts())
    paths = CgroupPaths(lambda: walk_cgroup2(root)) if root else None
    return ContainerResolver(paths, pods=pods, process_pid=config.process_pid,
                             process_command=config.process_command)


def _kubernetes(config: KubernetesConfig, resource: Attributes):
    """(pod store, [watch shutdown]) when enabled and reachable, else (None, [])."""
    if not config.enabled:
        return None, []
    from otel_netreceiver.enrich.kubernetes import core_api, start_pod_metadata

    node = config.node_name or os.environ.get(NODE_NAME_ENV, "")
    if not node:
        log.warning("kubernetes metadata off: set enrich.kubernetes.node_name or $%s "
                    "(a cluster-wide pod watch is not supported)", NODE_NAME_ENV)
        return None, []
    try:
        api = core_api(config.kubeconfig)
    except Exception as err:  # noqa: BLE001 - config errors come in many types
        log.warning("kubernetes metadata off: cannot configure the API client: %s", err)
        return None, []
    resource.setdefault("k8s.node.name", node)
    store, watcher = start_pod_metadata(api, node, config.labels, config.annotations,
                                        config.sync_timeout_s)
    return store, [watcher.shutdown]
