"""The `enrich:` section of the agent's YAML, as an EnrichConfig.

Keys (all optional; docs/resources.md describes them):

    enrich:
      containers: true
      peers: true
      process: {pid: false, command: false}
      cloud: {detectors: [eks, ec2, gcp, azure], timeout: 2s}
      kubernetes: {enabled: false, node_name: "", kubeconfig: "", labels: [], annotations: [],
                   sync_timeout: 5s}

Errors are `ConfigError`s whose text is one line naming the key, like the rest of config.
"""

from __future__ import annotations

from typing import Any

from otel_netreceiver.config import ConfigError, boolean, duration, mapping, string
from otel_netreceiver.enrich import EnrichConfig, KubernetesConfig
from otel_netreceiver.enrich.cloud import DETECTORS


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list")
    return tuple(string(item, f"{where}[{i}]") for i, item in enumerate(value))


def _detectors(value: Any, where: str) -> tuple[str, ...]:
    names = _strings(value, where)
    for name in names:
        if name not in DETECTORS:
            raise ConfigError(f"{where}: unknown detector {name!r} (known: {', '.join(sorted(DETECTORS))})")
    return names


def enrich_config(value: Any, where: str = "enrich") -> EnrichConfig:
    """An EnrichConfig from the parsed (env-expanded) `enrich:` mapping; None gives defaults."""
    top = mapping(value, where, {"containers", "peers", "process", "cloud", "kubernetes"})
    process = mapping(top.get("process"), f"{where}.process", {"pid", "command"})
    cloud = mapping(top.get("cloud"), f"{where}.cloud", {"detectors", "timeout"})
    defaults = EnrichConfig()
    return EnrichConfig(
        containers=boolean(top.get("containers", True), f"{where}.containers"),
        peers=boolean(top.get("peers", True), f"{where}.peers"),
        process_pid=boolean(process.get("pid", False), f"{where}.process.pid"),
        process_command=boolean(process.get("command", False), f"{where}.process.command"),
        cloud_detectors=_detectors(cloud["detectors"], f"{where}.cloud.detectors")
        if "detectors" in cloud else defaults.cloud_detectors,
        cloud_timeout_s=duration(cloud["timeout"], f"{where}.cloud.timeout")
        if "timeout" in cloud else defaults.cloud_timeout_s,
        kubernetes=_kubernetes(top.get("kubernetes"), f"{where}.kubernetes"),
    )


def _kubernetes(value: Any, where: str) -> KubernetesConfig:
    keys = {"enabled", "node_name", "kubeconfig", "labels", "annotations", "sync_timeout"}
    section = mapping(value, where, keys)
    return KubernetesConfig(
        enabled=boolean(section.get("enabled", False), f"{where}.enabled"),
        node_name=string(section.get("node_name", ""), f"{where}.node_name"),
        kubeconfig=string(section.get("kubeconfig", ""), f"{where}.kubeconfig"),
        labels=_strings(section.get("labels"), f"{where}.labels"),
        annotations=_strings(section.get("annotations"), f"{where}.annotations"),
        sync_timeout_s=duration(section["sync_timeout"], f"{where}.sync_timeout")
        if "sync_timeout" in section else KubernetesConfig().sync_timeout_s,
    )
