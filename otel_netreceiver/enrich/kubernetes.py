"""Kubernetes pod metadata from a node-scoped pod watch.

`PodWatcher` lists the pods of one node, then watches them with the official
`kubernetes` client (in-cluster service account or a kubeconfig), relisting when the
watch expires (410 Gone) and reconnecting with backoff on errors. `PodStore` keeps what
it learned and answers two questions: the names of a container's pod (resource
attributes, as the Collector's k8sattributes processor writes them) and which pod owns
an IP (peer attributes).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from otel_netreceiver.enrich.base import Attributes
from otel_netreceiver.enrich.cgroups import ContainerInfo

log = logging.getLogger(__name__)

_CRONJOB_JOB = re.compile(r"^(.+)-\d{8,}$")  # jobs a CronJob creates: <cronjob>-<minutes>
_RUNTIME_PREFIXES = {"containerd": "containerd", "cri-o": "cri-o", "docker": "docker"}
_OWNER_KINDS = {
    "ReplicaSet": "k8s.replicaset.name",
    "StatefulSet": "k8s.statefulset.name",
    "DaemonSet": "k8s.daemonset.name",
    "Job": "k8s.job.name",
}


@dataclass(frozen=True)
class PodInfo:
    """What enrichment needs from one pod object."""

    uid: str
    attributes: Attributes  # k8s.pod.name, k8s.namespace.name, owner, labels ...
    ips: tuple[str, ...] = ()
    containers: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, runtime)


def owner_attributes(metadata: dict) -> Attributes:
    """Controller names: ReplicaSet -> Deployment, Job -> CronJob, as k8sattributes derives them."""
    attributes: Attributes = {}
    for ref in metadata.get("ownerReferences") or []:
        if not ref.get("controller") or ref.get("kind") not in _OWNER_KINDS:
            continue
        name = ref.get("name", "")
        attributes[_OWNER_KINDS[ref["kind"]]] = name
        if ref["kind"] == "ReplicaSet":
            template_hash = (metadata.get("labels") or {}).get("pod-template-hash", "")
            if template_hash and name.endswith("-" + template_hash):
                attributes["k8s.deployment.name"] = name[: -len(template_hash) - 1]
        elif ref["kind"] == "Job":
            match = _CRONJOB_JOB.match(name)
            if match:
                attributes["k8s.cronjob.name"] = match.group(1)
    return attributes


def _selected(values: dict | None, keys: Iterable[str], prefix: str) -> Attributes:
    values = values or {}
    wanted = values.keys() if "*" in keys else [k for k in keys if k in values]
    return {f"{prefix}{key}": values[key] for key in wanted}


def _containers(status: dict) -> dict[str, tuple[str, str]]:
    """container id -> (container name, runtime) from the pod status."""
    found = {}
    for kind in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(kind) or []:
            scheme, _, container_id = (entry.get("containerID") or "").partition("://")
            if container_id:
                found[container_id] = (entry.get("name", ""), _RUNTIME_PREFIXES.get(scheme, ""))
    return found


def pod_info(raw: dict, labels: Iterable[str] = (), annotations: Iterable[str] = ()) -> PodInfo:
    """A PodInfo from a pod object as the API returns it (JSON dict)."""
    metadata, spec, status = raw.get("metadata", {}), raw.get("spec", {}), raw.get("status", {})
    attributes: Attributes = {
        "k8s.pod.name": metadata.get("name", ""),
        "k8s.namespace.name": metadata.get("namespace", ""),
    }
    if spec.get("nodeName"):
        attributes["k8s.node.name"] = spec["nodeName"]
    attributes.update(owner_attributes(metadata))
    attributes.update(_selected(metadata.get("labels"), labels, "k8s.pod.label."))
    attributes.update(_selected(metadata.get("annotations"), annotations, "k8s.pod.annotation."))
    # host-network pods share the node's IP: that IP names no single pod
    ips = () if spec.get("hostNetwork") else tuple(
        entry["ip"] for entry in status.get("podIPs") or [] if entry.get("ip"))
    return PodInfo(metadata.get("uid", ""), attributes, ips, _containers(status))


class PodStore:
    """Pods of this node by uid and by IP; safe to read while the watcher writes."""

    def __init__(self, labels: Iterable[str] = (), annotations: Iterable[str] = ()) -> None:
        self.labels, self.annotations = tuple(labels), tuple(annotations)
        self._lock = threading.Lock()
        self._pods: dict[str, PodInfo] = {}
        self._by_ip: dict[str, PodInfo] = {}
        self.synced = threading.Event()
        self.version = 0  # changes with every change of what by_ip may answer

    def replace(self, raws: Iterable[dict]) -> None:
        """Replace everything with a fresh list (after list or relist)."""
        pods = [pod_info(raw, self.labels, self.annotations) for raw in raws]
        with self._lock:
            self._pods = {pod.uid: pod for pod in pods}
            self._reindex()
        self.synced.set()

    def apply(self, event_type: str, raw: dict) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED)."""
        pod = pod_info(raw, self.labels, self.annotations)
        with self._lock:
            if event_type == "DELETED":
                self._pods.pop(pod.uid, None)
            else:
                self._pods[pod.uid] = pod
            self._reindex()

    def _reindex(self) -> None:
        self._by_ip = {ip: pod for pod in self._pods.values() for ip in pod.ips}
        self.version += 1

    def pod(self, uid: str) -> PodInfo | None:
        with self._lock:
            return self._pods.get(uid)

    def by_ip(self, ip: str) -> PodInfo | None:
        with self._lock:
            return self._by_ip.get(ip)

    def pod_attributes(self, info: ContainerInfo) -> Attributes:
        """Pod (and container) attributes for a container found in a cgroup."""
        pod = self.pod(info.pod_uid) if info.pod_uid else None
        if pod is None:
            return {}
        attributes = dict(pod.attributes)
        name, runtime = pod.containers.get(info.container_id, ("", ""))
        if name:
            attributes["k8s.container.name"] = name
        if runtime and not info.runtime:
            attributes["container.runtime"] = runtime  # cgroupfs paths do not name it
        return attributes


