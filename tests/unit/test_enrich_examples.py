"""examples/: the Collector k8sattributes alternative, the DaemonSet, the systemd unit.

No Collector binary runs here, so the Collector configuration is checked for what makes
it work with this agent: every pipeline component is defined, and pod association uses
attributes the agent really puts on container resources (computed by the real resolver
from real cgroup paths) with the container-level metadata k8sattributes requires for it.
Agent configurations embedded in the examples are parsed by the agent's own loader.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from otel_netreceiver.config import ConfigError, load
from otel_netreceiver.enrich.cgroups import CgroupPaths
from otel_netreceiver.enrich.containers import ContainerResolver
from otel_netreceiver.enrich.kubernetes import owner_attributes, pod_info
from otel_netreceiver.enrich.settings import enrich_config
from otel_netreceiver.flows.model import Workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CID = "c1" * 32
UID = "5b0c8d6e-1f2a-4b3c-8d9e-0a1b2c3d4e5f"


def _collector() -> dict:
    return yaml.safe_load((EXAMPLES / "collector-k8sattributes.yaml").read_text())


def _agent_resource_keys() -> set[str]:
    """What the agent, with its own Kubernetes watch off, puts on a pod container's resource."""
    path = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope")
    resolver = ContainerResolver(CgroupPaths(lambda: [(5, path)]), lambda pid, name: "")
    return set(resolver.resource(Workload(5, 1, "app")))


def test_collector_pipeline_components_are_defined():
    config = _collector()
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline[kind]:
                assert name in config[kind], f"{kind}: {name} is not defined"
    processors = config["service"]["pipelines"]["metrics"]["processors"]
    assert processors.index("k8sattributes") < processors.index("batch")


def test_collector_associates_on_attributes_the_agent_emits():
    k8s = _collector()["processors"]["k8sattributes"]
    sources = [s for rule in k8s["pod_association"] for s in rule["sources"]]
    assert all(s["from"] == "resource_attribute" for s in sources)
    assert {s["name"] for s in sources} <= _agent_resource_keys()
    assert sources[0]["name"] == "container.id"
    metadata = set(k8s["extract"]["metadata"])
    # k8sattributes associates on container.id only with a container attribute extracted
    assert metadata & {"k8s.container.name", "container.image.name", "container.id"}


def test_collector_adds_the_names_the_agent_would_add_itself():
    """Either way, the same attribute names reach the backend."""
    raw = yaml.safe_load((FIXTURES / "k8s" / "pods_list.json").read_text())["items"][0]
    ours = set(pod_info(raw).attributes) | set(owner_attributes(raw["metadata"]))
    ours |= {"k8s.container.name", "k8s.pod.uid"}
    theirs = set(_collector()["processors"]["k8sattributes"]["extract"]["metadata"])
    assert ours <= theirs


def _load_agent_config(text: str, tmp_path: Path, environ: dict):
    """The agent's loader on a config; `enrich:` through enrich_config if the loader lacks it."""
    document = yaml.safe_load(text)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    try:
        config = load(path, environ)
    except ConfigError as err:
        if "enrich" not in str(err):
            raise
        path.write_text(yaml.safe_dump({k: v for k, v in document.items() if k != "enrich"}))
        config = load(path, environ)
    expanded = {k: v.replace("${env:K8S_NODE_NAME}", environ["K8S_NODE_NAME"])
                if isinstance(v, str) else v
                for k, v in (document["enrich"].get("kubernetes") or {}).items()}
    return config, enrich_config({**document["enrich"], "kubernetes": expanded})


ENV = {"K8S_NODE_NAME": "node-7", "OTLP_ENDPOINT": "collector:4317"}


def test_agent_config_for_the_collector_alternative(tmp_path):
    text = (EXAMPLES / "netreceiver-to-collector.yaml").read_text()
    config, enrich = _load_agent_config(text, tmp_path, ENV)
    assert not enrich.kubernetes.enabled and enrich.containers
    assert config.exporters


def _daemonset_documents() -> dict[str, dict]:
    docs = yaml.safe_load_all((EXAMPLES / "daemonset.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def test_daemonset_config_map_is_a_valid_agent_config(tmp_path):
    text = _daemonset_documents()["ConfigMap"]["data"]["config.yaml"]
    _, enrich = _load_agent_config(text, tmp_path, ENV)
    assert enrich.kubernetes.enabled and enrich.kubernetes.node_name == "node-7"


def test_daemonset_gives_what_the_agent_needs():
    docs = _daemonset_documents()
    rules = docs["ClusterRole"]["rules"]
    assert any("pods" in r["resources"] and {"get", "list", "watch"} <= set(r["verbs"]) for r in rules)
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] and pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/sys/fs/cgroup", "/etc/otel-netreceiver"} <= mounts
    assert container["args"][:2] == ["run", "--config"]
    assert container["args"][2].startswith("/etc/otel-netreceiver/")


def test_systemd_unit_runs_the_cli():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((EXAMPLES / "otel-netreceiver.service").read_text())
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[0].endswith("/otel-netreceiver") and argv[1:3] == ["run", "--config"]
    from otel_netreceiver.cli import main
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