class PodWatcher:
    """Keeps a PodStore in step with the API server: list, watch, relist on 410 Gone."""

    def __init__(self, api, store: PodStore, node_name: str, watch_timeout_s: int = 300,
                 max_backoff_s: float = 30.0) -> None:
        self._api = api  # a kubernetes.client.CoreV1Api
        self._store = store
        self._selector = f"spec.nodeName={node_name}" if node_name else None
        self._watch_timeout_s = watch_timeout_s
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._watch = None
        self._thread = threading.Thread(target=self._run, name="pod-watcher", daemon=True)
        self.lists = 0

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._watch_from(self._list())
                backoff = 0.5
            except Exception as err:  # noqa: BLE001 - any failure: back off, then relist
                if _is_gone(err):
                    log.info("pod watch expired (410 Gone); relisting")
                    continue
                log.warning("kubernetes pod watch failed, retrying in %.1fs: %s", backoff, err)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    def _list(self) -> str:
        """List this node's pods into the store; returns the list's resourceVersion."""
        response = self._api.list_pod_for_all_namespaces(
            field_selector=self._selector, _preload_content=False, _request_timeout=30)
        body = json.loads(response.data)
        self._store.replace(body.get("items") or [])
        self.lists += 1
        return body.get("metadata", {}).get("resourceVersion", "")

    def _watch_from(self, resource_version: str) -> None:
        """Watch until stopped; a closed stream resumes from the last version seen."""
        from kubernetes import watch

        while not self._stop.is_set():
            self._watch = watch.Watch()
            for event in self._watch.stream(
                    self._api.list_pod_for_all_namespaces, field_selector=self._selector,
                    resource_version=resource_version, timeout_seconds=self._watch_timeout_s,
                    allow_watch_bookmarks=True,
                    # a dead connection (no FIN, no RST) must not hang the watch forever:
                    # the server ends a healthy one after timeout_seconds anyway
                    _request_timeout=self._watch_timeout_s + 30):
                # raw_object is the JSON dict; with timeout_seconds set the client does not
                # retry a 410 itself but raises it, and _run relists
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._store.apply(event["type"], event["raw_object"])
                if self._stop.is_set():
                    return
            resource_version = self._watch.resource_version or resource_version


def _is_gone(err: Exception) -> bool:
    return getattr(err, "status", None) == 410


def core_api(kubeconfig: str = ""):
    """A CoreV1Api from a kubeconfig file, else from the in-cluster service account."""
    from kubernetes import client, config

    if kubeconfig:
        return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.CoreV1Api(client.ApiClient(configuration))


def start_pod_metadata(api, node_name: str, labels: Iterable[str] = (),
                       annotations: Iterable[str] = (), sync_timeout_s: float = 5.0
                       ) -> tuple[PodStore, PodWatcher]:
    """Start watching; wait at most `sync_timeout_s` for the first list."""
    store = PodStore(labels, annotations)
    watcher = PodWatcher(api, store, node_name)
    watcher.start()
    started = time.monotonic()
    if not store.synced.wait(sync_timeout_s):
        log.warning("kubernetes pod list not ready after %.1fs; continuing without it for now",
                    time.monotonic() - started)
    return store, watcher
